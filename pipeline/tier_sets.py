"""Tier sets with a coverage guarantee: split conformal prediction, its threshold fitted on the validation split.

Each image gets a run of adjacent tiers (e.g. {A, B}) that holds its teachers' tier with probability at least
1 - alpha (`conformal_alpha`). The guarantee is MARGINAL: over images drawn like the validation and test
artists' images, not for each tier, artist or image; it needs the validation and test images to be
exchangeable (artists drawn alike for both splits) and nothing fitted on them besides the threshold.

A nonconformity per image and tier says how badly the tier fits the score; it is fixed before the validation
split is looked at:
- "band" (every head): how far the score lies outside the tier's band, the quartiles of the TRAINING split's
  scores of that tier, the best tier's band open above and the worst's open below (bands fitted on
  validation would make the validation images fit their own bands better than test images do, and the
  guarantee would be lost);
- "probability" (a tier model): 1 - P(tier | score) of pipeline/ordinal.py.
The threshold is the ceil((n + 1)(1 - alpha))-th smallest nonconformity of the n validation images at their
own tier (None, every tier, when that rank exceeds n); a set holds the tiers within it, extended to the span
between its best and worst tier (adjacent tiers only), and to the best-fitting tier when none is within it:
both only add tiers, which keeps the coverage.
"""

import math

import numpy as np

from .metrics import artist_draws, percentile_interval
from .ordinal import TIERS_WORST_FIRST, tier_probabilities
from .tables import TIERS

TIER_SET_QUANTILES = (0.25, 0.75)  # the band of a tier: its training scores' quartiles


def tier_set_rule(train_scores, train_tiers, thresholds=None) -> dict:
    """The nonconformity, fixed from the training split alone: the tier model's P(tier) when there are
    `thresholds`, else each tier's band of training scores."""
    if thresholds is not None:
        return {"method": "probability", "thresholds": [float(t) for t in thresholds],
                "nonconformity": "1 - P(tier | score) of the tier model"}
    scores, tiers = np.asarray(train_scores, dtype=np.float64), np.asarray(train_tiers)
    bands = {t: [float(q) for q in np.quantile(scores[tiers == t], TIER_SET_QUANTILES)]
             for t in TIERS if (tiers == t).any()}
    return {"method": "band", "bands": bands,
            "nonconformity": "how far the score lies outside the tier's band (the quartiles of the training "
                             "split's scores of that tier); a tier without training images never fits"}


def nonconformity(scores, rule: dict) -> np.ndarray:
    """(N, 4) in TIERS order (S first): how badly each tier fits each score."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    if rule["method"] == "probability":
        worst_first = tier_probabilities(scores, rule["thresholds"])
        return 1.0 - worst_first[:, [TIERS_WORST_FIRST.index(t) for t in TIERS]]
    present = [t for t in TIERS if t in rule["bands"]]
    low = np.array([rule["bands"][t][0] if t in rule["bands"] else np.nan for t in TIERS])
    high = np.array([rule["bands"][t][1] if t in rule["bands"] else np.nan for t in TIERS])
    # A score above every band is no evidence against the best tier, nor one below them against the worst.
    high[TIERS.index(present[0])], low[TIERS.index(present[-1])] = np.inf, -np.inf
    outside = np.maximum(np.maximum(low[None, :] - scores, scores - high[None, :]), 0.0)
    return np.where(np.isnan(outside), np.inf, outside)


def conformal_threshold(values, alpha: float) -> tuple[float | None, int]:
    """The split conformal threshold of calibration values: their ceil((n + 1)(1 - alpha))-th smallest, and that
    rank; None when the rank exceeds n (too few values for alpha)."""
    rank = math.ceil((len(values) + 1) * (1 - alpha))
    return (float(np.sort(np.asarray(values))[rank - 1]) if rank <= len(values) else None), rank


def fit_tier_sets(val_scores, val_tiers, rule: dict, *, alpha: float) -> dict:
    """The split conformal threshold of `rule` on the validation images, with what it was fitted on."""
    tiers = np.asarray(val_tiers)
    own = nonconformity(val_scores, rule)[np.arange(len(tiers)), [TIERS.index(t) for t in tiers]]
    threshold, rank = conformal_threshold(own, alpha)
    threshold = threshold if threshold is not None and math.isfinite(threshold) else None  # None: every tier
    return rule | {"alpha": float(alpha), "threshold": threshold, "fitted_on": "val", "n": int(len(own)),
                   "rank": rank, "guarantee": f"marginal: P(true tier in set) >= {1 - alpha:g} over images drawn "
                                              "like the validation images; not per tier, artist or image"}


def tier_sets(scores, fitted: dict) -> list[tuple[str, ...]]:
    """The tier set of each score: adjacent tiers, best first (e.g. ("A", "B"))."""
    misfit = nonconformity(scores, fitted)
    inside = np.ones_like(misfit, bool) if fitted["threshold"] is None else misfit <= fitted["threshold"]
    inside[np.arange(len(misfit)), np.argmin(misfit, axis=1)] = True  # never empty: the best-fitting tier
    sets = []
    for row in inside:
        held = np.flatnonzero(row)
        sets.append(tuple(TIERS[held[0]:held[-1] + 1]))  # the span: adjacent tiers only
    return sets


def tier_set_report(scores, tiers, artists, fitted: dict, *, resamples: int, seed: int, level: float = 0.95) -> dict:
    """On one split: how often the set holds the true tier (with its artist bootstrap interval), the mean set
    size, and the coverage per tier."""
    tiers = np.asarray(tiers)
    sets = tier_sets(scores, fitted)
    covered = np.array([t in s for t, s in zip(tiers, sets)], dtype=np.float64)
    size = np.array([len(s) for s in sets], dtype=np.float64)
    drawn, artist_of = artist_draws(artists, resamples=resamples, seed=seed)
    weights = drawn[:, artist_of].astype(np.float64)
    per_tier = {t: (float(covered[tiers == t].mean()), int((tiers == t).sum())) for t in TIERS if (tiers == t).any()}
    return dict(alpha=fitted["alpha"], target=1 - fitted["alpha"], method=fitted["method"],
                coverage=float(covered.mean()), coverage_ci95=percentile_interval(weights @ covered / weights.sum(1),
                                                                                  level),
                mean_set_size=float(size.mean()), n_images=int(len(tiers)),
                per_tier_coverage={t: c for t, (c, _) in per_tier.items()},
                per_tier_n={t: n for t, (_, n) in per_tier.items()},
                set_sizes={str(k): int((size == k).sum()) for k in range(1, len(TIERS) + 1)},
                guarantee=fitted["guarantee"])


def tier_set_summary(report: dict | None) -> str | None:
    """One line: coverage with its interval against the target, the mean set size and the coverage per tier."""
    if not report:
        return None
    low, high = report["coverage_ci95"]
    interval = "" if low is None else f" [{low:.3f}, {high:.3f}]"
    per_tier = " | ".join(f"{t} {c:.3f} ({report['per_tier_n'][t]})" for t, c in report["per_tier_coverage"].items())
    return (f"tier sets (alpha {report['alpha']:g}, {report['method']}): coverage {report['coverage']:.3f}{interval} "
            f"(target >= {report['target']:g}, marginal), mean set size {report['mean_set_size']:.2f}; per tier: "
            f"{per_tier}")


def shown_set(tiers: tuple[str, ...] | None) -> str:
    """A tier set as a teacher reads it: {A,B}; "-" without one."""
    return "{" + ",".join(tiers) + "}" if tiers else "-"
