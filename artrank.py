"""Use a trained run or an ONNX export from Python: score drawings, compare two.

    import artrank
    model = artrank.load("runs/demo")                  # the export (model.onnx + model.json), else the checkpoint
    model = artrank.load("owner/name")                 # an export on the model hub (export_onnx.py --push_to_hub)
    model.score(["a.png", "b.jpg"])                    # [1.83, 0.41]: higher is better; PIL images work too
    model.compare("a.png", "b.jpg")                    # Comparison(better='A', p_a_better=0.81, ...)

Everything here raises ArtrankError (a ValueError) with a one-line message; predict.py is the command
line over the same functions.
"""

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


def shadowing(name: str, expected: Path) -> str | None:
    """Why `import name` would not give this repository's own module (a file of that name in the caller's
    folder comes first on sys.path), or None. Asked before the import, so a stranger's file never runs."""
    found = sys.modules.get(name)
    origin = getattr(found, "__file__", None) if found else getattr(importlib.util.find_spec(name), "origin", None)
    if origin is None:
        return f"cannot find artrank's {expected}: install artrank (pip install -e .) or run from its folder"
    if Path(origin).resolve() == expected:
        return None
    return (f"{origin} comes first on sys.path as {name!r}, but artrank needs its own {expected}: use artrank from "
            "another folder, or rename that file")


if problem := shadowing("pipeline", HERE / "pipeline" / "__init__.py"):
    raise ImportError(problem)

from pipeline.calibration import p_first_better, read_calibration, tier_hint  # noqa: E402
from pipeline.errors import ArtrankError  # noqa: E402
from pipeline.novelty import unfamiliar  # noqa: E402
from pipeline.ordinal import tier_table  # noqa: E402
from pipeline.scoring import ImageLike, Scorer, onnx_scorer, score_images, torch_scorer  # noqa: E402
from pipeline.tier_sets import tier_sets  # noqa: E402

__all__ = ["ArtrankError", "Comparison", "Ranker", "load", "run_scorer"]


def run_scorer(cfg) -> Scorer:
    """The run's checkpoint and backbone in PyTorch, fp32."""
    if problem := shadowing("model", HERE / "model.py"):
        raise ArtrankError(problem)
    from model import load_ranker
    from pipeline.cli import make_accelerator

    accelerator = make_accelerator(cfg)
    ranker, meta, checkpoint = load_ranker(cfg, accelerator, readout=True)
    calibration = read_calibration(cfg.output_dir, checkpoint=checkpoint)
    thresholds = ranker.head.thresholds()
    return torch_scorer(ranker, device=accelerator.device, image_size=meta["image_size"],
                        patch_size=meta["patch_size"], calibration=calibration,
                        description=f"{checkpoint} (PyTorch, {accelerator.device}; epoch {meta.get('epoch')})",
                        tier_thresholds=None if thresholds is None else thresholds.tolist())


@dataclass
class Comparison:
    score_a: float
    score_b: float
    better: str | None  # "A", "B", or None when the scores are equal
    p_a_better: float | None  # None without a calibration
    tier_hint_a: str | None
    tier_hint_b: str | None
    p_tier_a: dict[str, float] | None = None  # a tier model's P(S), P(A), P(B), P(C); None for other heads
    p_tier_b: dict[str, float] | None = None
    tier_set_a: tuple[str, ...] | None = None  # adjacent tiers holding the true one with P >= 1 - alpha; None
    tier_set_b: tuple[str, ...] | None = None  # without the run's tier sets (docs/uncertainty.md)
    score_sd_a: float | None = None  # the score's spread over the run's top-k checkpoints; None without them
    score_sd_b: float | None = None
    novelty_a: float | None = None  # distance of the image's feature to the nearest training image's; None
    novelty_b: float | None = None  # without the run's novelty threshold (docs/uncertainty.md)
    unfamiliar_a: bool | None = None  # novelty above that threshold: unlike the drawings the head learnt from
    unfamiliar_b: bool | None = None


