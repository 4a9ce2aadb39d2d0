"""The data: the image table (a Hugging Face Dataset), its checks, the artist-grouped split, the pair
tables and the test-leak guard.

A data_dir is a folder in the imagefolder layout (metadata.csv or metadata.jsonl with file_name, tier,
artist and optionally image_id, beside the images) or a dataset with image, tier and artist columns (a
save_to_disk folder, a parquet file, a hub id): pipeline/sources.py reads each. Every source then goes
through the same checks here, and gives the same table: image_id, file_name, tier (a class label, S to
C), artist, path, row, sha256 and split (a class label: train, val, test).
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import bar
from pipeline.comparisons import checked_comparisons, comparisons_path, file_digest, no_comparisons
from pipeline.images import check_images
from pipeline.provenance import data_origin, dataset_info, load_dataset_artifact
from pipeline.rows import bad_rows, missing_files_cause, source_rows
from pipeline.runs import PAIRS, manifest_digest
from pipeline.sources import DataError, Rows, check_source
from pipeline.tables import SPLITS, TIERS, artist_folds, cross_tier_pairs, frame, to_dataset

# The only folder the demo's data set is generated into: a mistyped --data_dir is an error, not a new data set.
DEMO_DATA_DIR = Path(__file__).resolve().parent / "data" / "demo"


# ---------------------------------------------------------------- the rows of any source

def read_metadata(data_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The checked rows of a source without opening the images (row, image_id, file_name, tier, artist, path).

    Raises DataError listing every bad row.
    """
    source, df, problems, _ = source_rows(str(data_dir), cache_dir=cache_dir)
    bad_rows(problems, source=source.source, skip_bad_images=False)
    return df.reset_index(drop=True)


