"""Where the image table comes from: a folder in the Hugging Face imagefolder layout (metadata.csv or
metadata.jsonl beside the images), or a Hugging Face dataset with image, tier and artist columns (a
save_to_disk folder, a parquet file, a hub id).

Every source gives the same rows: row (the number messages name: the line of metadata.csv or .jsonl, the
index of a dataset row), image_id, file_name, tier, artist and path (the file the image is read from), and
the problems only that source can see. The checks every row needs, the image checks, the split and the
leak guard follow in data.py, the same for every source. Images stored inside a dataset are written once
into CACHE_DIR/dataset-images/, named by their sha256, so that every later step reads files.
"""

import csv
import hashlib
import io
import json
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from .errors import ArtrankError
from .files import atomic_write_bytes

ROW_COLUMNS = ["row", "image_id", "file_name", "tier", "artist", "path"]
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
SOURCE_KINDS = ("a folder with metadata.csv or metadata.jsonl, a save_to_disk folder, a parquet file, or a hub "
                "dataset id")


class DataError(ArtrankError):
    """Bad input data; the message lists every bad file and row found."""


@dataclass
class Rows:
    source: str  # what messages name: the metadata file, or the dataset
    rows: pd.DataFrame  # ROW_COLUMNS, every value a string but row
    problems: list[tuple[int, str]] = field(default_factory=list)  # (row, message)
    names_are_files: bool = True  # file_name names the file read (a folder's metadata), not only a label
    notes: list[str] = field(default_factory=list)  # how the source was read, where it took a guess to show


def source_kind(data_dir: str) -> str:
    """"csv", "jsonl", "saved", "parquet" or "hub"; DataError when data_dir is none of them."""
    path = Path(data_dir)
    if (path / "metadata.csv").is_file():
        return "csv"
    if (path / "metadata.jsonl").is_file():
        return "jsonl"
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        return "saved"
    if path.is_file() and path.suffix == ".parquet":
        return "parquet"
    if path.is_dir():
        raise DataError(f"{path / 'metadata.csv'}: not found (expected columns file_name,tier,artist[,image_id]); "
                        f"a data_dir is {SOURCE_KINDS}")
    if path.exists() or not HUB_ID.fullmatch(str(data_dir)) or Path(str(data_dir).split("/")[0]).is_dir():
        raise DataError(f"{data_dir}: not found; a data_dir is {SOURCE_KINDS}")
    return "hub"


def check_source(data_dir: str) -> None:
    """A cheap first check that data_dir is a source (a hub dataset is fetched once: later loads read the cache)."""
    if source_kind(data_dir) == "hub":
        load_source_dataset(data_dir, "hub")


def read_rows(data_dir: str, *, cache_dir: str | os.PathLike | None) -> Rows:
    """The rows of any source, and what is wrong with them that only the source can tell. A dataset's stored
    images are written into cache_dir."""
    kind = source_kind(data_dir)
    if kind == "csv":
        return read_metadata_csv(Path(data_dir))
    if kind == "jsonl":
        return read_metadata_jsonl(Path(data_dir))
    if cache_dir is None:
        raise ValueError("a dataset is read into cache_dir, and none was given")
    return read_dataset(data_dir, kind, cache_dir=Path(cache_dir))


def folder_file(data_dir: str, name: str, what: str) -> Path | None:
    """DATA_DIR/NAME (comparisons.csv, corrections.csv) when DATA_DIR is a folder (an imagefolder or a
    save_to_disk dataset) holding one; a parquet file or a hub id has no folder of its own: such a file beside
    a dataset file is refused rather than ignored."""
    path, beside = Path(data_dir) / name, Path(data_dir).parent / name
    if Path(data_dir).is_file() and beside.is_file():  # meant for this dataset, most likely: never ignore it unsaid
        raise DataError(f"{beside}: {what} are read from a data folder, not beside a dataset file: put "
                        f"{Path(data_dir).name} in a folder (save_to_disk) with its {name}")
    return path if Path(data_dir).is_dir() and path.is_file() else None


