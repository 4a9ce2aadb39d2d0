"""Pairwise ranking metrics computed from one score per image (docs/design.md 6).

A pair is two images of different tiers; it is ranked correctly when the higher tier has the
strictly higher score. Ties count as wrong: a constant model must not score 50%. (The spec's
evaluator, 4.5.1, counts a tie wrong when the pair is written better-first and right when it is
written worse-first; one rule for every pair keeps the number independent of how pairs are written.)
"""

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from data import TIER_RANK, TIERS

TIER_PAIRS = tuple(f"{upper}-{lower}" for i, upper in enumerate(TIERS) for lower in TIERS[i + 1:])  # S-A .. B-C


def tier_ranks(tiers) -> np.ndarray:
    return np.asarray([TIER_RANK[t] for t in tiers], dtype=np.int64)


def pair_loss_terms(gap: torch.Tensor, margin: float, loss: str) -> torch.Tensor:
    """The loss of each pair from its score gap (better minus worse image).

    "margin": the spec's MarginRankingLoss (4.4.3), max(0, margin - gap): zero once a pair is `margin` apart.
    "logistic": RankNet's log(1 + exp(-gap)), the negative log-likelihood of P(better) = sigmoid(gap); it
    never stops pulling pairs apart and matches the logistic calibration of the scores. Ignores `margin`.
    """
    if loss == "margin":
        return torch.clamp(margin - gap, min=0)
    if loss == "logistic":
        return F.softplus(-gap)
    raise ValueError(f"unknown loss {loss!r}, expected 'margin' or 'logistic'")


def in_batch_pair_loss(scores: torch.Tensor, ranks: torch.Tensor, margin: float, loss: str = "margin") -> torch.Tensor:
    """The pair loss (`pair_loss_terms`) averaged over every cross-tier pair among the images of a batch.

    Each image is scored once; a batch of 32 images yields up to 384 pairs instead of 32.
    """
    higher = ranks[:, None] > ranks[None, :]
    if not higher.any():
        return scores.sum() * 0.0  # keeps the graph: accumulate() and DDP expect a backward
    better, worse = torch.nonzero(higher, as_tuple=True)
    return pair_loss_terms(scores[better] - scores[worse], margin, loss).mean()


@torch.no_grad()
def pair_margin_loss(scores: torch.Tensor, ranks: torch.Tensor, margin: float, block: int = 1024,
                     loss: str = "margin") -> float:
    """Mean pair loss (`pair_loss_terms`) over all cross-tier pairs (the validation loss of REQ-S-002).

    Row blocks keep memory at block x N however many images there are.
    """
    scores, ranks = scores.float().flatten(), ranks.flatten()
    loss_sum, pairs = 0.0, 0
    for start in range(0, len(scores), block):
        higher = ranks[start:start + block, None] > ranks[None, :]
        gap = (scores[start:start + block, None] - scores[None, :])[higher]
        loss_sum += pair_loss_terms(gap, margin, loss).sum().item()
        pairs += int(higher.sum())
    if pairs == 0:
        raise ValueError("no cross-tier pairs: every image has the same tier")
    return loss_sum / pairs


def fit_calibration(scores: np.ndarray, tiers: np.ndarray, *, max_pairs: int = 200_000, seed: int = 42) -> dict:
    """Turn scores into what a user reads: P(A better) and a tier hint, fitted on validation images.

    P(A better than B) = sigmoid(slope * (score_A - score_B)): a logistic regression without intercept
    on the cross-tier pairs in both orientations, so P(A>B) + P(B>A) = 1 exactly. Tier cut points are
    the ordered thresholds that hint the most validation images their own tier (fit_tier_cuts).
    """
    from sklearn.linear_model import LogisticRegression

    from data import cross_tier_pairs

    a, b, label = cross_tier_pairs(tiers)
    if len(a) > max_pairs:
        keep = np.random.default_rng(seed).choice(len(a), max_pairs, replace=False)
        a, b, label = a[keep], b[keep], label[keep]
    diff = (scores[a] - scores[b]).astype(np.float64)
    x = np.concatenate([diff, -diff])[:, None]
    y = np.concatenate([label > 0, label < 0])
    slope = float(LogisticRegression(fit_intercept=False, C=1e6).fit(x, y).coef_[0, 0])
    medians = {t: float(np.median(scores[tiers == t])) for t in TIERS if (tiers == t).any()}
    cuts, agreement = fit_tier_cuts(scores, tiers)
    return {"slope": slope, "tier_medians": medians, "tier_cuts": cuts, "tier_hint_agreement": agreement,
            "fitted_on": "val", "pairs": int(len(a)),
            "method": "logistic regression of tier order on score difference, no intercept",
            "tier_cuts_method": "ordered thresholds maximising the validation images hinted their own tier"}


