"""Scoring drawings with a trained model: an export (model.onnx + model.json) or a PyTorch ranker becomes a
Scorer, and `score_images` feeds it files or PIL images in batches while the next ones decode.

model.json says everything a consumer needs (the preprocessing, the input and output, the calibration);
a pair of files that do not belong together, or a model.json of another format or preprocessing, is
refused rather than scored.
"""

import itertools
import json
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ArtrankError
from .images import (
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

if TYPE_CHECKING:
    import torch

MODEL_FORMAT = 1  # of model.json; bumped when its meaning changes, so old readers refuse instead of misreading
INPUT_NAME, OUTPUT_NAME = "pixel_values", "score"
# Every value a model may give an image, in this order: the score, its spread over the run's top-k heads, the
# image's novelty (pipeline/novelty.py); an export's graph has one output per value, by these names.
READOUT = (OUTPUT_NAME, "score_sd", "novelty")
FILE_NAMES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx"}
ImageLike = str | os.PathLike | Image.Image


class Described(BaseModel):
    model_config = ConfigDict(extra="allow")  # what a consumer does not need may be added freely


class TensorDescription(Described):
    name: str


class PreprocessingDescription(Described):
    version: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int = Field(gt=0)
    patch_size: int = Field(gt=0)


class NoveltyDescription(Described):
    alpha: float = Field(gt=0, lt=1)
    threshold: float | None  # None: nothing is flagged (too few validation images for this alpha)


class TierSetsDescription(Described):
    method: str = Field(pattern="^(band|probability)$")
    alpha: float = Field(gt=0, lt=1)
    threshold: float | None  # None: every tier (too few validation images for this alpha)


class CalibrationDescription(Described):
    slope: float
    tier_cuts: list[dict]
    tier_sets: TierSetsDescription | None = None  # absent in exports made before tier sets
    novelty: NoveltyDescription | None = None  # absent in exports made before the novelty threshold


class TierModelDescription(Described):
    thresholds: list[float] = Field(min_length=3, max_length=3)


class CheckpointDescription(Described):
    epoch: int | None


class OutputDescription(TensorDescription):
    name: str = Field(pattern="^(" + "|".join(READOUT) + ")$")
    members: int | None = None  # score_sd: the heads it is taken over


class ModelDescription(Described):
    """The part of model.json a scorer relies on: a missing or mistyped field is refused, not a KeyError."""
    format: int
    export_id: str
    input: TensorDescription
    output: TensorDescription
    outputs: list[OutputDescription] | None = None  # every output, the score first; absent in older exports
    preprocessing: PreprocessingDescription
    calibration: CalibrationDescription | None
    tier_model: TierModelDescription | None = None  # absent in exports of heads that are not tier models
    checkpoint: CheckpointDescription


def check_description(meta, meta_path: Path) -> ModelDescription:
    try:
        return ModelDescription.model_validate(meta)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the top level"
        raise ArtrankError(f"{meta_path}: not a model description this code can use ({err.error_count()} problem(s); "
                           f"{where}: {first['msg']}); export again with this version's export_onnx.py") from None


def check_graph(session, description: ModelDescription, path: Path, meta_path: Path) -> None:
    """The graph must take what model.json's preprocessing makes: other pixels would be scored silently."""
    prep = description.preprocessing
    side = input_size(prep.image_size, prep.patch_size)
    inputs, outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    found = [(i.name, list(i.shape[1:])) for i in inputs]
    described = [o.name for o in description.outputs or [description.output]]
    if (found != [(description.input.name, [3, side, side])] or described[0] != description.output.name
            or not set(described) <= set(outputs)):
        raise ArtrankError(f"{path}: the graph takes {found} and gives {outputs}, but {meta_path} describes "
                           f"{description.input.name!r} [3, {side}, {side}] (image_size {prep.image_size}, patch "
                           f"{prep.patch_size}) and {described}; export again")


@dataclass
class Scorer:
    # preprocessed (batch, 3, S, S) float32 -> (batch,); the array is reused for the next batch
    score: Callable[[np.ndarray], np.ndarray]
    image_size: int
    patch_size: int
    calibration: dict | None
    description: str
    tier_thresholds: list[float] | None = None  # a tier model's, which give P(tier) (pipeline/ordinal.py)
    # preprocessed batch -> (batch, len(columns)): the values pipeline/ranker.py's READOUT names, from one pass:
    # the score, and where the model has them its spread over the top-k heads and the image's novelty
    readout: Callable[[np.ndarray], np.ndarray] | None = None
    columns: tuple[str, ...] = ("score",)
    members: int = 0  # the heads the spread is taken over

    def __post_init__(self):
        if self.readout is None:  # a model of the score alone: its readout is that one column
            if self.columns != ("score",):
                raise ArtrankError(f"a Scorer without a readout gives the score alone, not {self.columns}")
            score = self.score
            self.readout = lambda pixels: np.asarray(score(pixels))[:, None]


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def onnx_session(path: str | Path, provider: str = "auto"):
    """An onnxruntime session on `provider` (cpu, cuda or tensorrt), refused when onnxruntime here cannot run
    it; "auto": CUDA when a GPU is present, else the CPU."""
    import onnxruntime

    available, asked = onnxruntime.get_available_providers(), provider
    if provider == "auto":
        # Asked of torch only when something else loaded it: the ONNX path never imports it.
        gpu = Path("/dev/nvidiactl").exists() or "torch" in sys.modules and sys.modules["torch"].cuda.is_available()
        provider = "cuda" if gpu and PROVIDERS["cuda"] in available else "cpu"
    if provider not in PROVIDERS:
        raise ArtrankError(f"execution provider {provider!r}: choose auto, {', '.join(PROVIDERS)}")
    if PROVIDERS[provider] not in available:
        raise ArtrankError(f"execution provider {provider}: this onnxruntime has {', '.join(available)} only "
                           "(the GPU providers come with the onnxruntime-gpu package)")
    if provider != "cpu" and hasattr(onnxruntime, "preload_dlls"):  # CUDA and cuDNN from the pip wheels
        onnxruntime.preload_dlls()
    # TF32 would round fp32 matmuls to fp16's 10-bit mantissa: the fp32 model is the exact one.
    chain = {"cpu": [], "cuda": [("CUDAExecutionProvider", {"use_tf32": "0"})],
             "tensorrt": ["TensorrtExecutionProvider", ("CUDAExecutionProvider", {"use_tf32": "0"})]}[provider]
    session = onnxruntime.InferenceSession(str(path), providers=chain + ["CPUExecutionProvider"])
    if asked != "auto" and session.get_providers()[0] != PROVIDERS[provider]:  # onnxruntime only warns
        raise ArtrankError(f"{path}: execution provider {provider} did not start here (onnxruntime runs it on "
                           f"{session.get_providers()[0]}); check the CUDA libraries, or pass --provider cpu")
    return session


def onnx_scorer(path: str | os.PathLike, *, provider: str = "auto", fp16: bool = False) -> Scorer:
    """model.onnx (or model_fp16.onnx: `fp16`, or its path) and the model.json beside it, run on `provider`
    (see onnx_session); refuses a pair it cannot trust."""
    path = Path(path)
    chosen = FILE_NAMES["fp16" if fp16 else "fp32"]
    path = path / chosen if path.is_dir() else path.with_name(chosen) if fp16 else path
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
    description = check_description(meta, meta_path)
    prep = meta["preprocessing"]
    if (prep["version"], tuple(prep["mean"]), tuple(prep["std"])) != (PREPROCESSING_VERSION, IMAGENET_MEAN,
                                                                      IMAGENET_STD):
        raise ArtrankError(f"{meta_path}: preprocessing {prep['version']} with mean {prep['mean']} and std "
                           f"{prep['std']}, this code does {PREPROCESSING_VERSION} with ImageNet mean and std")
    try:
        session = onnx_session(path, provider)
    except ArtrankError:
        raise
    except Exception as err:  # onnxruntime raises its own types for a corrupt or truncated file
        raise ArtrankError(f"{path}: cannot load: {str(err).splitlines()[0]}") from None
    if session.get_modelmeta().custom_metadata_map.get("artrank.export_id") != meta["export_id"]:
        raise ArtrankError(f"{path} and {meta_path} come from different exports; export again")
    check_graph(session, description, path, meta_path)
    input_name, output_name = meta["input"]["name"], meta["output"]["name"]
    outputs = description.outputs or [description.output]
    columns = tuple(o.name for o in outputs)
    return Scorer(score=lambda pixels: session.run([output_name], {input_name: pixels})[0],
                  readout=lambda pixels: np.stack(session.run(list(columns), {input_name: pixels}), axis=1),
                  columns=columns, members=next((o.members for o in description.outputs or [] if o.members), 0),
                  image_size=prep["image_size"], patch_size=prep["patch_size"], calibration=meta["calibration"],
                  tier_thresholds=description.tier_model.thresholds if description.tier_model else None,
                  description=f"{path} (onnxruntime, {session.get_providers()[0]}; "
                              f"checkpoint epoch {meta['checkpoint']['epoch']})")


def torch_scorer(ranker: "torch.nn.Module", *, device: "torch.device", image_size: int, patch_size: int,
                 calibration: dict | None, description: str, tier_thresholds: list[float] | None = None) -> Scorer:
    """A PyTorch ranker (pipeline/ranker.ArtRanker) as a Scorer, fp32 on `device`, with its readout."""
    import torch

    ranker = ranker.to(device).eval()

    @torch.inference_mode()
    def score(pixels: np.ndarray) -> np.ndarray:
        return ranker(torch.from_numpy(pixels).to(device)).float().cpu().numpy()

    @torch.inference_mode()
    def readout(pixels: np.ndarray) -> np.ndarray:
        return ranker.readout(torch.from_numpy(pixels).to(device)).float().cpu().numpy()

    return Scorer(score=score, image_size=image_size, patch_size=patch_size, calibration=calibration,
                  description=description, tier_thresholds=tier_thresholds, readout=readout,
                  columns=ranker.readout_names, members=len(ranker.members))


def picture_of(image: ImageLike, scorer: Scorer) -> np.ndarray:
    """The letterboxed picture of one image, uint8: a path is decoded the one way every script decodes it."""
    if isinstance(image, Image.Image):
        return letterbox(to_rgb(image), scorer.image_size)
    return load_picture(image, scorer.image_size)


def one_torch_thread() -> None:
    if "torch" in sys.modules:  # torch's resize then runs in this decoding thread; else numpy's does
        sys.modules["torch"].set_num_threads(1)


def score_images(scorer: Scorer, images: Sequence[ImageLike], *, batch_size: int, workers: int | None = None,
                 track=None, model: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[list, list[str]]:
    """The score of each image (None where unreadable) and one message per unreadable image; with `model`
    (a batch -> one row of values per image, e.g. scorer.readout) a tuple of those values instead.

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
    pool = ThreadPoolExecutor(max_workers=workers or default_workers(), initializer=one_torch_thread)
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
                for i, s in zip(good, (model or scorer.score)(batch[:len(good)])):
                    scores[start + i] = float(s) if np.ndim(s) == 0 else tuple(float(v) for v in s)
            if track is not None:
                track(len(loaded))
    finally:  # Ctrl-C or a model error: drop the decodes queued ahead
        pool.shutdown(cancel_futures=True)
    return scores, errors