class Ranker:
    """A loaded model: score images, compare two. Made by `load`."""

    def __init__(self, scorer: Scorer, *, batch_size: int = 16):
        self.scorer, self.batch_size = scorer, batch_size

    @property
    def calibration(self) -> dict | None:
        return self.scorer.calibration

    def __repr__(self) -> str:
        return f"Ranker({self.scorer.description})"

    def score(self, images: ImageLike | Sequence[ImageLike]) -> float | list[float]:
        """Score of one image or of each of a list; raises ArtrankError naming every unreadable one."""
        from PIL import Image

        single = isinstance(images, (str, os.PathLike, Image.Image))
        scores, errors = score_images(self.scorer, [images] if single else list(images), batch_size=self.batch_size)
        if errors:
            raise ArtrankError("; ".join(errors))
        return scores[0] if single else scores

    def read(self, images: ImageLike | Sequence[ImageLike]) -> dict[str, float] | list[dict[str, float]]:
        """Every value the model gives one image (or each of a list), from one backbone pass: score, and where the
        model has them score_sd (the spread over the run's top-k checkpoints' heads) and novelty (the distance of
        the image's feature to the nearest training image's; `unfamiliar` reads it)."""
        from PIL import Image

        single = isinstance(images, (str, os.PathLike, Image.Image))
        values, errors = score_images(self.scorer, [images] if single else list(images), batch_size=self.batch_size,
                                      model=self.scorer.readout)
        if errors:
            raise ArtrankError("; ".join(errors))
        read = [dict(zip(self.scorer.columns, row)) for row in values]
        return read[0] if single else read

    def score_spread(self, images: ImageLike | Sequence[ImageLike]) -> tuple[float, float] | list[tuple[float, float]]:
        """(score, spread) of one image or of each of a list: the spread is the standard deviation of the score
        over the run's top-k checkpoints' heads, from one backbone pass. Refused for a model without them (a run
        keeping fewer than two checkpoints, or an export made before the export carried them)."""
        self.require("score_sd", f"it needs the run's top-k checkpoints (here {self.scorer.members}; train with "
                                 "--top_k 2 or more), and an export made by this version")
        read = self.read(images)
        pairs = [(r["score"], r["score_sd"]) for r in (read if isinstance(read, list) else [read])]
        return pairs if isinstance(read, list) else pairs[0]

    def novelty(self, images: ImageLike | Sequence[ImageLike]) -> tuple[float, bool] | list[tuple[float, bool]]:
        """(novelty, unfamiliar) of one image or of each of a list; refused for a model without the run's
        training features and novelty threshold (a run trained, or an export made, before they existed)."""
        self.require("novelty", "it needs the run's novelty_reference.safetensors and calibration.json's novelty "
                                "threshold (train again with this version), and an export made by this version")
        read = self.read(images)
        pairs = [(r["novelty"], self.unfamiliar(r["novelty"])) for r in (read if isinstance(read, list) else [read])]
        return pairs if isinstance(read, list) else pairs[0]

    def require(self, column: str, why: str) -> None:
        if column not in self.scorer.columns:
            raise ArtrankError(f"{self.scorer.description}: no {column}: {why}")

    def unfamiliar(self, novelty: float) -> bool | None:
        """Whether an image of this novelty lies farther from the training drawings than the run's threshold
        (fitted on validation: an image like the validation ones is flagged with probability <= alpha)."""
        return unfamiliar(novelty, (self.calibration or {}).get("novelty"))

    def tier_hint(self, score: float) -> str | None:
        """A tier model's most likely tier; for other heads, the tier whose band of validation scores holds
        `score` (calibration.json). A hint, not a grade."""
        if self.scorer.tier_thresholds is not None:
            return max(self.tier_probabilities(score).items(), key=lambda item: item[1])[0]
        return tier_hint(score, self.calibration)

    def tier_probabilities(self, score: float) -> dict[str, float] | None:
        """P(tier) for a score, best tier first, when the model is a tier model; else None."""
        thresholds = self.scorer.tier_thresholds
        return None if thresholds is None else tier_table([score], thresholds)[0]

    def tier_set(self, score: float) -> tuple[str, ...] | None:
        """The adjacent tiers (best first) that hold an image's true tier with probability >= 1 - alpha,
        marginally (split conformal on the validation split); None when the run has no tier sets."""
        fitted = (self.calibration or {}).get("tier_sets")
        return None if fitted is None else tier_sets([score], fitted)[0]

    def compare(self, a: ImageLike, b: ImageLike) -> Comparison:
        read_a, read_b = self.read([a, b])
        score_a, score_b = read_a["score"], read_b["score"]
        novelty_a, novelty_b = read_a.get("novelty"), read_b.get("novelty")
        return Comparison(score_a=score_a, score_b=score_b,
                          better=None if score_a == score_b else "A" if score_a > score_b else "B",
                          p_a_better=p_first_better(score_a, score_b, self.calibration) if self.calibration else None,
                          tier_hint_a=self.tier_hint(score_a), tier_hint_b=self.tier_hint(score_b),
                          p_tier_a=self.tier_probabilities(score_a), p_tier_b=self.tier_probabilities(score_b),
                          tier_set_a=self.tier_set(score_a), tier_set_b=self.tier_set(score_b),
                          score_sd_a=read_a.get("score_sd"), score_sd_b=read_b.get("score_sd"),
                          novelty_a=novelty_a, novelty_b=novelty_b,
                          unfamiliar_a=None if novelty_a is None else self.unfamiliar(novelty_a),
                          unfamiliar_b=None if novelty_b is None else self.unfamiliar(novelty_b))


