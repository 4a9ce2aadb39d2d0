"""The data layer: metadata, image checks, the one preprocessing, artist-grouped splits and pairs.

Input: DATA_DIR/metadata.csv (Hugging Face imagefolder layout) with columns file_name, tier (S/A/B/C),
artist and optionally image_id; images in any format Pillow reads.
"""

import contextlib
import hashlib
import io
import math
import os
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from sklearn.model_selection import StratifiedGroupKFold

TIERS = ("S", "A", "B", "C")
TIER_RANK = {"S": 3, "A": 2, "B": 1, "C": 0}
SPLITS = ("train", "val", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bumped whenever preprocess() changes, so cached features computed the old way are never reused.
PREPROCESSING_VERSION = "letterbox-v1"
# Pillow warns above this many pixels and we refuse: a 20000x20000 image is a decompression bomb.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS


class DataError(ValueError):
    """Bad input data; the message lists every bad file and row found."""


# ---------------------------------------------------------------- crash-safe writes

def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory that replaces `path` only if the block completes.

    A directory cannot be renamed over a non-empty one, so the old one is moved aside first; a crash
    between the two renames leaves `path.old`, which `recover_dir` puts back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(path: str | os.PathLike) -> Path:
    """Put back `path` from `path.old` if a crash hit `atomic_dir` between its two renames."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    if not path.exists() and old.exists():
        os.rename(old, path)
    return path


# ---------------------------------------------------------------- metadata

def read_metadata(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Read and validate DATA_DIR/metadata.csv without opening the images.

    Returns columns image_id, file_name, tier, artist, path and row (the CSV line number).
    Raises DataError listing every bad row.
    """
    data_dir = Path(data_dir)
    csv = data_dir / "metadata.csv"
    if not csv.is_file():
        raise DataError(f"{csv}: not found (expected columns file_name,tier,artist[,image_id])")
    try:
        # utf-8-sig drops the byte-order mark Excel writes; keep_default_na keeps an artist named "NA".
        df = pd.read_csv(csv, dtype=str, encoding="utf-8-sig", keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{csv}: cannot parse: {err}") from err
    df.columns = [c.strip() for c in df.columns]
    missing = {"file_name", "tier", "artist"} - set(df.columns)
    if missing:
        raise DataError(f"{csv}: missing column(s) {sorted(missing)}; found {list(df.columns)}")
    for column in ("file_name", "tier", "artist"):
        df[column] = df[column].str.strip()
    df = df[(df[["file_name", "tier", "artist"]] != "").any(axis=1)].copy()  # blank lines of commas
    if "image_id" not in df.columns:
        df["image_id"] = df["file_name"]
    df["image_id"] = df["image_id"].str.strip().where(df["image_id"].str.strip() != "", df["file_name"])
    df["tier"] = df["tier"].str.upper()
    df["row"] = df.index + 2  # header is line 1
    df["path"] = [str(data_dir / name) for name in df["file_name"]]

    problems = []
    for r in df.itertuples():
        if not r.file_name:
            problems.append(f"row {r.row}: empty file_name")
        if r.tier not in TIER_RANK:
            problems.append(f"row {r.row} ({r.file_name}): unknown tier {r.tier!r}, expected one of {TIERS}")
        if not r.artist:
            problems.append(f"row {r.row} ({r.file_name}): missing artist")
    for column, what in (("image_id", "duplicate image_id"), ("file_name", "image listed twice")):
        dup = df[df.duplicated(column, keep=False) & (df[column] != "")]
        for value, rows in dup.groupby(column)["row"]:
            problems.append(f"rows {', '.join(map(str, rows))}: {what} {value!r}")
    if problems:
        raise DataError(f"{csv}: {len(problems)} bad row(s):\n  " + "\n  ".join(problems))
    return df[["image_id", "file_name", "tier", "artist", "path", "row"]].reset_index(drop=True)


# ---------------------------------------------------------------- images

def open_image(source: str | os.PathLike | bytes) -> Image.Image:
    """Decode an image to RGB the same way everywhere: EXIF rotation, 16-bit, CMYK, alpha on white paper."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # convert("L") clips 16-bit values at 255; scale the real range instead.
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        image = Image.fromarray(np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    return image.convert("RGB")


def check_image(path: str | os.PathLike) -> tuple[str, str | None]:
    """Read, hash and fully decode one image. Returns (sha256 of the file bytes, error or None)."""
    try:
        payload = Path(path).read_bytes()
    except OSError as err:
        return "", f"cannot read: {err.strerror or err}"
    digest = hashlib.sha256(payload).hexdigest()
    if not payload:
        return digest, "empty file"
    try:
        open_image(payload)
    except Image.DecompressionBombWarning as err:
        return digest, f"refused as a decompression bomb: {err}"
    except Exception as err:  # Pillow raises many types for corrupt data
        return digest, f"not a readable image: {type(err).__name__}: {err}"
    return digest, None


def input_size(image_size: int, patch_size: int) -> int:
    """The side the backbone sees: image_size rounded up to whole patches.

    768 is not a multiple of 14; DINOv2's patch conv would silently drop the last 12 rows and
    columns, so the 768 letterbox is padded to 770 (55 patches) and every pixel is seen.
    """
    return math.ceil(image_size / patch_size) * patch_size


def preprocess(image: Image.Image, image_size: int, patch_size: int) -> torch.Tensor:
    """Letterbox to image_size (whole work kept: composition is judged), pad to whole patches, normalise.

    Returns float32 (3, side, side). Padding is the ImageNet mean, i.e. zero after normalisation.
    """
    scale = image_size / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.resize(size, Image.BICUBIC, reducing_gap=3.0)
    side = input_size(image_size, patch_size)
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    out = np.zeros((side, side, 3), dtype=np.float32)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    out[top:top + size[1], left:left + size[0]] = (pixels - mean) / std
    return torch.from_numpy(out.transpose(2, 0, 1).copy())


class ImageDataset(torch.utils.data.Dataset):
    """Paths in, preprocessed tensors out; decoded in DataLoader workers (Datasets' Image column
    re-decodes on every access and is many times slower)."""

    def __init__(self, paths: list[str], *, image_size: int, patch_size: int):
        self.paths, self.image_size, self.patch_size = list(paths), image_size, patch_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            image = open_image(self.paths[index])
        except Exception as err:
            raise DataError(f"{self.paths[index]}: {type(err).__name__}: {err}") from err
        return preprocess(image, self.image_size, self.patch_size)


# ---------------------------------------------------------------- splits and pairs

def split_by_artist(df: pd.DataFrame, *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                    seed: int = 42) -> pd.Series:
    """Assign train/val/test: stratified by tier, grouped by artist (no artist in two splits).

    Uses StratifiedGroupKFold with 10 folds, so fractions are whole tenths. Rows are sorted by
    image_id first, so the split depends on the metadata's content, not its row order.
    """
    folds = {name: round(f * 10) for name, f in (("val", val_fraction), ("test", test_fraction))}
    for name, fraction in (("val", val_fraction), ("test", test_fraction)):
        if folds[name] < 1 or abs(folds[name] - fraction * 10) > 1e-6:
            raise DataError(f"{name}_fraction must be a whole tenth (0.1, 0.2, ...), got {fraction}")
    if folds["val"] + folds["test"] >= 10:
        raise DataError("val_fraction + test_fraction leave nothing to train on")
    artists = df["artist"].nunique()
    if artists < 10:
        raise DataError(f"need at least 10 artists to split 80/10/10 by artist, found {artists}")
    tiers = sorted(df["tier"].unique(), key=TIER_RANK.get)
    if len(tiers) < 2:
        raise DataError(f"need at least two tiers to make pairs, found only {tiers}")

    order = np.argsort(df["image_id"].to_numpy(), kind="stable")
    ordered = df.iloc[order]
    splitter = StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=seed)
    fold_of = np.empty(len(df), dtype=np.int64)
    for fold, (_, held) in enumerate(splitter.split(ordered, ordered["tier"], ordered["artist"])):
        fold_of[order[held]] = fold
    split = np.where(fold_of < folds["test"], "test",
                     np.where(fold_of < folds["test"] + folds["val"], "val", "train"))
    split = pd.Series(split, index=df.index, name="split")
    for name in SPLITS:
        present = df.loc[split == name, "tier"].unique()
        if len(present) < 2:
            raise DataError(f"split {name!r} holds tiers {sorted(present)} only: no cross-tier pairs. "
                            f"Too few works or artists per tier to split ({df['tier'].value_counts().to_dict()})")
    return split


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

    Checks the split column, the artists and the image contents (a copy of a test image under
    another name is still a test image). `splits` is the full table with split and sha256 columns.
    """
    test = splits[splits["split"] == "test"]
    leaks = []
    if (frame["split"] == "test").any():
        leaks.append(f"{int((frame['split'] == 'test').sum())} test row(s)")
    shared = set(frame["artist"]) & set(test["artist"])
    if shared:
        leaks.append(f"artist(s) also in test: {sorted(shared)[:5]}")
    if "sha256" in frame:
        copies = frame[frame["sha256"].isin(set(test["sha256"]))]
        if len(copies):
            leaks.append(f"image(s) identical to a test image: {list(copies['file_name'][:5])}")
    if leaks:
        raise DataError("REQ-N-001: test data would reach training or validation: " + "; ".join(leaks))


def scan_images(df: pd.DataFrame, *, skip_bad_images: bool = False, track=None,
                workers: int = 8) -> tuple[pd.DataFrame, list[str]]:
    """Hash and decode every image (threads: Pillow releases the GIL while decoding).

    Bad rows (unreadable, truncated, a decompression bomb, the same content as another row) raise
    one DataError listing them all, or with skip_bad_images are dropped and returned as messages.
    Returns the table with a sha256 column, and the messages.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(check_image, df["path"])
        results = list(track(results, total=len(df)) if track else results)
    df = df.assign(sha256=[digest for digest, _ in results])
    problems = {r.row: f"row {r.row} ({r.file_name}): {error}"
                for r, (_, error) in zip(df.itertuples(), results) if error}
    readable = df[~df["row"].isin(problems) & (df["sha256"] != "")]
    for _, rows in readable[readable.duplicated("sha256", keep=False)].groupby("sha256"):
        first = rows.iloc[0]
        for r in rows.iloc[1:].itertuples():
            problems[r.row] = f"row {r.row} ({r.file_name}): same image content as row {first.row} ({first.file_name})"
    messages = [problems[row] for row in sorted(problems)]
    if messages and not skip_bad_images:
        raise DataError(f"{len(messages)} bad image(s); fix or remove these rows, or pass "
                        f"--skip_bad_images true to drop them:\n  " + "\n  ".join(messages))
    return df[~df["row"].isin(problems)].reset_index(drop=True), messages


def load_table(data_dir: str | os.PathLike, *, val_fraction: float, test_fraction: float, seed: int,
               skip_bad_images: bool = False, track=None) -> tuple[pd.DataFrame, list[str]]:
    """Metadata + image checks + split: the image table every script starts from.

    Columns image_id, file_name, tier, artist, path, row, sha256, split.
    """
    df, messages = scan_images(read_metadata(data_dir), skip_bad_images=skip_bad_images, track=track)
    df["split"] = split_by_artist(df, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    return df, messages
