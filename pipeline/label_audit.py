"""The label audit: how far each train and val work's given tier is from what the rest of the data implies.

A work's doubt weighs two kinds of evidence about its tier, each read as a likelihood of what was seen under
each of the four tiers, with every other work taken at its given tier:

- the teachers' judgements of it (comparisons.csv, train and val works only): a judgement against a work of
  a lower tier is won with probability 1 - e, against a higher one with probability e, and within one tier
  either way alike, where e is the rater's error rate (the share of their judgements across tiers that name
  the lower tier, smoothed, at most one half); a tie has the rate ties have between works that many tiers
  apart, measured on the same judgements (smoothed towards the rate among all of them);
- its out-of-fold score (pipeline/out_of_fold.py): normal about the mean score of each tier, with one spread,
  both measured on the works of other artists that the same head also never trained on (its held-out and its
  stopping fold); a head with a tier missing from those works gives no such evidence.

doubt = log(mean over the three other tiers of their likelihood / the given tier's likelihood), in nats: 0
when the other tiers, taken as equally likely, explain the evidence as well as the given one on average; > 0
when they explain it better. More evidence makes it larger either way, so a work judged often against its
label outranks one with one odd judgement. The ranking is by doubt, most doubtful first.
"""

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from .comparisons import index_pairs
from .ordinal import TIERS_WORST_FIRST
from .out_of_fold import FoldHeads
from .selection import fold_roles
from .tables import TIERS, tier_ranks

# The contract of label_audit.csv (the review page reads these columns by name); more may follow them.
LABEL_AUDIT, AUDIT_SHEET = "label_audit.csv", "label_audit.png"  # the table, and its most doubtful works
AUDIT_COLUMNS = ("rank", "file_name", "image_id", "artist", "split", "tier", "oof_score", "hint", "p_S", "p_A", "p_B",
                 "p_C", "doubt")
CANDIDATES = np.arange(len(TIERS))  # tier ranks, as tables.tier_ranks gives them


def rater_errors(ranks: np.ndarray, judged: dict) -> np.ndarray:
    """Per judgement, its rater's error rate: (wrong + 1) / (across-tier judgements + 2), at most 1/2 (a rater
    who disagrees with the labels more often than not says nothing, rather than the opposite)."""
    apart = np.sign(ranks[judged["a"]] - ranks[judged["b"]])
    counted = (apart != 0) & (judged["outcome"] != 0)
    errors = {}
    for rater in np.unique(judged["rater"]):
        own = counted & (judged["rater"] == rater)
        errors[rater] = min((np.sum(own & (apart * judged["outcome"] < 0)) + 1) / (own.sum() + 2), 0.5)
    return np.array([errors[rater] for rater in judged["rater"]], dtype=float)


def tie_rates(ranks: np.ndarray, judged: dict) -> np.ndarray:
    """(4,) the share of ties among judgements of works 0, 1, 2 and 3 tiers apart, each drawn towards the share
    among all of them ((ties + 1) / (judgements + 2)) by two judgements' worth: a distance seldom judged has
    about the overall rate, not a guess of one half."""
    apart = np.abs(ranks[judged["a"]] - ranks[judged["b"]])
    ties = judged["outcome"] == 0
    overall = (ties.sum() + 1) / (len(ties) + 2)
    return np.array([(np.sum(ties & (apart == d)) + 2 * overall) / (np.sum(apart == d) + 2) for d in CANDIDATES])


def judgement_evidence(ranks: np.ndarray, judged: dict) -> np.ndarray:
    """(N, 4) the log-likelihood of each work's judgements were it of each tier rank (see the module's docstring)."""
    evidence = np.zeros((len(ranks), len(CANDIDATES)))
    if len(judged["a"]) == 0:
        return evidence
    error, ties = rater_errors(ranks, judged), tie_rates(ranks, judged)
    for work, other, outcome in ((judged["a"], judged["b"], judged["outcome"]),
                                 (judged["b"], judged["a"], -judged["outcome"])):
        for tier in CANDIDATES:
            above = tier - ranks[other]  # > 0: were the work of this tier, it would be the better one
            won = np.where(above == 0, 0.5, np.where(np.sign(above) * outcome > 0, 1 - error, error))
            tie = ties[np.abs(above)]
            np.add.at(evidence[:, tier], work, np.log(np.where(outcome == 0, tie, (1 - tie) * won)))
    return evidence


