"""What the review page shows, without the page: the pairs still to judge (RUN/review/next_pairs.csv less the
pairs comparisons.csv already holds), the label audit (RUN/review/label_audit.csv), each image's tier as it
stands (metadata.csv with corrections.csv applied) and the training works nearest a new drawing's score.

A queue file that names an image the data folder does not hold is refused, naming the file and the line: a
judgement of it would be refused by training. A missing file is not an error of the page: the tab says
which command writes it.
"""

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .comparisons import COMPARISONS_CSV, read_comparison_rows
from .errors import ArtrankError
from .label_audit import AUDIT_COLUMNS, LABEL_AUDIT
from .next_pairs import NEXT_PAIRS, PAIR_COLUMNS
from .rows import source_rows
from .runs import REVIEW_DIR, SPLITS_CSV
from .sources import image_path, source_kind

NEAREST = 5  # training works shown beside a new drawing


class ReviewError(ArtrankError):
    """A review file that cannot be used; the message names the file and line."""


def missing_note(output_dir: str | os.PathLike, name: str, command: str) -> str | None:
    """What a tab says when RUN/review/NAME is not there: the command that writes it; None when it is."""
    path = Path(output_dir) / REVIEW_DIR / name
    return None if path.is_file() else (f"No {path} yet: run `python review.py {command} --output_dir {output_dir}` "
                                        "first, then reload this page.")


class DataFolder:
    """The data folder the answers go to: its images by file_name and their tiers as they stand."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = str(data_dir)
        if not Path(self.data_dir).is_dir() or source_kind(self.data_dir) not in ("csv", "jsonl"):
            raise ReviewError(f"{self.data_dir}: the review page answers into a data folder with metadata.csv or "
                              "metadata.jsonl beside its images; this run's data is not one")
        self.names = self.tiers()  # checked once at start: a bad corrections.csv stops the page here

    def tiers(self) -> dict[str, str]:
        """file_name (and image_id) -> its tier with every correction so far applied."""
        _, rows, _, _ = source_rows(self.data_dir, cache_dir=None)
        return dict(zip(rows["image_id"], rows["tier"])) | dict(zip(rows["file_name"], rows["tier"]))

    def path(self, name: str) -> str:
        return image_path(self.data_dir, name)


def read_review_table(path: Path, columns: tuple[str, ...], images: dict, image_columns: tuple[str, ...]) -> list[dict]:
    """The rows of a review CSV as dicts, refused (ReviewError naming the file and line) when a column is
    missing or a row names an image the data folder does not hold."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if missing := [c for c in columns if c not in (reader.fieldnames or [])]:
            raise ReviewError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        rows = []
        for row in reader:
            if unknown := [row[c] for c in image_columns if row[c] not in images]:
                raise ReviewError(f"{path}: line {reader.line_num}: unknown image {unknown[0]!r} (not in the data "
                                  "folder's metadata): made from another data folder?")
            rows.append(row)
    return rows


def judged_pairs(data: DataFolder) -> set[frozenset]:
    """The image pairs comparisons.csv already holds, by any rater, in either order (by file_name or id)."""
    path = Path(data.data_dir) / COMPARISONS_CSV
    if not path.is_file():
        return set()
    rows, _ = read_comparison_rows(path)
    return {frozenset((row["image_a"], row["image_b"])) for _, row in rows}


def pending_pairs(output_dir: str | os.PathLike, data: DataFolder) -> list[dict]:
    """next_pairs.csv in its order, less the pairs already judged."""
    rows = read_review_table(Path(output_dir) / REVIEW_DIR / NEXT_PAIRS, PAIR_COLUMNS, data.names,
                             ("image_a", "image_b"))
    judged = judged_pairs(data)
    return [row for row in rows if frozenset((row["image_a"], row["image_b"])) not in judged]


def audit_rows(output_dir: str | os.PathLike, data: DataFolder) -> list[dict]:
    """label_audit.csv, most doubtful first (by its rank column)."""
    rows = read_review_table(Path(output_dir) / REVIEW_DIR / LABEL_AUDIT, AUDIT_COLUMNS, data.names, ("file_name",))
    try:
        return sorted(rows, key=lambda row: int(row["rank"]))
    except ValueError:
        raise ReviewError(f"{Path(output_dir) / REVIEW_DIR / LABEL_AUDIT}: a rank that is not a whole number") from None


def training_works(output_dir: str | os.PathLike) -> pd.DataFrame:
    """The run's training works (its splits.csv: file_name, tier, artist), the ones a new drawing is set beside."""
    path = Path(output_dir) / SPLITS_CSV
    if not path.is_file():
        raise ReviewError(f"{path}: not found: the run's split names its training works (train the run first)")
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    return rows[rows["split"] == "train"].reset_index(drop=True)


def nearest_by_score(score: float, scores: np.ndarray, count: int = NEAREST) -> np.ndarray:
    """Positions of the `count` training scores nearest `score`, nearest first (ties: the earlier work)."""
    return np.argsort(np.abs(np.asarray(scores, float) - score), kind="stable")[:count]