def fit_tier_cuts(scores, tiers) -> tuple[list[dict], float | None]:
    """Ordered cut points (S above A above B above C) that hint the most images their own tier.

    Sorted by score, the images are cut into one run per tier present, lowest tier lowest, each run
    non-empty so that every tier can be hinted; dynamic programming over the cut positions finds the
    runs with the most images of their own tier. Cuts sit halfway between two distinct scores (ties are
    never split). Midpoints of per-tier medians, the obvious rule, are out of order on a weak model and
    then never hint some tier. Returns (cuts from the top, share of images hinted their own tier); no
    cuts and None when there are fewer distinct scores than tiers.
    """
    scores, tiers = np.asarray(scores, dtype=np.float64), np.asarray(tiers)
    present = [t for t in TIERS if (tiers == t).any()]  # highest first
    order = np.argsort(scores, kind="stable")
    ordered_scores, ordered_tiers = scores[order], tiers[order]
    n, ascending = len(scores), present[::-1]
    # cut before position i (1..n-1) only between distinct scores
    allowed = np.concatenate([[False], ordered_scores[1:] > ordered_scores[:-1], [False]])
    if len(present) < 2 or allowed.sum() < len(present) - 1:
        return [], None
    prefix = {t: np.concatenate([[0], np.cumsum(ordered_tiers == t)]) for t in present}
    # best[i]: most matches with the tiers so far covering positions [0, i); cut[j][i]: where run j starts
    best = prefix[ascending[0]].astype(np.float64)
    best[1:][~allowed[1:]] = -np.inf  # the first run ends at an allowed cut (or at n, checked below)
    starts = []
    for tier in ascending[1:]:
        gain = prefix[tier]
        candidate = np.where(allowed, best - gain, -np.inf)  # run `tier` starts at an allowed cut b
        running, running_at = np.maximum.accumulate(candidate), np.zeros(n + 1, np.int64)
        for i in range(1, n + 1):
            running_at[i] = i if candidate[i] >= running[i - 1] else running_at[i - 1]
        shifted = np.concatenate([[-np.inf], running[:-1]])  # b < i: the run is non-empty
        best = np.where(np.isfinite(shifted), gain + shifted, -np.inf)
        best[1:n][~allowed[1:n]] = -np.inf
        starts.append(np.concatenate([[0], running_at[:-1]]))
    if not np.isfinite(best[n]):
        return [], None
    positions, end = [], n
    for start_of in reversed(starts):
        end = int(start_of[end])
        positions.append(end)
    thresholds = [(ordered_scores[p - 1] + ordered_scores[p]) / 2 for p in positions]  # highest cut first
    cuts = [{"above": upper, "below": lower, "threshold": float(threshold)}
            for upper, lower, threshold in zip(present, present[1:], thresholds)]
    return cuts, float(best[n]) / n


def tier_hint(score: float, calibration: dict | None) -> str | None:
    """The tier whose band of validation scores holds `score`; None without a calibration."""
    cuts = (calibration or {}).get("tier_cuts") or []
    if not cuts:
        return None
    return next((cut["above"] for cut in cuts if score >= cut["threshold"]), cuts[-1]["below"])


def p_first_better(score_a: float, score_b: float, calibration: dict) -> float:
    """sigmoid(slope * (score_a - score_b)), as tanh: no overflow far out, and odd, so P(A) + P(B) = 1."""
    return 0.5 * (1.0 + math.tanh(0.5 * calibration["slope"] * (score_a - score_b)))


# ---------------------------------------------------------------- evaluation (one score per image)

def _checked(scores, tiers) -> tuple[np.ndarray, np.ndarray]:
    scores, tiers = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(tiers).ravel()
    if len(scores) != len(tiers):
        raise ValueError(f"{len(scores)} scores but {len(tiers)} tiers")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} of {len(scores)} scores are NaN or infinite")
    unknown = set(tiers.tolist()) - set(TIERS)
    if unknown:
        raise ValueError(f"unknown tier(s) {sorted(unknown)}, expected {TIERS}")
    return scores, tiers


