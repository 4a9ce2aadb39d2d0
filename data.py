"""The data layer: metadata, image checks, artist-grouped splits and pairs.

Input: DATA_DIR/metadata.csv (Hugging Face imagefolder layout) with columns file_name, tier (S/A/B/C),
artist and optionally image_id; images in any format Pillow reads.
"""

import csv
import io
import os
import stat
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold

from images import check_images, load_pixels

TIERS = ("S", "A", "B", "C")
TIER_RANK = {"S": 3, "A": 2, "B": 1, "C": 0}
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad input data; the message lists every bad file and row found."""


# ---------------------------------------------------------------- metadata

def image_path(data_dir: str | os.PathLike, name: str) -> str:
    """The path of a metadata file_name, found also when its Unicode form differs from the disk's."""
    path = os.path.join(data_dir, name)  # os.path, not pathlib: this runs for every row at every start
    if not os.path.exists(path):
        # macOS writes file names decomposed (NFD), spreadsheets compose them (NFC): Korean names differ.
        for form in ("NFC", "NFD"):
            if os.path.exists(os.path.join(data_dir, unicodedata.normalize(form, name))):
                return os.path.join(data_dir, unicodedata.normalize(form, name))
    return path


def file_name_problem(name: str, path: str) -> str | None:
    """Why a file_name cannot be read safely, or None.

    It must be relative and stay inside DATA_DIR ('..' and absolute paths are refused) and name a regular
    file: reading a FIFO or a device would hang or never end. A symlink is followed and judged by its
    target, which may lie anywhere (data sets assembled from links into a blob store are common).
    """
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        return "file_name must be a path inside the data folder (no absolute path, no '..')"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None  # reported by the image check as "file not found"
    except OSError as err:
        return f"cannot read: {err.strerror or err}"
    return None if stat.S_ISREG(mode) else "not a regular file (a folder, FIFO or device)"


def artist_key(name: str) -> str:
    """The grouping key of an artist: Unicode form, case and runs of spaces do not make another artist."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def _merge_artist_spellings(df: pd.DataFrame) -> list[str]:
    """Give every spelling of one artist the first spelling seen (REQ-N-001: one artist, one split)."""
    keys = df["artist"].map(artist_key)
    first = df.groupby(keys, sort=False)["artist"].first()
    spellings = df.groupby(keys, sort=False)["artist"].unique()
    df["artist"] = keys.map(first)
    return [f"artist names merged as one artist {first[k]!r}: " + ", ".join(repr(n) for n in names)
            for k, names in spellings.items() if len(names) > 1]


def metadata_csv(data_dir: str | os.PathLike) -> Path:
    """DATA_DIR/metadata.csv; raises DataError when it is missing (a cheap first check of --data_dir)."""
    csv_path = Path(data_dir) / "metadata.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: not found (expected columns file_name,tier,artist[,image_id])")
    return csv_path


def _read_rows(data_dir: Path) -> tuple[Path, pd.DataFrame, list[tuple[int, str]], list[str]]:
    """Every row of metadata.csv, the problems found in them as (row, message), and notes to show."""
    csv_path = metadata_csv(data_dir)
    payload = csv_path.read_bytes()
    try:
        text = payload.decode("utf-8-sig")  # -sig: drops the byte-order mark Excel writes
    except UnicodeDecodeError as err:
        line = payload[:err.start].count(b"\n") + 1
        raise DataError(f"{csv_path}: line {line} is not UTF-8 text; save the file as UTF-8 "
                        "(in Excel: 'CSV UTF-8')") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    line = 0
    try:
        header = [name.strip() for name in next(reader, [])]
        missing = [c for c in ("file_name", "tier", "artist") if c not in header]
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {missing}; found {header}")
        repeated = sorted({c for c in header if header.count(c) > 1 and c})
        if repeated:
            raise DataError(f"{csv_path}: column(s) {repeated} appear more than once in the header")
        records, problems, line = [], [], reader.line_num
        for fields in reader:
            start, line = line + 1, reader.line_num
            if any("\n" in field or "\r" in field for field in fields):
                # A stray quote makes the csv module read on to the next quote, rows and all: never guess.
                raise DataError(f"{csv_path}: line {start}: a field runs over {line - start + 1} lines (an unclosed "
                                "quote?); quote marks inside a field must be doubled")
            if not any(field.strip() for field in fields):
                continue  # blank lines, lines of commas
            if len(fields) != len(header):
                name = fields[header.index("file_name")].strip() if len(fields) > header.index("file_name") else ""
                problems.append((start, f"row {start} ({name}): {len(fields)} fields but the "
                                 f"header has {len(header)} (a comma inside a name needs quotes)"))
                continue
            records.append([start, *(field.strip() for field in fields)])
    except csv.Error as err:
        raise DataError(f"{csv_path}: line {line + 1}: cannot parse: {err} (an unclosed or stray quote?); quote "
                        "marks inside a field must be doubled") from None
    df = pd.DataFrame(records, columns=["row", *header], dtype=object).astype({"row": int})
    if not len(df) and not problems:
        raise DataError(f"{csv_path}: no image rows")
    if "image_id" not in df.columns:
        df["image_id"] = df["file_name"]
    df["image_id"] = df["image_id"].where(df["image_id"] != "", df["file_name"])
    df["tier"] = df["tier"].str.upper()
    notes = _merge_artist_spellings(df)
    df["path"] = [image_path(data_dir, name) for name in df["file_name"]]

    first_file, first_id = {}, {}
    for r in df.itertuples():
        where = f"row {r.row} ({r.file_name})"
        if not r.file_name:
            problems.append((r.row, f"row {r.row}: empty file_name"))
        elif (problem := file_name_problem(r.file_name, r.path)) is not None:
            problems.append((r.row, f"{where}: {problem}"))
            df.loc[r.Index, "path"] = ""  # never opened
        if r.tier not in TIER_RANK:
            problems.append((r.row, f"{where}: unknown tier {r.tier!r}, expected one of {', '.join(TIERS)}"))
        if not r.artist:
            problems.append((r.row, f"{where}: missing artist"))
        if r.file_name and r.file_name in first_file:
            problems.append((r.row, f"{where}: image listed twice, first at row {first_file[r.file_name]}"))
        elif r.image_id and r.image_id in first_id:
            problems.append((r.row, f"{where}: duplicate image_id {r.image_id!r}, first at row {first_id[r.image_id]}"))
        first_file.setdefault(r.file_name, r.row)
        first_id.setdefault(r.image_id, r.row)
    return csv_path, df[["image_id", "file_name", "tier", "artist", "path", "row"]], problems, notes


def _bad_rows(problems: Sequence[tuple[int, str]], *, source: str, skip_bad_images: bool) -> list[str]:
    messages = [message for _, message in sorted(problems, key=lambda p: p[0])]
    if messages and not skip_bad_images:
        raise DataError(f"{source}: {len({row for row, _ in problems})} bad row(s); fix or remove them, or pass "
                        "--skip_bad_images true to drop them:\n  " + "\n  ".join(messages))
    return messages


def read_metadata(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Read and validate DATA_DIR/metadata.csv without opening the images.

    Returns columns image_id, file_name, tier, artist, path and row (the CSV line number).
    Raises DataError listing every bad row.
    """
    csv_path, df, problems, _ = _read_rows(Path(data_dir))
    _bad_rows(problems, source=str(csv_path), skip_bad_images=False)
    return df.reset_index(drop=True)


