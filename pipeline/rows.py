"""The checks every row of a source needs, whatever the source: a known tier, an artist (its spellings merged
into one name), no image or id twice; and the one way bad rows are refused, all at once, or skipped."""

import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .corrections import apply_corrections
from .sources import DataError, Rows, read_rows
from .tables import TIER_RANK, TIERS


def artist_key(name: str) -> str:
    """The grouping key of an artist: Unicode form, case and runs of spaces do not make another artist."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def canonical_spelling(spellings: pd.Series) -> str:
    """The name one artist's works are filed under: the spelling used most, then one already in normal form
    (NFKC, single spaces, trimmed), then one in mixed case (all capitals or all lower case is more often a
    shortcut in typing), then the first in sorted order. Never the first seen: the split (seeded by the names)
    would then change when the sheet is re-sorted."""
    counts = spellings.value_counts()

    def rank(name: str):
        unusual = " ".join(unicodedata.normalize("NFKC", name).split()) != name
        return -counts[name], unusual, name.isupper() or name.islower(), name

    return min(counts.index, key=rank)


def merge_artist_spellings(df: pd.DataFrame) -> list[str]:
    """Give every spelling of one artist one name (canonical_spelling): one artist, one split."""
    keys = df["artist"].map(artist_key)
    first = df.groupby(keys, sort=False)["artist"].agg(canonical_spelling)
    spellings = df.groupby(keys, sort=False)["artist"].unique()
    df["artist"] = keys.map(first)
    return [f"artist names merged as one artist {first[k]!r}: " + ", ".join(repr(n) for n in names)
            for k, names in spellings.items() if len(names) > 1]


def checked_rows(source: Rows) -> tuple[pd.DataFrame, list[tuple[int, str]], list[str]]:
    """The checks every row needs, whatever its source: a known tier, an artist, no image or id twice.

    Returns the rows (tiers upper-cased, artist spellings merged), every problem as (row, message), and the
    notes to show.
    """
    df, problems = source.rows.copy(), list(source.problems)
    df["tier"] = df["tier"].str.upper()
    notes = list(source.notes) + merge_artist_spellings(df)
    first_file, first_id = {}, {}
    for r in df.itertuples():
        where = f"row {r.row} ({r.file_name})" if r.file_name else f"row {r.row}"
        if r.tier not in TIER_RANK:
            problems.append((r.row, f"{where}: unknown tier {r.tier!r}, expected one of {', '.join(TIERS)}"))
        if not r.artist:
            problems.append((r.row, f"{where}: missing artist"))
        if source.names_are_files and r.file_name and r.file_name in first_file:
            problems.append((r.row, f"{where}: image listed twice, first at row {first_file[r.file_name]}"))
        elif r.image_id and r.image_id in first_id:
            problems.append((r.row, f"{where}: duplicate image_id {r.image_id!r}, first at row {first_id[r.image_id]}"))
        first_file.setdefault(r.file_name, r.row)
        first_id.setdefault(r.image_id, r.row)
    return df, problems, notes


def source_rows(data_dir: str, *, cache_dir: str | os.PathLike | None) -> tuple[Rows, pd.DataFrame,
                                                                              list[tuple[int, str]], list[str]]:
    """The rows of a source, checked (checked_rows), with the data folder's tier corrections applied
    (corrections.py): the one way every script and the review page read them. Returns the source, the rows,
    the problems and the notes."""
    source = read_rows(str(data_dir), cache_dir=cache_dir)
    rows, problems, notes = checked_rows(source)
    return source, apply_corrections(rows, str(data_dir)), problems, notes


def bad_rows(problems: Sequence[tuple[int, str]], *, source: str, skip_bad_images: bool,
             cause: str | None = None) -> list[str]:
    """Every problem, in row order; a DataError listing them all (after their common cause, when there is
    one) unless skip_bad_images."""
    messages = [message for _, message in sorted(problems, key=lambda p: p[0])]
    if messages and not skip_bad_images:
        raise DataError(f"{source}: {len({row for row, _ in problems})} bad row(s); fix or remove them, or pass "
                        "--skip_bad_images true to drop them:\n  " + "\n  ".join(([cause] if cause else []) + messages))
    return messages


def missing_files_cause(names: list[str], data_dir: Path) -> str | None:
    """The one fixable cause every missing file shares, when there is one: a file_name that starts with the
    data folder's own name, or a file on disk whose extension is in another case (names are case-sensitive)."""
    if len(names) < 2:
        return None
    prefix = data_dir.name + "/"
    if all(name.startswith(prefix) and (data_dir / name[len(prefix):]).is_file() for name in names):
        return (f"all {len(names)} missing files start with the data folder's own name {prefix!r}: a file_name is "
                f"relative to the data folder ({names[0][len(prefix):]!r}, not {names[0]!r})")
    found = []
    for name in names:
        path = data_dir / name
        stem, suffix = os.path.splitext(path.name)
        others = [p for p in (os.listdir(path.parent) if path.parent.is_dir() else [])
                  if os.path.splitext(p)[0] == stem and os.path.splitext(p)[1].lower() == suffix.lower()]
        if not others:
            return None
        found.append(others[0])
    return (f"all {len(names)} missing files exist with the extension in another case ({names[0]!r} is "
            f"{found[0]!r} on disk): file names are case-sensitive; correct the file_names or rename the files")
