"""Backbone and heads as one module: preprocessed pixels in, the score and what goes with it out.

`ArtRanker` is what prediction and the export run: the frozen backbone, the chosen checkpoint's head and,
when the run has them, the top-k checkpoints' heads (`members`, the score's spread) and the training features
(`nearest`, the image's novelty: pipeline/novelty.py), all from one backbone pass. `readout` gives the values
in scoring.READOUT order, as many as the ranker has; the ONNX export's outputs are the same, by the same names.
"""

import torch
from torch import nn

from .backbones import DinoFeatureExtractor
from .scoring import READOUT


def select_features(cls_token: torch.Tensor, mean_patch: torch.Tensor, feature: str) -> torch.Tensor:
    """The head's input: the spec's CLS token, or CLS + mean patch token (DINOv2's linear-probe input)."""
    return cls_token if feature == "cls" else torch.cat([cls_token, mean_patch], dim=-1)


def score_spread(heads, features: torch.Tensor) -> torch.Tensor:
    """Per row, the population standard deviation of the heads' scores (exactly 0 for identical heads)."""
    return torch.stack([head(features) for head in heads]).std(dim=0, correction=0)


class NearestTraining(nn.Module):
    """features (B, D) -> novelty (B,): the cosine distance to the nearest training feature, both taken about
    the training features' mean (what every feature shares says nothing about how alike two drawings are)."""

    def __init__(self, mean: torch.Tensor, reference: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)  # (D,)
        self.register_buffer("reference", reference)  # (N, D): the training features less the mean, unit length

    @classmethod
    def fit(cls, train_features: torch.Tensor) -> "NearestTraining":
        mean = train_features.float().mean(dim=0)
        return cls(mean, unit_rows(train_features - mean))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return 1.0 - (unit_rows(features - self.mean) @ self.reference.T).amax(dim=-1)


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(features.float(), dim=-1)


class ArtRanker(nn.Module):
    """Backbone + head: pixels (B, 3, S, S) -> score (B,); `readout` adds the spread over `members` (two or more
    heads) and the novelty against `nearest`."""

    def __init__(self, extractor: DinoFeatureExtractor, head: nn.Module, feature: str, members=(),
                 nearest: NearestTraining | None = None):
        super().__init__()
        self.extractor, self.head, self.feature = extractor, head.eval(), feature
        self.members = nn.ModuleList(member.eval() for member in members)
        self.nearest = nearest

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(select_features(*self.extractor(pixel_values), self.feature))

    @property
    def readout_names(self) -> tuple[str, ...]:
        """The names of `readout`'s columns: score, then score_sd and novelty where the ranker has them."""
        has = {"score": True, "score_sd": len(self.members) >= 2, "novelty": self.nearest is not None}
        return tuple(name for name in READOUT if has[name])

    def readout(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, len(readout_names)): the head's score, the members' spread, the novelty; one backbone pass."""
        features = select_features(*self.extractor(pixel_values), self.feature)
        columns = {"score": lambda: self.head(features), "score_sd": lambda: score_spread(self.members, features),
                   "novelty": lambda: self.nearest(features)}
        return torch.stack([columns[name]() for name in self.readout_names], dim=1)


class ReadoutGraph(nn.Module):
    """The ranker as the export traces it: one output tensor (B,) per readout name."""

    def __init__(self, ranker: ArtRanker):
        super().__init__()
        self.ranker = ranker

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.ranker.readout(pixel_values).unbind(dim=1))