def tier_pair_counts(scores, tiers, weights: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Correctly ranked and total cross-tier pairs per tier pair ("S-A", ...), for the tier pairs present.

    Sorting and searchsorted, O(N log N): no pair is materialised. `weights` (R, N) counts image i
    weights[r, i] times in resample r (the bootstrap); by default every image counts once (R = 1).
    Returns name -> (correct (R,), total (R,)), integers.
    """
    scores, tiers = _checked(scores, tiers)
    weights = np.ones((1, len(scores)), np.int64) if weights is None else np.atleast_2d(weights)
    counts = {}
    for name in TIER_PAIRS:
        upper_tier, lower_tier = name.split("-")
        upper, lower = np.flatnonzero(tiers == upper_tier), np.flatnonzero(tiers == lower_tier)
        if len(upper) == 0 or len(lower) == 0:
            continue
        lower = lower[np.argsort(scores[lower], kind="stable")]
        # side="left": lower-tier images scored strictly below; an equal score is not below, so a tie is wrong
        below = np.searchsorted(scores[lower], scores[upper], side="left")
        cumulative = np.concatenate([np.zeros((len(weights), 1), weights.dtype),
                                     np.cumsum(weights[:, lower], axis=1)], axis=1)
        correct = (weights[:, upper] * cumulative[:, below]).sum(axis=1)
        total = weights[:, upper].sum(axis=1) * weights[:, lower].sum(axis=1)
        counts[name] = (correct, total)
    return counts


def pairwise_accuracy(scores, tiers) -> tuple[float, int]:
    """Spec 4.5.1 over all cross-tier pairs, from one score per image. Returns (accuracy, pairs).

    Raises ValueError when there is no cross-tier pair: the accuracy is undefined, not 0 or 1.
    """
    scores, tiers = _checked(scores, tiers)
    counts = tier_pair_counts(scores, tiers)
    correct = sum(int(c[0]) for c, _ in counts.values())
    pairs = sum(int(t[0]) for _, t in counts.values())
    if pairs == 0:
        present = sorted(set(tiers.tolist()), key=TIERS.index)
        raise ValueError(f"no cross-tier pairs among {len(scores)} images (tiers present: {present}): "
                         "pairwise accuracy is undefined")
    return correct / pairs, pairs


def per_tier_pair_accuracy(scores, tiers) -> dict[str, tuple[float, int]]:
    """Accuracy and pair count per tier pair present, in TIER_PAIRS order; adjacent tiers are the hard ones."""
    return {name: (int(c[0]) / int(t[0]), int(t[0])) for name, (c, t) in tier_pair_counts(scores, tiers).items()}


def rank_correlations(scores, tiers) -> tuple[float, float]:
    """Kendall tau-b and Spearman rho between score and tier; NaN when either is constant."""
    from scipy.stats import kendalltau, spearmanr

    scores, tiers = _checked(scores, tiers)
    ranks = tier_ranks(tiers)
    if len(scores) < 2 or np.ptp(scores) == 0 or np.ptp(ranks) == 0:
        return float("nan"), float("nan")
    return float(kendalltau(scores, ranks).statistic), float(spearmanr(scores, ranks).statistic)


def artist_bootstrap_ci(scores, tiers, artists, *, resamples: int, seed: int, level: float = 0.95,
                        chunk: int = 250) -> tuple[float, float]:
    """Percentile confidence interval of the pairwise accuracy, resampling artists with replacement.

    Pairs share images and images share artists, so pairs are far from independent: resampling pairs
    gives falsely narrow intervals. Each resample draws as many artists as there are, with replacement,
    and recomputes the accuracy over all their images (an artist drawn twice counts twice). Resamples
    with no cross-tier pair (one artist of one tier drawn every time) are left out.
    """
    if resamples < 1:
        raise ValueError(f"bootstrap needs at least 1 resample, got {resamples}")
    names, artist_of = np.unique(np.asarray(artists), return_inverse=True)
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    accuracies = []
    for start in range(0, resamples, chunk):
        block = draws[start:start + chunk]
        drawn = np.zeros((len(block), len(names)), np.int64)
        np.add.at(drawn, (np.arange(len(block))[:, None], block), 1)
        counts = tier_pair_counts(scores, tiers, drawn[:, artist_of]).values()
        correct, total = sum(c for c, _ in counts), sum(t for _, t in counts)
        accuracies.append(correct[total > 0] / total[total > 0])
    accuracies = np.concatenate(accuracies)
    if len(accuracies) == 0:
        raise ValueError("no bootstrap resample holds a cross-tier pair")
    low, high = np.quantile(accuracies, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def spec_pairwise_accuracy(score_pair: Callable[[str, str], tuple[float, float]],
                           pairs: Iterable[tuple[str, str, int]]) -> float:
    """The spec's evaluator (4.5.1) as written: the model scores both images of every pair.

    `score_pair(id_a, id_b)` returns (score_a, score_b), e.g. two backbone passes; label is 1 when
    id_a's tier is higher, else -1. O(pairs) model calls, where pairwise_accuracy needs one score per
    image (docs/design.md 6); kept as the reference the fast metrics are tested against.
    """
    correct = total = 0
    for id_a, id_b, label in pairs:
        score_a, score_b = score_pair(id_a, id_b)
        prediction = 1 if score_a > score_b else -1
        correct += int(prediction == label)
        total += 1
    if total == 0:
        raise ValueError("no pairs to evaluate")
    return correct / total