def score_evidence(heads: FoldHeads, ranks: np.ndarray, artists: np.ndarray) -> np.ndarray:
    """(N, 4) the log-likelihood of each work's out-of-fold score were it of each tier rank (normal, see the
    module's docstring); 0 for the works of a head that cannot measure every tier's mean."""
    evidence, folds = np.zeros((len(ranks), len(CANDIDATES))), len(heads.scores)
    for fold in range(folds):
        unseen = np.isin(heads.fold_of, fold_roles(fold, folds))  # held out by this head, or only stopped on
        scores = heads.scores[fold]
        for work in np.flatnonzero(heads.fold_of == fold):
            reference = unseen & (artists != artists[work])
            counts = np.bincount(ranks[reference], minlength=len(CANDIDATES))
            if (counts < 2).any():
                continue
            means = np.bincount(ranks[reference], weights=scores[reference], minlength=len(CANDIDATES)) / counts
            spread = np.std(scores[reference] - means[ranks[reference]])
            if spread > 0:
                evidence[work] = -0.5 * ((scores[work] - means) / spread) ** 2
    return evidence


def doubts(heads: FoldHeads, rows: pd.DataFrame, comparisons: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(N,) each work's doubt (see the module's docstring) and (N,) how many judgements of it were read; `rows`
    are the train+val works in the heads' order, `comparisons` those of comparisons.csv among them."""
    ranks = tier_ranks(rows["tier"].to_numpy(object))
    judged = index_pairs(comparisons, rows["image_id"].to_numpy(object), "pooled")
    evidence = judgement_evidence(ranks, judged) + score_evidence(heads, ranks, rows["artist"].to_numpy(object))
    given = evidence[np.arange(len(ranks)), ranks]
    others = np.where(CANDIDATES[None, :] == ranks[:, None], -np.inf, evidence)
    doubt = logsumexp(others, axis=1) - np.log(len(CANDIDATES) - 1) - given
    return doubt, np.bincount(np.concatenate([judged["a"], judged["b"]]), minlength=len(ranks))


def audit_table(rows: pd.DataFrame, heads: FoldHeads, comparisons: pd.DataFrame) -> pd.DataFrame:
    """label_audit.csv's rows for the train+val works `rows` (file_name, image_id, artist, split, tier, in the
    order the heads were fitted on) and their comparisons, most doubtful first; equal doubts in image_id order."""
    doubt, judged = doubts(heads, rows, comparisons)
    table = rows[["file_name", "image_id", "artist", "split", "tier"]].reset_index(drop=True)
    table["oof_score"] = heads.out_of_fold().astype(np.float32)
    table["hint"] = heads.hints()
    distribution = heads.tier_distribution()
    for tier in TIERS:
        table[f"p_{tier}"] = np.nan if distribution is None else distribution[:, TIERS_WORST_FIRST.index(tier)]
    table["doubt"] = doubt
    table["judged"], table["fold"] = judged, heads.fold_of
    table = table.sort_values(["doubt", "image_id"], ascending=[False, True], na_position="last", kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)[list(AUDIT_COLUMNS) + ["judged", "fold"]]


def audit_summary(table: pd.DataFrame, *, count: int = 10) -> list[str]:
    """What the console shows: the most doubtful works, and how often the hint agrees with the given tier."""
    agree = (table["hint"] == table["tier"]).mean()
    lines = [f"{len(table)} train+val works audited; the out-of-fold hint names the given tier for {agree:.1%}",
             "most doubtful (rank, file, given tier -> hint, doubt in nats, judgements of it):"]
    lines += [f"  {r.rank:4d}  {r.file_name}  {r.tier} -> {r.hint or '?'}  {r.doubt:+.2f}  {r.judged}"
              for r in table.head(count).itertuples()]
    return lines