# ---------------------------------------------------------------- images

class ImageDataset(torch.utils.data.Dataset):
    """Paths in, model inputs out (images.load_pixels); decoded in DataLoader workers (Datasets' Image
    column re-decodes on every access and is many times slower)."""

    def __init__(self, paths: list[str], *, image_size: int, patch_size: int):
        self.paths, self.image_size, self.patch_size = list(paths), image_size, patch_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            return load_pixels(self.paths[index], self.image_size, self.patch_size)
        except Exception as err:
            raise DataError(f"{self.paths[index]}: {type(err).__name__}: {err}") from err


# ---------------------------------------------------------------- splits and pairs

def split_by_artist(df: pd.DataFrame, *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                    seed: int = 42) -> pd.Series:
    """Assign train/val/test: stratified by tier, grouped by artist (no artist in two splits).

    StratifiedGroupKFold makes 10 folds of about equal tier mix, so fractions are whole tenths. Rows
    are sorted by image_id first, so the split depends on the metadata's content, not its row order.
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

    order = np.argsort(df["image_id"].to_numpy(), kind="stable")
    ordered = df.iloc[order]
    splitter = StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=seed)
    fold_of = np.empty(len(df), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class": the checks above say it better
        try:
            for fold, (_, held) in enumerate(splitter.split(ordered, ordered["tier"], ordered["artist"])):
                fold_of[order[held]] = fold
        except ValueError as err:  # scikit-learn's own refusals, in its words, with our counts
            raise DataError(f"cannot split by artist into tenths: {err} ({counts})") from None
    split = pd.Series(_folds_to_splits(fold_of, df["tier"].to_numpy(), folds["test"], folds["val"]),
                      index=df.index, name="split")
    for name in SPLITS:
        present = df.loc[split == name, "tier"].unique()
        if len(present) < 2:
            raise DataError(f"split {name!r} holds tier(s) {sorted(present)} only, so it has no cross-tier pairs: "
                            f"too few artists to split by artist ({counts})")
    return split


def _folds_to_splits(fold_of: np.ndarray, tiers: np.ndarray, test_folds: int, val_folds: int) -> np.ndarray:
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


def cross_tier_pairs(tiers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) of different tiers (spec 4.4.2), vectorised.

    Returns index arrays a, b and label (1 if a's tier is higher, else -1). Same-tier pairs are left
    out: the teachers' grades say nothing about their order.
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


def check_no_test_leak(frame: pd.DataFrame, splits: pd.DataFrame) -> None:
    """REQ-N-001: raise if `frame`, about to reach training or validation, touches the test split.

    Checks the rows (by split and by image_id), the artists and the image contents: a copy of a test
    image under another name is still a test image. `splits` is the full table from load_table.
    """
    for name, table, needed in (("frame", frame, {"image_id", "artist", "sha256"}),
                                ("splits", splits, {"image_id", "artist", "sha256", "split"})):
        if needed - set(table.columns):
            raise DataError(f"REQ-N-001 guard: {name} lacks {sorted(needed - set(table.columns))}: "
                            "pass rows of load_table's table")
    test = splits[splits["split"] == "test"]
    leaks = []
    rows = frame["image_id"].isin(set(test["image_id"]))
    if "split" in frame:
        rows |= frame["split"] == "test"
    if rows.any():
        leaks.append(f"{int(rows.sum())} test row(s) {list(frame.loc[rows, 'image_id'][:5])}")
    shared = set(frame["artist"]) & set(test["artist"])
    if shared:
        leaks.append(f"artist(s) also in test {sorted(shared)[:5]}")
    copies = frame["sha256"].isin(set(test["sha256"])) & ~rows
    if copies.any():
        leaks.append(f"image(s) identical to a test image {list(frame.loc[copies, 'image_id'][:5])}")
    if leaks:
        raise DataError("REQ-N-001: test data would reach training or validation: " + "; ".join(leaks))


def scan_images(df: pd.DataFrame, *, skip_bad_images: bool = False, track=None, workers: int = 8,
                known_problems: Sequence[tuple[int, str]] = (), source: str = "metadata.csv",
                cache_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Hash and decode-check every image (images.check_images: verdicts reused from cache_dir while a
    file is unchanged).

    Bad rows (unreadable, truncated, a decompression bomb, the same content as another row, or one of
    `known_problems` from the metadata) raise one DataError listing them all, or with skip_bad_images
    are dropped and returned as messages. Returns the table with a sha256 column, and the messages.
    """
    results = check_images(list(df["path"].where(df["file_name"] != "", "")), cache_dir=cache_dir,
                           workers=workers, track=track)
    df = df.assign(sha256=[digest for digest, _ in results])
    errors = pd.Series([error for _, error in results], index=df.index, dtype=object)
    problems = list(known_problems)
    problems += [(r.row, f"row {r.row} ({r.file_name}): {error}")
                 for r, error in zip(df[errors.notna()].itertuples(), errors[errors.notna()])]
    good = df[errors.isna() & (df["sha256"] != "")]
    first = good.drop_duplicates("sha256").set_index("sha256")
    for r in good[good.duplicated("sha256")].itertuples():
        original = first.loc[r.sha256]
        if original.file_name != r.file_name:  # the same name is reported as listed twice
            problems.append((r.row, f"row {r.row} ({r.file_name}): same image content as row {original.row} "
                                    f"({original.file_name})"))
    messages = _bad_rows(problems, source=source, skip_bad_images=skip_bad_images)
    return df[~df["row"].isin({row for row, _ in problems})].reset_index(drop=True), messages


def load_table(data_dir: str | os.PathLike, *, val_fraction: float, test_fraction: float, seed: int,
               skip_bad_images: bool = False, track=None,
               cache_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Metadata + image checks + split: the image table every script starts from.

    With cache_dir, image checks are remembered there (see scan_images), so a second start is cheap.
    Every bad row, in the metadata or in the images, is listed in one DataError (or dropped with
    skip_bad_images). Columns image_id, file_name, tier, artist, path, row, sha256, split. Also returns
    the notes to show: artist spellings merged, rows skipped.
    """
    csv_path, rows, problems, notes = _read_rows(Path(data_dir))
    df, skipped = scan_images(rows, skip_bad_images=skip_bad_images, track=track, known_problems=problems,
                              source=str(csv_path), cache_dir=cache_dir)
    notes += [f"skipped {message}" for message in skipped]
    try:
        df["split"] = split_by_artist(df, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    except DataError as err:
        dropped = f" (after skipping {len(skipped)} bad row(s): {'; '.join(skipped)})" if skipped else ""
        raise DataError(f"{csv_path}: {err}{dropped}") from None
    return df, notes
