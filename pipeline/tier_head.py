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
