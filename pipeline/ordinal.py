"""The tier model: a cumulative-link (ordered logit) reading of the score as a distribution over the tiers.

With the tiers ordered worst to best (C, B, A, S: ranks 0 to 3) and three ordered thresholds t_0 < t_1 < t_2,

    P(rank <= k | score) = sigmoid(t_k - score),   k = 0, 1, 2;   P(rank <= 3) = 1,

so P(C), P(B), P(A), P(S) are the differences of consecutive cumulative probabilities: they sum to one, and a
higher score moves mass towards S. The score is the same score that ranks and compares images, so pairs,
ranking, the ONNX graph and its output stay as they are; a tier model adds three numbers to the head.
The thresholds are kept ordered by construction: t_0 is free and each next one adds softplus(step) > 0, so
no optimiser step can cross them (pipeline/tier_head.py). CORN would need an output per tier beside the score;
the cumulative link keeps one score, which is what every other part of artrank reads.
"""

import numpy as np

from .tables import TIER_RANK

TIERS_WORST_FIRST = tuple(sorted(TIER_RANK, key=TIER_RANK.get))  # ("C", "B", "A", "S"): rank order


def is_tier_model(cfg) -> bool:
    """Whether the config trains a tier model: the ordinal loss alone, or added to a pair loss."""
    return cfg.loss == "ordinal" or cfg.ordinal_weight > 0


def tier_probabilities(scores, thresholds) -> np.ndarray:
    """P(tier) per score, (N, 4) in TIERS_WORST_FIRST order, from the score and the three thresholds.

    numpy alone, no torch: an export's reader (onnxruntime, Pillow, numpy) computes it as the checkpoint's does.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    cumulative = 1.0 / (1.0 + np.exp(-(np.asarray(thresholds, dtype=np.float64)[None, :] - scores)))
    cumulative = np.concatenate([np.zeros((len(scores), 1)), cumulative, np.ones((len(scores), 1))], axis=1)
    return np.diff(cumulative, axis=1)


def most_likely_tier(probabilities: np.ndarray) -> np.ndarray:
    """The tier of highest probability per row (the first of equals, from C)."""
    return np.asarray(TIERS_WORST_FIRST, dtype=object)[np.argmax(probabilities, axis=1)]


def tier_table(scores, thresholds) -> list[dict[str, float]]:
    """P(tier) per score as {tier: probability}, best tier first: what predict.py and the API show."""
    return [{tier: float(p[TIERS_WORST_FIRST.index(tier)]) for tier in reversed(TIERS_WORST_FIRST)}
            for p in tier_probabilities(scores, thresholds)]


def tier_model_description(thresholds: list[float] | None) -> dict | None:
    """model.json's "tier_model": what a reader needs to turn a score into P(tier), or None."""
    if thresholds is None:
        return None
    return {"thresholds": [float(t) for t in thresholds], "tiers": list(TIERS_WORST_FIRST),
            "meaning": "P(tier <= tiers[k]) = sigmoid(thresholds[k] - score), tiers worst first; "
                       "P(tier) = the difference of consecutive cumulative probabilities"}
