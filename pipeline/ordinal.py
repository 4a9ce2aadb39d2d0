"""The tier model: a cumulative-link (ordered logit) reading of the score as a distribution over the tiers.

With the tiers ordered worst to best (C, B, A, S: ranks 0 to 3) and three ordered thresholds t_0 < t_1 < t_2,

    P(rank <= k | score) = sigmoid(t_k - score),   k = 0, 1, 2;   P(rank <= 3) = 1,

so P(C), P(B), P(A), P(S) are the differences of consecutive cumulative probabilities: they sum to one, and a
higher score moves mass towards S. The score is the same score that ranks and compares images, so pairs,
ranking, the ONNX graph and its output stay as they are; a tier model adds three numbers to the head.
The thresholds are kept ordered by construction: t_0 is free and each next one adds softplus(step) > 0, so
no optimiser step can cross them. (CORN would need a second output per tier beside the score; the
cumulative link keeps one score, which is what every other part of artrank reads.)
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .tables import TIER_RANK

TIERS_WORST_FIRST = tuple(sorted(TIER_RANK, key=TIER_RANK.get))  # ("C", "B", "A", "S"): rank order
INITIAL_THRESHOLDS = (-1.0, 0.0, 1.0)  # about where a linear head's scores start


def is_tier_model(cfg) -> bool:
    """Whether the config trains a tier model: the ordinal loss alone, or added to a pair loss."""
    return cfg.loss == "ordinal" or cfg.ordinal_weight > 0


class TierThresholds(nn.Module):
    """The ordered thresholds of the cumulative link: the first, then positive (softplus) increments."""

    def __init__(self, initial=INITIAL_THRESHOLDS):
        super().__init__()
        steps = np.diff(initial)
        self.first = nn.Parameter(torch.tensor(float(initial[0])))
        # the inverse of softplus, so the thresholds start where `initial` says
        self.steps = nn.Parameter(torch.tensor([math.log(math.expm1(s)) for s in steps], dtype=torch.float32))

    def forward(self) -> torch.Tensor:
        return torch.cat([self.first[None], self.first + torch.cumsum(F.softplus(self.steps), dim=0)])


def tier_probabilities(scores, thresholds) -> np.ndarray:
    """P(tier) per score, (N, 4) in TIERS_WORST_FIRST order, from the score and the three thresholds.

    numpy alone: an export's reader (onnxruntime, Pillow, numpy) computes it as the checkpoint's does.
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
