"""The model: frozen DINO backbone (backbones.py), the spec's projector (4.2) and a score head.

Training runs on cached backbone features (the backbone is frozen and there is no augmentation,
so its output is a pure function of the image), so the trained part is `RankingHead` alone.
`ArtRanker` puts backbone and head back together for ONNX export and prediction.
"""

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from backbones import DinoFeatureExtractor
from images import PREPROCESSING_VERSION
from runfolder import atomic_dir, atomic_write_text

HEAD_FORMAT = 1  # bumped when head.json changes meaning; older heads are refused, not misread


def select_features(cls_token: torch.Tensor, mean_patch: torch.Tensor, feature: str) -> torch.Tensor:
    """The head's input: the spec's CLS token, or CLS + mean patch token (DINOv2's linear-probe input)."""
    return cls_token if feature == "cls" else torch.cat([cls_token, mean_patch], dim=-1)


class Projector(nn.Module):
    """Spec 4.2: 1024 -> 512 -> 256 with LayerNorm, GELU and dropout (REQ-E-002)."""

    def __init__(self, input_dim: int = 1024, hidden_dim: int = 512, output_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.projection = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, output_dim),
            nn.LayerNorm(output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class RankingHead(nn.Module):
    """Projector + score (REQ-E-003): higher is better.

    "norm" is the spec's -||emb|| (4.3). After the final LayerNorm that norm is ~sqrt(256) before
    the affine part, so it has little freedom (docs/design.md 5); "linear" reads a score off the embedding.
    """

    def __init__(self, *, input_dim: int, hidden_dim: int = 512, proj_dim: int = 256, dropout: float = 0.1,
                 score_head: str = "linear"):
        super().__init__()
        self.projector = Projector(input_dim, hidden_dim, proj_dim, dropout)
        self.score_head = score_head
        self.linear = nn.Linear(proj_dim, 1) if score_head == "linear" else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        embedding = self.projector(features)
        if self.linear is None:
            return -torch.linalg.vector_norm(embedding, dim=-1)
        return self.linear(embedding).squeeze(-1)


class ArtRanker(nn.Module):
    """Backbone + head in one module: preprocessed pixels (B, 3, S, S) -> score (B,)."""

    def __init__(self, extractor: DinoFeatureExtractor, head: RankingHead, feature: str):
        super().__init__()
        self.extractor, self.head, self.feature = extractor, head.eval(), feature

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(select_features(*self.extractor(pixel_values), self.feature))


def head_meta(cfg, *, backbone_id: str, input_dim: int, patch_size: int) -> dict:
    """What a head needs to be rebuilt and fed correctly, saved beside its weights."""
    return dict(format=HEAD_FORMAT, backbone=cfg.backbone, backbone_id=backbone_id, image_size=cfg.image_size,
                patch_size=patch_size, preprocessing=PREPROCESSING_VERSION, feature=cfg.feature,
                input_dim=input_dim, hidden_dim=cfg.hidden_dim, proj_dim=cfg.proj_dim, dropout=cfg.dropout,
                score_head=cfg.score_head)


def save_head(head: RankingHead, directory: str | os.PathLike, meta: dict) -> None:
    with atomic_dir(directory) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                  str(Path(tmp) / "head.safetensors"))
        atomic_write_text(Path(tmp) / "head.json", json.dumps(meta, indent=2) + "\n")


def load_head(directory: str | os.PathLike, *, expect: dict | None = None) -> tuple[RankingHead, dict]:
    """Load a saved head; refuse one made for another backbone, image size or preprocessing.

    `expect` holds the values the caller will feed it with (keys of head.json).
    """
    directory = Path(directory)
    meta_path = directory / "head.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory}: no head.json; is this a checkpoint directory of train.py?")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != HEAD_FORMAT:
        raise ValueError(f"{meta_path}: head format {meta.get('format')!r}, this code reads {HEAD_FORMAT}")
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise ValueError(f"{meta_path}: checkpoint made with {key}={meta.get(key)!r}, "
                             f"but this run uses {key}={value!r}; retrain or use the matching config")
    head = RankingHead(input_dim=meta["input_dim"], hidden_dim=meta["hidden_dim"], proj_dim=meta["proj_dim"],
                       dropout=meta["dropout"], score_head=meta["score_head"])
    head.load_state_dict(load_file(str(directory / "head.safetensors")))
    return head.eval(), meta