# ---------------------------------------------------------------- a folder of images with its metadata

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


def folder_rows(data_dir: Path, records: list[list], columns: list[str],
                problems: list[tuple[int, str]]) -> pd.DataFrame:
    """The metadata's records ([row, *values]) as rows: paths found in DATA_DIR, empty or unsafe names added
    to `problems`."""
    df = pd.DataFrame(records, columns=["row", *columns], dtype=object).astype({"row": int})
    if "image_id" not in df.columns:
        df["image_id"] = df["file_name"]
    df["image_id"] = df["image_id"].where(df["image_id"] != "", df["file_name"])
    df["path"] = [image_path(data_dir, name) for name in df["file_name"]]
    for r in df.itertuples():
        if not r.file_name:
            problems.append((r.row, f"row {r.row}: empty file_name"))
            df.loc[r.Index, "path"] = ""
        elif (problem := file_name_problem(r.file_name, r.path)) is not None:
            problems.append((r.row, f"row {r.row} ({r.file_name}): {problem}"))
            df.loc[r.Index, "path"] = ""  # never opened
    return df[ROW_COLUMNS]


def read_metadata_csv(data_dir: Path) -> Rows:
    """DATA_DIR/metadata.csv: refused whole when it cannot be parsed safely, else every row with its problems."""
    csv_path = data_dir / "metadata.csv"
    payload = csv_path.read_bytes()
    try:
        text = payload.decode("utf-8-sig")  # -sig: drops the byte-order mark Excel writes
    except UnicodeDecodeError as err:
        line = payload[:err.start].count(b"\n") + 1
        raise DataError(f"{csv_path}: line {line} is not UTF-8 text; save the file as UTF-8 "
                        "(in Excel: 'CSV UTF-8')") from None
    separator = sniff_separator(text)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, delimiter=separator)
    line = 0
    notes = [f"{csv_path}: columns separated by {SEPARATORS[separator]}"] if separator != "," else []
    try:
        given = [name.strip() for name in next(reader, [])]
        header = [column_name(name) for name in given]
        missing = [c for c in ("file_name", "tier", "artist") if c not in header]
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {missing}; found {given}")
        if matched := [f"{name!r} as {column}" for name, column in zip(given, header) if name != column]:
            notes.append(f"{csv_path}: read column(s) {', '.join(matched)}")
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
    if not records and not problems:
        raise DataError(f"{csv_path}: no image rows")
    return Rows(str(csv_path), folder_rows(data_dir, records, header, problems), problems, notes=notes)


SEPARATORS = {",": "commas", ";": "semicolons (a spreadsheet's CSV in a comma-decimal locale)", "\t": "tabs"}
COLUMNS = ("file_name", "tier", "artist", "image_id")


def column_name(name: str, columns: tuple[str, ...] = COLUMNS) -> str:
    """Our column a header cell means, whatever its case and spacing ('File Name', ' TIER ', 'image-id'), or
    the cell as it is (`columns`: metadata's, or another table's such as comparisons.csv's)."""
    key = re.sub(r"[\s_-]+", "_", name.strip().lower())
    return key if key in columns else name.strip()


def sniff_separator(text: str) -> str:
    """The separator under which the header holds our columns: commas unless only semicolons or tabs do."""
    first = text.split("\n", 1)[0]
    for separator in SEPARATORS:
        cells = {column_name(cell) for cell in next(csv.reader([first], delimiter=separator), [])}
        if {"file_name", "tier", "artist"} <= cells:
            return separator
    return ","


