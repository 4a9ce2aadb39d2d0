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
        """Start where a score that says nothing yet would put the thresholds: t_k = mean score +
        logit(share of the images of rank <= k), so that P(tier) starts as the tiers' shares. Wherever a
        head's scores start (the norm head's near -16), the ordinal loss then begins from the tier shares rather
        than spending epochs moving the thresholds there; quantiles of the first scores would pack the
        thresholds as close as those scores, which start a few hundredths apart."""
        shares = torch.bincount(ranks.flatten(), minlength=4).cumsum(0)[:3].double() / ranks.numel()
        shares = shares.clamp(1e-3, 1 - 1e-3)  # a tier with no image gets a finite threshold
        cuts = (scores.double().mean() + torch.logit(shares)).tolist()
        steps = np.maximum(np.diff(cuts), least_step)
        self.first.copy_(torch.tensor(cuts[0]))
        self.steps.copy_(torch.tensor([math.log(math.expm1(s)) for s in steps]))
