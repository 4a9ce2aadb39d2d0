"""Teachers' direct judgements: comparisons.csv (image_a,image_b,winner,rater), checked, split, and made into
the index pairs training and evaluation use.

A comparison names two images of the image table (by file_name or image_id) and which is better: `a`, `b`
or `tie`; `rater` is optional (an empty rater is one rater, "(none)"). A comparison belongs to the split of
its two images; one whose images lie in two splits ("crossing") is used by no split.
"""

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

from .sources import DataError, column_name, folder_file

COMPARISONS_CSV = "comparisons.csv"
COMPARISON_COLUMNS = ("image_a", "image_b", "winner", "rater")
WINNERS = ("a", "b", "tie")
NO_RATER = "(none)"
CROSSING = "crossing"
# The outcome of a comparison for image_a: 1 it won, -1 it lost, 0 a tie.
OUTCOME = {"a": 1, "b": -1, "tie": 0}


def comparisons_path(data_dir: str) -> Path | None:
    """DATA_DIR/comparisons.csv when the data folder holds one (see sources.folder_file)."""
    return folder_file(data_dir, COMPARISONS_CSV, "comparisons")


def file_digest(path: Path | None) -> str:
    """sha256 of the comparisons file's bytes ("" when there is none): part of the data a run is made from."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else ""


def read_comparison_rows(path: Path) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """The rows of comparisons.csv as (line, {column: value}), and the rows that cannot be read as problems.
    Header cells are matched as metadata.csv's are (case, spaces, '-' and '_' alike)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [column_name(cell, COMPARISON_COLUMNS) for cell in next(reader, [])]
        missing = [c for c in ("image_a", "image_b", "winner") if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {header}")
        rows, problems, line = [], [], reader.line_num
        for fields in reader:
            start, line = line + 1, reader.line_num
            if not any(field.strip() for field in fields):
                continue
            if len(fields) != len(header):
                problems.append((start, f"line {start}: {len(fields)} fields but the header has {len(header)}"))
                continue
            rows.append((start, {c: v.strip() for c, v in zip(header, fields)}))
    except csv.Error as err:
        raise DataError(f"{path}: line {line + 1}: cannot parse: {err}") from None
    return rows, problems


def checked_comparisons(path: Path, images: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """The comparisons of `path` against the image table `images` (image_id, file_name, split), and every bad
    row as (line, message): an unknown image, an image compared with itself, a winner other than a|b|tie, or
    a second judgement of the same pair by the same rater that says otherwise.

    Returns rows of line, image_a, image_b (image_ids), winner, rater, split (the split of both images, or
    "crossing").
    """
    rows, problems = read_comparison_rows(path)
    by_name = dict(zip(images["file_name"], images["image_id"])) | dict(zip(images["image_id"], images["image_id"]))
    by_name.pop("", None)
    split_of = dict(zip(images["image_id"], images["split"]))
    good, verdicts = [], {}
    for line, row in rows:
        found = [by_name.get(row[side]) for side in ("image_a", "image_b")]
        bad = [f"unknown image {row[side]!r} (not a file_name or image_id of the image table)"
               for side, image in zip(("image_a", "image_b"), found) if image is None]
        winner, rater = row["winner"].lower(), row.get("rater", "") or NO_RATER
        if winner not in WINNERS:
            bad.append(f"winner {row['winner']!r}, expected one of {', '.join(WINNERS)}")
        if not bad and found[0] == found[1]:
            bad.append(f"an image compared with itself ({row['image_a']!r})")
        if bad:
            problems.append((line, f"line {line}: " + "; ".join(bad)))
            continue
        # The same pair in either order: "a" of (x, y) is "b" of (y, x).
        verdict = {"a": "b", "b": "a"}.get(winner, winner) if found[0] > found[1] else winner
        verdicts.setdefault((rater, *sorted(found)), []).append((line, verdict))
        split_a, split_b = split_of[found[0]], split_of[found[1]]
        good.append((line, found[0], found[1], winner, rater, split_a if split_a == split_b else CROSSING))
    # A rater who judged one pair both ways: every such row is named, and none of them is used.
    contradicted = set()
    for (rater, _, _), judged in verdicts.items():
        if len({verdict for _, verdict in judged}) > 1:
            lines = [line for line, _ in judged]
            contradicted |= set(lines)
            problems += [(line, f"line {line}: rater {rater!r} judged this pair otherwise at line(s) "
                                f"{', '.join(str(other) for other in lines if other != line)}") for line in lines]
    table = no_comparisons(good)
    return table[~table["line"].isin(contradicted)].reset_index(drop=True), problems


def no_comparisons(rows=()) -> pd.DataFrame:
    """A comparison table (of `rows`, none by default): line, image_a, image_b, winner, rater, split."""
    return pd.DataFrame(list(rows), columns=["line", "image_a", "image_b", "winner", "rater", "split"])


def split_counts(comparisons: pd.DataFrame, tiers: dict) -> pd.DataFrame:
    """Per split (and crossing): comparisons across tiers, within one tier, ties and raters."""
    same = np.array([tiers[a] == tiers[b] for a, b in zip(comparisons["image_a"], comparisons["image_b"])], bool)
    frame = comparisons.assign(within=same & (comparisons["winner"] != "tie"),
                               across=~same & (comparisons["winner"] != "tie"), tie=comparisons["winner"] == "tie")
    counts = frame.groupby("split").agg(across_tiers=("across", "sum"), within_tier=("within", "sum"),
                                        ties=("tie", "sum"), raters=("rater", "nunique"))
    return counts.reindex(["train", "val", "test", CROSSING], fill_value=0).astype(int)


def rater_weights(raters: np.ndarray, rule: str) -> np.ndarray:
    """The weight of each comparison, averaging 1: "pooled" every comparison alike; "equal" each rater's
    comparisons together weigh the same (a rater of many judgements does not outvote one of few)."""
    if rule == "pooled" or len(raters) == 0:
        return np.ones(len(raters))
    if rule != "equal":
        raise ValueError(f"unknown rater weighting {rule!r}, expected 'pooled' or 'equal'")
    names, inverse, counts = np.unique(raters, return_inverse=True, return_counts=True)
    return len(raters) / (len(names) * counts[inverse])


def index_pairs(comparisons: pd.DataFrame, image_ids, rule: str) -> dict[str, np.ndarray]:
    """The comparisons whose two images are both among `image_ids`, as positions into it: a, b, the outcome
    for a (1 won, -1 lost, 0 tie) and the weight (rater_weights over those comparisons)."""
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    inside = comparisons["image_a"].isin(position) & comparisons["image_b"].isin(position)
    kept = comparisons[inside]
    return dict(a=kept["image_a"].map(position).to_numpy(np.int64), b=kept["image_b"].map(position).to_numpy(np.int64),
                outcome=kept["winner"].map(OUTCOME).to_numpy(np.float32),
                weight=rater_weights(kept["rater"].to_numpy(object), rule).astype(np.float32),
                rater=kept["rater"].to_numpy(object))


def comparisons_per_step(count: int, steps: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The training comparisons (positions 0 .. count-1) each of an epoch's `steps` steps takes: all of them once
    an epoch, in an order drawn from (seed, epoch) alone, so a resume at any step takes the same ones."""
    return np.array_split(np.random.default_rng([seed, epoch]).permutation(count), steps)
