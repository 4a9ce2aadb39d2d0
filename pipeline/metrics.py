"""Pairwise ranking metrics computed from one score per image, and the spec's gates.

Every cross-tier pair is compared from the scores by sorting, O(N log N), with no pair materialised: the
spec's evaluator (4.5.1) runs the model on both images of every pair instead.

A pair is two images of different tiers; it is ranked correctly when the higher tier has the
strictly higher score. Ties count as wrong: a constant model must not score 50%. (The spec's
evaluator, 4.5.1, counts a tie wrong when the pair is written better-first and right when it is
written worse-first; one rule for every pair keeps the number independent of how pairs are written.)
"""

from collections.abc import Callable, Iterable

import numpy as np

from .tables import TIER_PAIRS, TIERS, tier_ranks

# The spec's acceptance (4.5.2), per split: test and val at least, train at most (over-fitting).
GATES = {"test": (">=", 0.60), "val": (">=", 0.62), "train": ("<=", 0.80)}
GATE_MEANINGS = {"test": "the works of artists never seen rank well enough to use",
                 "val": "the same on the artists that chose the checkpoint",
                 "train": "at most: above it the head has learnt its training artists rather than drawing"}


def gates_legend() -> str:
    """What the gates are and where they come from, in one line."""
    return ("gates: the requirements' acceptance targets; " + "; ".join(
        f"{split} {op} {bound:.2f}: {GATE_MEANINGS[split]}" for split, (op, bound) in GATES.items()))


def gate_results(accuracy_by_split: dict[str, float]) -> dict[str, dict]:
    """The spec's gate of each split present: its target, the value and whether it passes."""
    return {split: dict(target=f"{op} {bound:.2f}", value=accuracy_by_split[split],
                        passed=accuracy_by_split[split] >= bound if op == ">=" else accuracy_by_split[split] <= bound)
            for split, (op, bound) in GATES.items() if split in accuracy_by_split}


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


def artist_draws(artists, *, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The one artist bootstrap: how often each artist is drawn in each resample, (resamples, artists), and the
    artist of each item as a column of it. Each resample draws as many artists as there are, with replacement;
    every interval of artrank weights its items by these counts, so an artist drawn twice counts twice."""
    if resamples < 1:
        raise ValueError(f"bootstrap needs at least 1 resample, got {resamples}")
    names, artist_of = np.unique(np.asarray(artists), return_inverse=True)
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    drawn = np.zeros((resamples, len(names)), np.int64)
    np.add.at(drawn, (np.arange(resamples)[:, None], draws), 1)
    return drawn, artist_of


def percentile_interval(values, level: float = 0.95) -> list[float] | list[None]:
    """The percentile interval of bootstrap values, NaN left out; [None, None] when none is finite."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return [None, None]
    return [float(v) for v in np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])]


def artist_bootstrap_ci(scores, tiers, artists, *, resamples: int, seed: int, level: float = 0.95,
                        chunk: int = 250) -> tuple[float, float]:
    """Percentile confidence interval of the pairwise accuracy, resampling artists with replacement.

    Pairs share images and images share artists, so pairs are far from independent: resampling pairs
    gives falsely narrow intervals. Each resample (artist_draws) recomputes the accuracy over all the drawn
    artists' images (an artist drawn twice counts twice). Resamples with no cross-tier pair (one artist of
    one tier drawn every time) are left out.
    """
    drawn, artist_of = artist_draws(artists, resamples=resamples, seed=seed)
    accuracies = []
    for start in range(0, resamples, chunk):
        counts = tier_pair_counts(scores, tiers, drawn[start:start + chunk][:, artist_of]).values()
        correct, total = sum(c for c, _ in counts), sum(t for _, t in counts)
        accuracies.append(correct[total > 0] / total[total > 0])
    accuracies = np.concatenate(accuracies)
    if len(accuracies) == 0:
        raise ValueError("no bootstrap resample holds a cross-tier pair")
    low, high = percentile_interval(accuracies, level)
    return low, high


def spec_pairwise_accuracy(score_pair: Callable[[str, str], tuple[float, float]],
                           pairs: Iterable[tuple[str, str, int]]) -> float:
    """The spec's evaluator (4.5.1) as written: the model scores both images of every pair.

    `score_pair(id_a, id_b)` returns (score_a, score_b), e.g. two backbone passes; label is 1 when
    id_a's tier is higher, else -1. O(pairs) model calls, where pairwise_accuracy needs one score per
    image; kept as the reference the fast metrics are tested against.
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
