"""The label audit: how far each train and val work's given tier is from what the rest of the data implies.

A work's doubt weighs two kinds of evidence about its tier, each read as a likelihood of what was seen under
each of the four tiers, with every other work where the rest of the data put it:

- the teachers' judgements of it (comparisons.csv, train and val works only), on a latent quality scale: a
  judgement is won with probability e + (1 - 2e) sigmoid(d), d the latent difference, where e is the rater's error
  rate (the share of their judgements across tiers that name the lower tier, smoothed, at most one half), and
  tied with probability sqrt(sigmoid(d) sigmoid(-d)); each tier's works are normal about their tier's place on
  that scale. Every other work stands where all the judgements and tiers together put it (so beating a work
  that beats the S works says more than beating a work of tier B), and the work's own judgements are weighed
  over each tier's prior in turn;
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
from scipy.optimize import minimize
from scipy.special import expit, logsumexp

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
# The latent scale's prior, in logits of a judgement: a work of the tier above wins about 99% of the time
# (less the rater's error), and a tier's works spread over about a tier either way.
TIER_GAP, TIER_SD = 4.5, 1.5
LATENT_GRID = 241  # points of the latent scale a work's likelihood is integrated over


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


def judgement_log_likelihood(d: np.ndarray, outcome: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The log-likelihood of judgements of works d apart in latent quality (the first less the second) with the
    given outcomes for the first (1 won, -1 lost, 0 tie) by raters of the given error rates, and its derivative
    in d: a win has probability e + (1 - 2e) sigmoid(d), a tie sqrt(sigmoid(d) sigmoid(-d)) (largest between
    equals, as ties are)."""
    p = expit(d)
    won, lost = error + (1 - 2 * error) * p, error + (1 - 2 * error) * (1 - p)
    slope = (1 - 2 * error) * p * (1 - p)
    tie = 0.5 * (np.log(p) + np.log1p(-p))
    log_likelihood = np.where(outcome > 0, np.log(won), np.where(outcome < 0, np.log(lost), tie))
    return log_likelihood, np.where(outcome > 0, slope / won, np.where(outcome < 0, -slope / lost, 0.5 - p))


def latent_qualities(ranks: np.ndarray, judged: dict, error: np.ndarray) -> np.ndarray:
    """(N,) the works' most likely latent quality given every judgement and every work's tier (the prior: normal
    about rank x TIER_GAP with sd TIER_SD): the scale on which a judgement partner stands where its own
    judgements put it, not at its tier's middle."""
    prior = ranks * TIER_GAP

    def loss(q):
        log_likelihood, slope = judgement_log_likelihood(q[judged["a"]] - q[judged["b"]], judged["outcome"], error)
        grad = (q - prior) / TIER_SD ** 2
        np.add.at(grad, judged["a"], -slope)
        np.add.at(grad, judged["b"], slope)
        return -log_likelihood.sum() + np.sum((q - prior) ** 2) / (2 * TIER_SD ** 2), grad

    return minimize(loss, prior.astype(float), jac=True, method="L-BFGS-B").x


def judgement_evidence(ranks: np.ndarray, judged: dict) -> np.ndarray:
    """(N, 4) the log-likelihood of each work's judgements were it of each tier rank: its judgements' likelihood
    as its latent quality varies, its partners at theirs (latent_qualities), averaged over that tier's prior."""
    evidence = np.zeros((len(ranks), len(CANDIDATES)))
    if len(judged["a"]) == 0:
        return evidence
    error = rater_errors(ranks, judged)
    partner = latent_qualities(ranks, judged, error)
    grid = np.linspace(-4 * TIER_SD, CANDIDATES[-1] * TIER_GAP + 4 * TIER_SD, LATENT_GRID)
    likelihood = np.zeros((len(ranks), len(grid)))
    for work, other, outcome in ((judged["a"], judged["b"], judged["outcome"]),
                                 (judged["b"], judged["a"], -judged["outcome"])):
        np.add.at(likelihood, work, judgement_log_likelihood(grid[None, :] - partner[other][:, None],
                                                             outcome[:, None], error[:, None])[0])
    for tier in CANDIDATES:
        prior = -0.5 * ((grid - tier * TIER_GAP) / TIER_SD) ** 2
        evidence[:, tier] = logsumexp(likelihood + (prior - logsumexp(prior))[None, :], axis=1)
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
