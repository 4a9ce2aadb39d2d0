"""The label audit: how far each train and val work's given tier is from what the rest of the data implies.

A work's doubt is read under the fold head that never saw its artist (pipeline/out_of_fold.py): among the
works of other artists (train and val) of another tier, the share that this head orders against the labels,
each weighted by how many tiers apart the two labels are (a C-labelled work scored above the S works weighs
three times one scored above the B works); an equal score counts half. 0 means every such work falls on the
side its label says, 1 that every one falls on the other side. The ranking is by doubt, most doubtful first.
"""

import numpy as np
import pandas as pd

from .ordinal import TIERS_WORST_FIRST
from .out_of_fold import FoldHeads
from .tables import TIERS, tier_ranks

# The contract of label_audit.csv (the review page reads these columns by name); more may follow them.
LABEL_AUDIT, AUDIT_SHEET = "label_audit.csv", "label_audit.png"  # the table, and its most doubtful works
AUDIT_COLUMNS = ("rank", "file_name", "image_id", "artist", "split", "tier", "oof_score", "hint", "p_S", "p_A", "p_B",
                 "p_C", "doubt")


def doubts(heads: FoldHeads, tiers: np.ndarray, artists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) each work's doubt (see the module's docstring) and (N,) how many works of other artists of another
    tier it was compared with."""
    ranks, artists = tier_ranks(tiers), np.asarray(artists, dtype=object)
    doubt, compared = np.full(len(ranks), np.nan), np.zeros(len(ranks), np.int64)
    for fold in range(len(heads.scores)):
        rows = np.flatnonzero(heads.fold_of == fold)
        scores = heads.scores[fold]  # one head's scores: scales differ between heads
        apart = ranks[None, :] - ranks[rows, None]  # > 0: the other work's label is the higher
        weight = np.abs(apart) * (artists[None, :] != artists[rows, None])
        # against the labels: the other work scores on the side its label denies; a tie is half of that
        against = (np.sign(apart) * (scores[None, :] - scores[rows, None]) < 0) + 0.5 * (scores[None, :] == scores[
            rows, None])
        total = weight.sum(axis=1)
        doubt[rows] = np.divide((weight * against).sum(axis=1), total, out=np.full(len(rows), np.nan),
                                where=total > 0)
        compared[rows] = (weight > 0).sum(axis=1)
    return doubt, compared


def audit_table(rows: pd.DataFrame, heads: FoldHeads) -> pd.DataFrame:
    """label_audit.csv's rows for the train+val works `rows` (file_name, image_id, artist, split, tier, in the
    order the heads were fitted on), most doubtful first; equal doubts in image_id order."""
    tiers = rows["tier"].to_numpy(object)
    doubt, compared = doubts(heads, tiers, rows["artist"].to_numpy(object))
    table = rows[["file_name", "image_id", "artist", "split", "tier"]].reset_index(drop=True)
    table["oof_score"] = heads.out_of_fold().astype(np.float32)
    table["hint"] = heads.hints()
    distribution = heads.tier_distribution()
    for tier in TIERS:
        table[f"p_{tier}"] = np.nan if distribution is None else distribution[:, TIERS_WORST_FIRST.index(tier)]
    table["doubt"] = doubt
    table["compared"], table["fold"] = compared, heads.fold_of
    table = table.sort_values(["doubt", "image_id"], ascending=[False, True], na_position="last", kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)[list(AUDIT_COLUMNS) + ["compared", "fold"]]


def audit_summary(table: pd.DataFrame, *, count: int = 10) -> list[str]:
    """What the console shows: the most doubtful works, and how often the hint agrees with the given tier."""
    agree = (table["hint"] == table["tier"]).mean()
    lines = [f"{len(table)} train+val works audited; the out-of-fold hint names the given tier for {agree:.1%}",
             "most doubtful (rank, file, given tier -> hint, doubt):"]
    lines += [f"  {r.rank:4d}  {r.file_name}  {r.tier} -> {r.hint or '?'}  {r.doubt:.3f}"
              for r in table.head(count).itertuples()]
    return lines
