"""Use a trained run or an ONNX export from Python: score drawings, compare two.

    import artrank
    model = artrank.load("runs/demo")                  # the export (model.onnx + model.json), else the checkpoint
    model.score(["a.png", "b.jpg"])                    # [1.83, 0.41]: higher is better; PIL images work too
    model.compare("a.png", "b.jpg")                    # Comparison(better='A', p_a_better=0.81, ...)

Everything here raises ArtrankError (a ValueError) with a one-line message; predict.py is the command
line over the same functions.
"""

import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PREPROCESSING_VERSION,
    default_workers,
    input_size,
    letterbox,
    load_picture,
    on_canvas,
    to_rgb,
)
from metrics import p_first_better, tier_hint

ImageLike = str | os.PathLike | Image.Image


class ArtrankError(ValueError):
    """A model that cannot be loaded or trusted, or an image that cannot be scored; the message says which."""


@dataclass
class Scorer:
    # preprocessed (batch, 3, S, S) float32 -> (batch,); the array is reused for the next batch
    score: Callable[[np.ndarray], np.ndarray]
    image_size: int
    patch_size: int
    calibration: dict | None
    description: str


def onnx_scorer(path: str | os.PathLike) -> Scorer:
    """model.onnx (or model_fp16.onnx) and the model.json beside it; refuses a pair it cannot trust."""
    from export_onnx import FILE_NAMES, MODEL_FORMAT, onnx_session

    path = Path(path)
    path = path / FILE_NAMES["fp32"] if path.is_dir() else path
    if not path.is_file():
        raise ArtrankError(f"no ONNX model at {path}: run export_onnx.py with this config first, "
                           "or pass --model PATH/model.onnx, or --torch")
    meta_path = path.with_name("model.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ArtrankError(f"{meta_path}: cannot read the model description beside {path.name}: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ArtrankError(f"{meta_path}: model.json format {found!r}, this code reads format {MODEL_FORMAT}; "
                           "export again with this version's export_onnx.py")
    prep = meta["preprocessing"]
    if (prep["version"], tuple(prep["mean"]), tuple(prep["std"])) != (PREPROCESSING_VERSION, IMAGENET_MEAN,
                                                                      IMAGENET_STD):
        raise ArtrankError(f"{meta_path}: preprocessing {prep['version']} with mean {prep['mean']} and std "
                           f"{prep['std']}, this code does {PREPROCESSING_VERSION} with ImageNet mean and std")
    try:
        session = onnx_session(path)
    except Exception as err:  # onnxruntime raises its own types for a corrupt or truncated file
        raise ArtrankError(f"{path}: cannot load: {str(err).splitlines()[0]}") from None
    if session.get_modelmeta().custom_metadata_map.get("artrank.export_id") != meta["export_id"]:
        raise ArtrankError(f"{path} and {meta_path} come from different exports; export again")
    input_name, output_name = meta["input"]["name"], meta["output"]["name"]
    return Scorer(score=lambda pixels: session.run([output_name], {input_name: pixels})[0],
                  image_size=prep["image_size"], patch_size=prep["patch_size"], calibration=meta["calibration"],
                  description=f"{path} (onnxruntime, {session.get_providers()[0]}; "
                              f"checkpoint epoch {meta['checkpoint']['epoch']})")


def torch_scorer(cfg) -> Scorer:
    """The run's checkpoint and backbone in PyTorch, fp32."""
    from workflow import load_ranker, make_accelerator

    accelerator = make_accelerator(cfg)
    try:
        ranker, meta, checkpoint = load_ranker(cfg, accelerator)
    except (ValueError, FileNotFoundError) as err:  # a checkpoint for other settings, an unsupported backbone
        raise ArtrankError(str(err)) from None
    except OSError as err:  # a backbone that is neither a folder nor reachable on the hub
        raise ArtrankError(f"backbone {cfg.backbone}: {str(err).splitlines()[0]}") from None
    ranker = ranker.to(accelerator.device)
    calibration_json = Path(cfg.output_dir) / "calibration.json"

    @torch.inference_mode()
    def score(pixels: np.ndarray) -> np.ndarray:
        return ranker(torch.from_numpy(pixels).to(accelerator.device)).float().cpu().numpy()

    return Scorer(score=score, image_size=meta["image_size"], patch_size=meta["patch_size"],
                  calibration=json.loads(calibration_json.read_text()) if calibration_json.is_file() else None,
                  description=f"{checkpoint} (PyTorch, {accelerator.device}; epoch {meta.get('epoch')})")


def picture_of(image: ImageLike, scorer: Scorer) -> torch.Tensor:
    """The letterboxed picture of one image, uint8: a path is decoded the one way every script decodes it."""
    if isinstance(image, Image.Image):
        return letterbox(to_rgb(image), scorer.image_size)
    return load_picture(image, scorer.image_size)


def score_images(scorer: Scorer, images: Sequence[ImageLike], *, batch_size: int, workers: int | None = None,
                 track=None) -> tuple[list[float | None], list[str]]:
    """The score of each image (None where unreadable) and one message per unreadable image.

    `workers` threads (default: one per CPU core this process may use) decode up to two batches ahead
    while the model scores the current one; Pillow and torch release the GIL while they work. The
    pictures are normalised straight into one reused batch array: a fresh 7 MB canvas per photo and a
    copy into the batch cost more than the normalising.
    `track` (e.g. a tqdm bar) is told how many images each batch held.
    """
    def load(image):
        try:
            return picture_of(image, scorer)
        except Exception as err:  # Pillow raises many types for corrupt data
            reason = str(err).splitlines()[0] if str(err) else ""
            name = "PIL image" if isinstance(image, Image.Image) else str(image)
            return f"{name}: not a readable image: {type(err).__name__}: {reason}"

    side = input_size(scorer.image_size, scorer.patch_size)
    batch = np.empty((min(batch_size, len(images)), 3, side, side), dtype=np.float32)
    scores: list[float | None] = [None] * len(images)
    errors = []
    # One torch thread per decoding thread: nested OpenMP teams would spin on cores that other threads decode on.
    pool = ThreadPoolExecutor(max_workers=workers or default_workers(), initializer=torch.set_num_threads,
                              initargs=(1,))
    upcoming, decoding = iter(images), deque()

    def decode_next(count: int) -> None:
        decoding.extend(pool.submit(load, image) for image in itertools.islice(upcoming, count))

    try:
        decode_next(2 * batch_size)
        for start in range(0, len(images), batch_size):
            loaded = [decoding.popleft().result() for _ in range(min(batch_size, len(images) - start))]
            decode_next(batch_size)
            good = [i for i, picture in enumerate(loaded) if not isinstance(picture, str)]
            errors += [message for message in loaded if isinstance(message, str)]
            for row, i in enumerate(good):
                on_canvas(loaded[i], side, out=batch[row])
            if good:
                for i, s in zip(good, scorer.score(batch[:len(good)])):
                    scores[start + i] = float(s)
            if track is not None:
                track(len(loaded))
    finally:  # Ctrl-C or a model error: drop the decodes queued ahead
        pool.shutdown(cancel_futures=True)
    return scores, errors


@dataclass
class Comparison:
    score_a: float
    score_b: float
    better: str | None  # "A", "B", or None when the scores are equal
    p_a_better: float | None  # None without a calibration
    tier_hint_a: str | None
    tier_hint_b: str | None


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
        single = isinstance(images, (str, os.PathLike, Image.Image))
        scores, errors = score_images(self.scorer, [images] if single else list(images), batch_size=self.batch_size)
        if errors:
            raise ArtrankError("; ".join(errors))
        return scores[0] if single else scores

    def tier_hint(self, score: float) -> str | None:
        """The tier whose band of validation scores holds `score`: a hint, not a grade."""
        return tier_hint(score, self.calibration)

    def compare(self, a: ImageLike, b: ImageLike) -> Comparison:
        score_a, score_b = self.score([a, b])
        return Comparison(score_a=score_a, score_b=score_b,
                          better=None if score_a == score_b else "A" if score_a > score_b else "B",
                          p_a_better=p_first_better(score_a, score_b, self.calibration) if self.calibration else None,
                          tier_hint_a=self.tier_hint(score_a), tier_hint_b=self.tier_hint(score_b))


def load(path: str | os.PathLike, *, backend: str = "auto", batch_size: int = 16) -> Ranker:
    """A Ranker from a run folder, an ONNX file, or a folder holding model.onnx and model.json.

    backend "onnx" or "torch" chooses; "auto" takes the export when the folder has one, else the
    checkpoint of the run (its config.json, checkpoints/best and backbone).
    """
    from config import ConfigError, load_config

    path = Path(path)
    if backend not in ("auto", "onnx", "torch"):
        raise ArtrankError(f"backend must be auto, onnx or torch, got {backend!r}")
    if not path.exists():
        raise ArtrankError(f"{path}: no such run folder or model file")
    has_export = path.is_file() or (path / "model.onnx").is_file()
    if backend == "onnx" or (backend == "auto" and has_export):
        return Ranker(onnx_scorer(path), batch_size=batch_size)
    if not (path / "config.json").is_file():
        raise ArtrankError(f"{path}: neither a trained run (config.json, checkpoints/best) nor an export "
                           "(model.onnx, model.json); train with train.py, export with export_onnx.py")
    try:
        cfg = load_config(path / "config.json", output_dir=str(path))
    except ConfigError as err:
        raise ArtrankError(str(err)) from None
    return Ranker(torch_scorer(cfg), batch_size=batch_size)

