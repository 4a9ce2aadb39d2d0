"""Teachers' corrections of a tier: DATA_DIR/corrections.csv (file_name,tier,corrected_tier,rater), read
the same way every time the rows are read, so that training sees the corrected tiers and metadata.csv is
never edited in place.

Each row names an image (its file_name, or image_id), the tier it corrects (`tier`: the image's tier as it
stands before this row, the metadata's or an earlier correction's) and the tier it should have. The latest
row of an image wins. A row that names an unknown image, a tier that is not S, A, B or C, or a `tier` that
is not the image's tier at that point (metadata.csv changed since, or the row was made against another
file) is refused, naming the file and the line: a correction applied to the wrong label is a silently
wrong label.
"""

import csv
import io
from pathlib import Path

import pandas as pd

from .sources import DataError, column_name, folder_file
from .tables import TIER_RANK, TIERS

CORRECTIONS_CSV = "corrections.csv"
CORRECTION_COLUMNS = ("file_name", "tier", "corrected_tier", "rater")


def corrections_path(data_dir: str) -> Path | None:
    """DATA_DIR/corrections.csv when the data folder holds one (see sources.folder_file)."""
    return folder_file(data_dir, CORRECTIONS_CSV, "corrections")


def read_correction_rows(path: Path) -> list[tuple[int, dict]]:
    """The rows of corrections.csv as (line, {column: value}); DataError naming the file and line when one
    cannot be read."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [column_name(cell, CORRECTION_COLUMNS) for cell in next(reader, [])]
    if missing := [c for c in CORRECTION_COLUMNS[:3] if c not in header]:
        raise DataError(f"{path}: missing column(s) {missing}; found {header}")
    rows, line = [], reader.line_num
    try:
        for fields in reader:
            start, line = line + 1, reader.line_num
            if not any(field.strip() for field in fields):
                continue
            if len(fields) != len(header):
                raise DataError(f"{path}: line {start}: {len(fields)} fields but the header has {len(header)}")
            rows.append((start, {c: v.strip() for c, v in zip(header, fields)}))
    except csv.Error as err:
        raise DataError(f"{path}: line {line + 1}: cannot parse: {err}") from None
    return rows


def apply_corrections(df: pd.DataFrame, data_dir: str) -> pd.DataFrame:
    """The rows `df` (checked_rows: file_name, image_id, tier upper-cased) with DATA_DIR/corrections.csv
    applied in line order; unchanged when there is no such file. Raises DataError, in one line naming the
    file and every bad line, before anything is changed."""
    path = corrections_path(data_dir)
    if path is None:
        return df
    # An image by its file_name or its image_id; its tier as the lines go by.
    names = {name: i for i, name in enumerate(df["image_id"]) if name} | {
        name: i for i, name in enumerate(df["file_name"]) if name}
    current = list(df["tier"])
    problems = []
    for line, row in read_correction_rows(path):
        name = names.get(row["file_name"])
        given, corrected = row["tier"].upper(), row["corrected_tier"].upper()
        if name is None:
            problems.append(f"line {line}: unknown image {row['file_name']!r} (not a file_name or image_id of the "
                            "metadata)")
        elif corrected not in TIER_RANK:
            problems.append(f"line {line}: corrected_tier {row['corrected_tier']!r}, expected one of "
                            f"{', '.join(TIERS)}")
        elif given != current[name]:
            problems.append(f"line {line}: tier {row['tier']!r} of {row['file_name']!r} is not its tier "
                            f"{current[name]!r} (the metadata's, then earlier corrections'): made against other data?")
        else:
            current[name] = corrected
    if problems:
        raise DataError(f"{path}: {len(problems)} bad row(s), nothing corrected: " + "; ".join(problems))
    return df.assign(tier=current)