def load(path: str | os.PathLike, *, backend: str = "auto", batch_size: int = 16, provider: str = "auto",
         fp16: bool = False) -> Ranker:
    """A Ranker from a run folder, an ONNX file, or a folder holding model.onnx and model.json.

    backend "onnx" or "torch" chooses; "auto" takes the export when the folder has one, else the
    checkpoint of the run (its config.json, checkpoints/best and backbone). An export runs on `provider`
    (auto, cpu, cuda or tensorrt), from model_fp16.onnx with `fp16`.
    """
    from pipeline.config import load_config
    from pipeline.sharing import HUB_ID, hub_export

    if backend not in ("auto", "onnx", "torch"):
        raise ArtrankError(f"backend must be auto, onnx or torch, got {backend!r}")
    hub_id = HUB_ID.fullmatch(str(path)) and not Path(path).parent.is_dir()  # runs/x, with runs/ here, is a path
    if not Path(path).exists() and hub_id and backend != "torch":
        path = hub_export(str(path))  # an export published with export_onnx.py --push_to_hub
    path = Path(path)
    if not path.exists():
        raise ArtrankError(f"{path}: no such run folder or model file")
    has_export = path.is_file() or (path / "model.onnx").is_file()
    if backend == "onnx" or (backend == "auto" and has_export):
        return Ranker(onnx_scorer(path, provider=provider, fp16=fp16), batch_size=batch_size)
    if fp16 or provider != "auto":
        raise ArtrankError(f"{path}: fp16 and provider choose how an export runs, and this loads the checkpoint; "
                           "export with export_onnx.py first")
    if not (path / "config.json").is_file():
        raise ArtrankError(f"{path}: neither a trained run (config.json, checkpoints/best) nor an export "
                           "(model.onnx, model.json); train with train.py, export with export_onnx.py")
    # A reader never builds a backbone: the run's relative backbone path would land in the caller's folder, and
    # new random weights are not the run's (its checkpoint names the weights it was trained on).
    cfg = load_config(path / "config.json", output_dir=str(path), random_backbone="")
    return Ranker(run_scorer(cfg), batch_size=batch_size)