def scan_images(df: pd.DataFrame, *, source: Rows, problems: list[tuple[int, str]], skip_bad_images: bool,
                track=None, cache_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Hash and decode-check every image (verdicts reused from cache_dir while a file is unchanged).

    Bad rows (unreadable, truncated, a decompression bomb, the same content as another row, or one of
    `problems` found before) raise one DataError listing them all, or with skip_bad_images are dropped and
    returned as messages. Returns the rows with a sha256 column, and the messages.
    """
    results = check_images(list(df["path"]), cache_dir=cache_dir, track=track)
    df = df.assign(sha256=[digest for digest, _ in results])
    errors = pd.Series([error for _, error in results], index=df.index, dtype=object)
    problems = list(problems)
    for r, error in zip(df[errors.notna()].itertuples(), errors[errors.notna()]):
        problems.append((r.row, f"row {r.row} ({r.file_name}): {error}" if r.file_name else f"row {r.row}: {error}"))
    good = df[errors.isna() & (df["sha256"] != "")]
    first = good.drop_duplicates("sha256").set_index("sha256")
    for r in good[good.duplicated("sha256")].itertuples():
        original = first.loc[r.sha256]
        if not source.names_are_files or original.file_name != r.file_name:  # a name twice: "listed twice"
            problems.append((r.row, f"row {r.row} ({r.file_name}): same image content as row {original.row} "
                                    f"({original.file_name})"))
    missing = list(df.loc[errors == "file not found", "file_name"])
    cause = missing_files_cause(missing, Path(source.source).parent) if source.names_are_files else None
    messages = bad_rows(problems, source=source.source, skip_bad_images=skip_bad_images, cause=cause)
    return df[~df["row"].isin({row for row, _ in problems})].reset_index(drop=True), messages


# ---------------------------------------------------------------- the split

def split_by_artist(df: pd.DataFrame, *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                    seed: int = 42) -> pd.Series:
    """Assign train/val/test: stratified by tier, grouped by artist (no artist in two splits).

    Ten artist folds of about equal tier mix (tables.artist_folds), so fractions are whole tenths; the folds
    follow the table's content, not its row order.
    """
    folds = {name: round(f * 10) for name, f in (("val", val_fraction), ("test", test_fraction))}
    for name, fraction in (("val", val_fraction), ("test", test_fraction)):
        if folds[name] < 1 or abs(folds[name] - fraction * 10) > 1e-6:
            raise DataError(f"{name}_fraction must be a whole tenth (0.1, 0.2, ...), got {fraction}")
    if folds["val"] + folds["test"] >= 10:
        raise DataError("val_fraction + test_fraction leave nothing to train on")
    artists = df["artist"].nunique()
    if artists < 10:
        raise DataError(f"need works by at least 10 artists to split by artist into tenths, found {artists}")
    per_tier = df.groupby("tier")["artist"].agg(["size", "nunique"]).reindex([t for t in TIERS if t in set(df.tier)])
    counts = ", ".join(f"{t}: {n} works by {a} artist(s)" for t, (n, a) in per_tier.iterrows())
    if len(per_tier) < 2:
        raise DataError(f"need at least two tiers to make pairs, found only {counts}")
    small = list(per_tier.index[per_tier["nunique"] < len(SPLITS)])
    if small:
        raise DataError(f"tier(s) {', '.join(small)} too small to split by artist: each tier needs works by at least "
                        f"3 artists so that train, val and test can all hold it ({counts})")
    try:
        fold_of = artist_folds(df, folds=10, seed=seed)
    except ValueError as err:  # scikit-learn's own refusals, in its words, with our counts
        raise DataError(f"cannot split by artist into tenths: {err} ({counts})") from None
    split = pd.Series(folds_to_splits(fold_of, df["tier"].to_numpy(), folds["test"], folds["val"]),
                      index=df.index, name="split")
    for name in SPLITS:
        present = df.loc[split == name, "tier"].unique()
        if len(present) < 2:
            raise DataError(f"split {name!r} holds tier(s) {sorted(present)} only, so it has no cross-tier pairs: "
                            f"too few artists to split by artist ({counts})")
    return split


def folds_to_splits(fold_of: np.ndarray, tiers: np.ndarray, test_folds: int, val_folds: int) -> np.ndarray:
    """Name the folds test, val and train so that as many tiers as possible reach every split.

    A rare tier lands in only a few folds; which folds become test and val decides whether it is
    evaluated at all. The first best choice is kept, so fold 0 is test and fold 1 val when that works.
    """
    tiers_in = [set(tiers[fold_of == fold]) for fold in range(10)]
    best, best_cover = None, -1
    for t in range(10):
        for v in range(10):
            test = {(t + i) % 10 for i in range(test_folds)}
            val = {(v + i) % 10 for i in range(val_folds)}
            if test & val:
                continue
            groups = (test, val, set(range(10)) - test - val)
            cover = sum(len(set().union(*(tiers_in[f] for f in group))) for group in groups)
            if cover > best_cover:
                best, best_cover = (test, val), cover
    test, val = best
    return np.where(np.isin(fold_of, list(test)), "test", np.where(np.isin(fold_of, list(val)), "val", "train"))


# ---------------------------------------------------------------- the table every script starts from

def image_table(data_dir: str | os.PathLike, *, val_fraction: float, test_fraction: float, seed: int,
                skip_bad_images: bool = False, track=None, cache_dir: str | os.PathLike | None = None):
    """Rows + checks + image checks + split: the image table, as a Dataset (IMAGE_COLUMNS of tables.py).

    With cache_dir, image checks are remembered there, so a second start is cheap (and a dataset's stored
    images are written there). Every bad row, in the metadata or
    in the images, is listed in one DataError (or dropped with skip_bad_images). Also returns the notes to
    show: artist spellings merged, rows skipped.
    """
    source, rows, problems, notes = source_rows(str(data_dir), cache_dir=cache_dir)
    df, skipped = scan_images(rows, source=source, problems=problems, skip_bad_images=skip_bad_images, track=track,
                              cache_dir=cache_dir)
    df["image_id"] = df["image_id"].where(df["image_id"] != "", df["sha256"])  # a dataset row with no name
    notes += [f"skipped {message}" for message in skipped]
    try:
        df["split"] = split_by_artist(df, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    except DataError as err:
        dropped = f" (after skipping {len(skipped)} bad row(s): {'; '.join(skipped)})" if skipped else ""
        raise DataError(f"{source.source}: {err}{dropped}") from None
    return to_dataset(df), notes


def check_data_dir(cfg, accelerator) -> None:
    """A cheap first check that DATA_DIR is a data source; the demo data set is generated first when asked for
    and missing."""
    if cfg.demo_data and not Path(cfg.data_dir).exists():
        if Path(cfg.data_dir).resolve() != DEMO_DATA_DIR:
            raise DataError(f"{cfg.data_dir}: not found (demo data is generated only into {DEMO_DATA_DIR})")
        from pipeline.demo_data import generate_demo_dataset

        if accelerator.is_main_process:
            generate_demo_dataset(cfg.data_dir, seed=cfg.seed)
        accelerator.wait_for_everyone()
    check_source(cfg.data_dir)


def load_images(cfg, accelerator):
    """The checked, split image table of the config's data (see check_data_dir for the demo data set)."""
    check_data_dir(cfg, accelerator)
    table, notes = image_table(cfg.data_dir, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                               seed=cfg.seed, skip_bad_images=cfg.skip_bad_images,
                               track=bar(accelerator, "checking images"), cache_dir=cfg.cache_dir)
    for message in notes + few_artist_warnings(table):
        accelerator.print(f"warning: {message}")
    return table


def load_comparisons(cfg, accelerator, table) -> pd.DataFrame:
    """The checked comparisons of the config's data (comparison_table), their notes shown as warnings."""
    comparisons, notes = comparison_table(cfg.data_dir, table, skip_bad_images=cfg.skip_bad_images)
    for message in notes:
        accelerator.print(f"warning: {message}")
    return comparisons


def comparisons_digest(data_dir) -> str:
    """What a run's comparisons are made from: the comparisons file's bytes ("" when there is none)."""
    return file_digest(comparisons_path(str(data_dir)))


FEW_ARTISTS = 5


def few_artist_warnings(table) -> list[str]:
    """The held-out splits whose works come from fewer than FEW_ARTISTS artists: their accuracy then says how
    those few artists' works rank, and one artist more or less moves it by tenths."""
    warnings = []
    for name in ("val", "test"):
        artists = len(set(split_rows(table, name)["artist"]))
        if artists < FEW_ARTISTS:
            warnings.append(f"the {name} split holds the works of {artists} artist(s), fewer than {FEW_ARTISTS}: its "
                            "accuracy measures those few artists, not drawing in general; add artists, or raise "
                            f"{name}_fraction")
    return warnings


def tiers_of(rows) -> np.ndarray:
    """The tier letters of the image table's rows, in order."""
    return np.asarray(rows.features["tier"].names, dtype=object)[np.asarray(rows["tier"], dtype=np.int64)]


def split_rows(table, *names: str):
    """The rows of the given splits, in table order."""
    wanted = [SPLITS.index(name) for name in names]
    return table.select(np.flatnonzero(np.isin(np.asarray(table["split"]), wanted)))


# ---------------------------------------------------------------- pairs and the leak guard

def pair_table(table):
    """Every cross-tier pair of each split (spec 4.4.2), as a Dataset: image_a, image_b, label (1 when
    image_a's tier is higher, else -1) and split. Its info records the data manifest of `table` (read_pairs)."""
    from datasets import ClassLabel, Dataset, Features, Value

    parts = []
    for split in SPLITS:
        rows = split_rows(table, split)
        a, b, label = cross_tier_pairs(tiers_of(rows))
        ids = np.asarray(rows["image_id"], dtype=object)
        parts.append(pd.DataFrame({"image_a": ids[a], "image_b": ids[b], "label": label, "split": split}))
    features = Features(image_a=Value("string"), image_b=Value("string"), label=Value("int8"),
                        split=ClassLabel(names=list(SPLITS)))
    origin = dict(manifest_sha256=manifest_digest(frame(table)))
    return Dataset.from_pandas(pd.concat(parts, ignore_index=True), features=features, preserve_index=False,
                               info=dataset_info(origin, features=features))


def comparison_table(data_dir: str | os.PathLike, table, *, skip_bad_images: bool) -> tuple[pd.DataFrame, list[str]]:
    """The checked comparisons of DATA_DIR/comparisons.csv against the image table (pipeline/comparisons.py; no
    rows when there is no such file): every bad row in one DataError, or dropped with skip_bad_images. Also
    returns the notes to show."""
    path = comparisons_path(str(data_dir))
    if path is None:
        return no_comparisons(), []
    comparisons, problems = checked_comparisons(path, frame(table))
    return comparisons, [f"skipped {m}" for m in bad_rows(problems, source=str(path), skip_bad_images=skip_bad_images)]


def comparisons_dataset(comparisons: pd.DataFrame, table, data_dir):
    """The comparisons as a Dataset (image_a, image_b, winner, rater, split: a split name or "crossing") whose
    info records the rows and the comparisons file it was made from (read_comparisons)."""
    from datasets import Dataset

    origin = dict(manifest_sha256=manifest_digest(frame(table)),
                  comparisons_sha256=comparisons_digest(data_dir))
    columns = comparisons[["image_a", "image_b", "winner", "rater", "split"]].astype(str)
    dataset = Dataset.from_pandas(columns, preserve_index=False)
    return Dataset.from_pandas(columns, preserve_index=False, features=dataset.features,
                               info=dataset_info(origin, features=dataset.features))


def read_comparisons(output_dir: str | os.PathLike):
    """OUTPUT_DIR/comparisons, refused unless made from the rows and the comparisons file the run records."""
    from pipeline.runs import COMPARISONS, read_record

    expected = data_origin(output_dir) | dict(comparisons_sha256=read_record(output_dir)["data"]
                                              .get("comparisons_sha256", ""))
    return load_dataset_artifact(Path(output_dir) / COMPARISONS, what="comparison table", expected=expected)


def read_pairs(output_dir: str | os.PathLike):
    """OUTPUT_DIR/pairs, refused unless it was made from the rows and split the run folder records."""
    return load_dataset_artifact(Path(output_dir) / PAIRS, what="pair table", expected=data_origin(output_dir))


def check_no_test_leak(rows, table, comparisons: pd.DataFrame | None = None) -> None:
    """Raise if `rows`, about to reach training or validation, touch the test split.

    Checks the rows (by split and by image_id), the artists and the image contents: a copy of a test image
    under another name is still a test image. Both are Datasets of the image table (`table` the whole of it).
    The images of `comparisons` (rows of comparison_table about to be used with them) are checked as rows too:
    a comparison with a test image, or with a copy of one, is a test leak.
    """
    for name, dataset, needed in (("rows", rows, {"image_id", "artist", "sha256"}),
                                  ("table", table, {"image_id", "artist", "sha256", "split"})):
        if needed - set(dataset.column_names):
            raise ValueError(f"test-leak guard: {name} lacks {sorted(needed - set(dataset.column_names))}: "
                             "pass rows of the image table")
    rows, test = frame(rows), frame(split_rows(table, "test"))
    leaks = []
    if comparisons is not None and len(comparisons):
        whole, named = frame(table), set(comparisons["image_a"]) | set(comparisons["image_b"])
        rows = pd.concat([rows, whole[whole["image_id"].isin(named)]], ignore_index=True)
    inside = rows["image_id"].isin(set(test["image_id"]))
    if "split" in rows:
        inside |= rows["split"] == "test"
    if inside.any():
        leaks.append(f"{int(inside.sum())} test row(s) {list(rows.loc[inside, 'image_id'][:5])}")
    shared = set(rows["artist"]) & set(test["artist"])
    if shared:
        leaks.append(f"artist(s) also in test {sorted(shared)[:5]}")
    copies = rows["sha256"].isin(set(test["sha256"])) & ~inside
    if copies.any():
        leaks.append(f"image(s) identical to a test image {list(rows.loc[copies, 'image_id'][:5])}")
    if leaks:
        raise DataError("test data would reach training or validation: " + "; ".join(leaks))


# ---------------------------------------------------------------- the rows cross-validation and the review use

def train_val_features(cfg, feature_kinds: list[str], accelerator, *, run_dir=None) -> tuple:
    """The train+val rows, the whole table, their features per feature kind (test rows are never extracted), what
    the features depend on, and the train+val comparisons. With run_dir, the data must be that run's first.

    Returns (rows, table, {feature: tensor}, source, comparisons).
    """
    from dataclasses import replace

    from model import features_of, load_backbone
    from pipeline.runs import check_same_data

    table, judged = load_images(cfg, accelerator), comparisons_digest(cfg.data_dir)
    if run_dir is not None:
        # The rows, split and comparisons the run was trained on, or a refusal before any work: judgements added
        # since are a new run's.
        check_same_data(run_dir, table, comparisons_sha256=judged)
    rows = split_rows(table, "train", "val")  # the test split goes no further
    comparisons = load_comparisons(cfg, accelerator, table)
    comparisons = comparisons[comparisons["split"].isin(["train", "val"])]  # crossing and test ones go no further
    check_no_test_leak(rows, table, comparisons)
    backbone = load_backbone(cfg, accelerator)
    features = {feature: features_of(replace(cfg, feature=feature), [rows], accelerator, backbone=backbone)[0]
                for feature in feature_kinds}
    source = dict(backbone=backbone.id, image_size=cfg.image_size, device=accelerator.device.type,
                  mixed_precision=accelerator.mixed_precision, data=manifest_digest(frame(rows)),
                  comparisons=judged)
    return rows, table, features, source, comparisons