def read_metadata_jsonl(data_dir: Path) -> Rows:
    """DATA_DIR/metadata.jsonl (imagefolder's other layout): one JSON object per line."""
    jsonl_path = data_dir / "metadata.jsonl"
    columns, records, problems = ["file_name", "tier", "artist", "image_id"], [], []
    for number, text in enumerate(jsonl_path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append((number, f"row {number}: not a JSON object ({err.msg})"))
            continue
        if not isinstance(item, dict) or not all(isinstance(item.get(c, ""), str) for c in columns):
            problems.append((number, f"row {number}: expected a JSON object of strings {columns[:3]}, got {text[:80]}"))
            continue
        records.append([number, *(item.get(c, "").strip() for c in columns)])
    if not records and not problems:
        raise DataError(f"{jsonl_path}: no image rows")
    return Rows(str(jsonl_path), folder_rows(data_dir, records, columns, problems), problems)


# ---------------------------------------------------------------- a Hugging Face dataset

def load_source_dataset(data_dir: str, kind: str):
    """The dataset behind a saved folder, a parquet file or a hub id, its splits joined (artrank splits by
    artist itself). DataError when it cannot be loaded."""
    import datasets

    try:
        if kind == "saved":
            loaded = datasets.load_from_disk(data_dir)
        elif kind == "parquet":
            loaded = datasets.Dataset.from_parquet(data_dir)
        else:
            loaded = datasets.load_dataset(data_dir)
    except ConnectionError as err:
        raise DataError(f"{data_dir}: no such folder or file here, and the dataset hub cannot be reached ({err}); "
                        "fetch it once where the hub is reachable, or save it with save_to_disk and pass that "
                        "folder") from None
    except (OSError, ValueError) as err:  # datasets' own refusals: a missing repo, unreadable files
        raise DataError(f"{data_dir}: cannot load it as a dataset: {type(err).__name__}: "
                        f"{(str(err).splitlines() or [''])[0]}") from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.concatenate_datasets(list(loaded.values()))
    return loaded


def read_dataset(data_dir: str, kind: str, *, cache_dir: Path) -> Rows:
    """A dataset's rows: its image column as files (stored images written into the cache), tier and artist."""
    import datasets

    table = load_source_dataset(data_dir, kind)
    missing = [c for c in ("image", "tier", "artist") if c not in table.column_names]
    if missing:
        raise DataError(f"{data_dir}: missing column(s) {missing}; found {table.column_names}")
    tier_names = getattr(table.features["tier"], "names", None)
    if tier_names is None and getattr(table.features["tier"], "dtype", None) not in ("string", "large_string"):
        raise DataError(f"{data_dir}: column 'tier' is {table.features['tier']}; expected the letters S, A, B, C "
                        "(strings or class labels)")
    if isinstance(table.features["image"], datasets.Image):
        table = table.cast_column("image", datasets.Image(decode=False))
    base = Path(data_dir) if kind == "saved" else Path(data_dir).parent
    stored = cache_dir / "dataset-images"
    columns = [c for c in ("image", "tier", "artist", "image_id", "file_name") if c in table.column_names]
    records, problems = [], []
    for row, item in enumerate(table.select_columns(columns)):
        image, tier = item["image"], item["tier"]
        tier = tier_names[tier] if tier_names is not None and tier is not None else tier
        name, path = "", ""
        if isinstance(image, str):
            name, path = image, image if os.path.isabs(image) else str(base / image)
        elif isinstance(image, dict) and image.get("bytes"):
            name = image.get("path") or ""
            path = str(stored / hashlib.sha256(image["bytes"]).hexdigest())
            if not os.path.exists(path):
                atomic_write_bytes(path, image["bytes"])
        elif isinstance(image, dict) and image.get("path"):
            name = image["path"]
            path = name if os.path.isabs(name) else str(base / name)
        else:
            problems.append((row, f"row {row}: no image"))
        name = item.get("file_name") or name
        records.append([row, (item.get("image_id") or name or "").strip(), name, str(tier or "").strip(),
                        str(item["artist"] or "").strip(), path])
    if not records:
        raise DataError(f"{data_dir}: no image rows")
    return Rows(f"{data_dir} (dataset)", pd.DataFrame(records, columns=ROW_COLUMNS).astype({"row": int}), problems,
                names_are_files=False)
