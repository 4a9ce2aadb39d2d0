"""The tier model's learnable part: three thresholds on the score, ordered by construction (pipeline/ordinal.py
says how they turn a score into P(tier))."""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

INITIAL_THRESHOLDS = (-1.0, 0.0, 1.0)  # about where a linear head's scores start


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

    @torch.no_grad()
    def place(self, scores: torch.Tensor, ranks: torch.Tensor, *, least_step: float = 1e-3) -> None:
        """Start the thresholds where the scores cut the tiers in their proportions (the score quantiles at the
        cumulative tier shares): wherever a head's scores start (the norm head's are near -16), the ordinal loss
        then begins from a sensible cut rather than spending epochs moving the thresholds there."""
        shares = torch.bincount(ranks.flatten(), minlength=4).cumsum(0)[:3].double() / ranks.numel()
        cuts = torch.quantile(scores.double().flatten(), shares.clamp(0.0, 1.0)).tolist()
        steps = np.maximum(np.diff(cuts), least_step)
        self.first.copy_(torch.tensor(cuts[0]))
        self.steps.copy_(torch.tensor([math.log(math.expm1(s)) for s in steps]))
