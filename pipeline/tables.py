"""The vocabulary of the image and pair tables: tiers, splits, the columns and their types, and the pairs
and folds the tiers make.

Teachers grade a work S, A, B or C, best first. A pair is two works of different tiers; same-tier pairs
are left out, since the grades say nothing about their order. The image table is a Hugging Face Dataset
with the tier and the split as class labels; `frame` gives it as a DataFrame with their names.
"""

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

TIERS = ("S", "A", "B", "C")
TIER_RANK = {"S": 3, "A": 2, "B": 1, "C": 0}
TIER_PAIRS = tuple(f"{upper}-{lower}" for i, upper in enumerate(TIERS) for lower in TIERS[i + 1:])  # S-A .. B-C
SPLITS = ("train", "val", "test")
# The image table's columns: what a row is, where its file is, its content hash and its split.
IMAGE_COLUMNS = ("image_id", "file_name", "tier", "artist", "path", "row", "sha256", "split")
# What a run folder records of each row (splits.csv and OUTPUT_DIR/image_table): no path, which is the machine's.
MANIFEST_COLUMNS = ("image_id", "file_name", "tier", "artist", "sha256", "split")


def image_features(columns=IMAGE_COLUMNS):
    """The datasets.Features of the image table (or of some of its columns)."""
    from datasets import ClassLabel, Features, Value

    kinds = dict(image_id=Value("string"), file_name=Value("string"), tier=ClassLabel(names=list(TIERS)),
                 artist=Value("string"), path=Value("string"), row=Value("int64"), sha256=Value("string"),
                 split=ClassLabel(names=list(SPLITS)))
    return Features({name: kinds[name] for name in columns})


def to_dataset(frame: "pd.DataFrame", columns=IMAGE_COLUMNS):
    """A DataFrame of the image table's columns (tiers and splits by name) as the Dataset."""
    from datasets import Dataset

    return Dataset.from_pandas(frame[list(columns)].reset_index(drop=True), features=image_features(columns),
                               preserve_index=False)


def frame(table) -> "pd.DataFrame":
    """A Dataset of the image table as a DataFrame, its class labels (tier, split) by name."""
    result = table.to_pandas()
    for name, feature in table.features.items():
        if hasattr(feature, "names"):
            result[name] = np.asarray(feature.names, dtype=object)[result[name].to_numpy()]
    return result


def tier_ranks(tiers) -> np.ndarray:
    return np.asarray([TIER_RANK[t] for t in tiers], dtype=np.int64)


def cross_tier_pairs(tiers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) of different tiers (spec 4.4.2), vectorised.

    Returns index arrays a, b and label (1 if a's tier is higher, else -1).
    """
    ranks = np.asarray([TIER_RANK[t] for t in tiers], dtype=np.int8)
    n = len(ranks)
    a_parts, b_parts = [], []
    for i0 in range(0, n, 2048):  # row blocks keep the n x n mask small
        i1 = min(n, i0 + 2048)
        rows, cols = np.nonzero((ranks[i0:i1, None] != ranks[None, :])
                                & (np.arange(i0, i1)[:, None] < np.arange(n)[None, :]))
        a_parts.append(rows + i0)
        b_parts.append(cols)
    a = np.concatenate(a_parts) if a_parts else np.zeros(0, dtype=np.int64)
    b = np.concatenate(b_parts) if b_parts else np.zeros(0, dtype=np.int64)
    label = np.where(ranks[a] > ranks[b], 1, -1).astype(np.int8)
    return a, b, label


def artist_folds(rows: "pd.DataFrame", *, folds: int, seed: int) -> np.ndarray:
    """The fold (0 .. folds-1) of each row: grouped by artist (no artist in two folds), stratified by tier.

    scikit-learn's StratifiedGroupKFold on the rows sorted by image_id, so the folds follow the table's content,
    not its row order. Raises scikit-learn's ValueError when the groups cannot be cut that way.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    order = np.argsort(rows["image_id"].to_numpy(), kind="stable")
    ordered = rows.iloc[order]
    fold_of = np.empty(len(rows), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class": the callers' checks say it better
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for fold, (_, held) in enumerate(splitter.split(ordered, ordered["tier"], ordered["artist"])):
            fold_of[order[held]] = fold
    return fold_of
