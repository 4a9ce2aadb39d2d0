"""Unfamiliar drawings: an image whose backbone feature lies far from every training drawing's is flagged, the
threshold fitted on the validation split.

An image's novelty is the cosine distance of its feature (the head's input) to the nearest training image's,
both taken about the mean training feature: 1 - max over training images t of cos(f(image) - m, f(t) - m); 0 for
a training image itself. Without the mean taken out, what every feature shares makes all cosines near 1. The head
learnt its scores from the training images alone, so a score far from all of them is an extrapolation.

The threshold is split conformal, as the tier sets' is: the ceil((n + 1)(1 - alpha))-th smallest novelty of the
n validation images (`novelty_alpha`); the validation artists are new to the head, as a user's are. An image
drawn as the validation images were is then flagged with probability at most alpha. That is the whole promise:
a flag says "unlike the drawings this head was trained on", not that its score is wrong, and no flag does not
say that an image is like them in what matters. With too few validation images for alpha there is no threshold
and nothing is flagged (the report says so).

train.py writes the mean and the training features less it, unit length, to OUTPUT_DIR/novelty_reference.safetensors
and the threshold with that file's digest to calibration.json (`novelty`); a reference that is not the one the
threshold was fitted with is refused. The export carries the reference inside the graph (output `novelty`).
"""

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import ArtrankError
from .files import atomic_write_bytes
from .tier_sets import conformal_threshold

NOVELTY_REFERENCE = "novelty_reference.safetensors"
if TYPE_CHECKING:
    import torch

    from .ranker import NearestTraining

RULE = "cosine distance of the image's feature to the nearest training image's, both less the mean training feature"


def novelty_of(nearest: "NearestTraining", features: "torch.Tensor", *, batch: int = 1024) -> np.ndarray:
    """(N,) the novelty of each row of `features` (ranker.NearestTraining of the training features), on the CPU."""
    import torch

    nearest = nearest.cpu()
    with torch.no_grad():
        return np.concatenate([nearest(features[i:i + batch].cpu()).numpy()
                               for i in range(0, len(features), batch)] or [np.zeros(0, np.float32)])


def fit_novelty(nearest: "NearestTraining", val_features: "torch.Tensor", *, alpha: float,
                reference_sha256: str) -> dict:
    """The threshold on the validation images' novelty, with what it was fitted on."""
    threshold, rank = conformal_threshold(novelty_of(nearest, val_features), alpha)
    return {"rule": RULE, "alpha": float(alpha), "threshold": threshold, "fitted_on": "val",
            "n": int(len(val_features)), "rank": rank, "training_images": int(len(nearest.reference)),
            "reference_sha256": reference_sha256,
            "guarantee": f"an image drawn as the validation images were is flagged with probability <= {alpha:g}"}


def write_reference(output_dir: str | os.PathLike, nearest: "NearestTraining") -> str:
    """OUTPUT_DIR/novelty_reference.safetensors: what `nearest` holds; returns the file's sha256."""
    from safetensors.torch import save

    payload = save({name: tensor.cpu().contiguous() for name, tensor in nearest.state_dict().items()})
    atomic_write_bytes(Path(output_dir) / NOVELTY_REFERENCE, payload)
    return hashlib.sha256(payload).hexdigest()


def read_reference(output_dir: str | os.PathLike, fitted: dict | None) -> "NearestTraining | None":
    """The training features the calibration's novelty threshold was fitted with; None when it has none.
    A missing file, or one with another digest, is refused: its distances would not be the threshold's."""
    if fitted is None:
        return None
    from safetensors.torch import load

    path = Path(output_dir) / NOVELTY_REFERENCE
    try:
        payload = path.read_bytes()
    except OSError as err:
        raise ArtrankError(f"{path}: unreadable ({type(err).__name__}), but calibration.json's novelty threshold "
                           "was fitted with it: copy the whole run folder, or train again") from None
    if hashlib.sha256(payload).hexdigest() != fitted["reference_sha256"]:
        raise ArtrankError(f"{path}: not the training features calibration.json's novelty threshold was fitted "
                           "with (another digest): train again")
    from .ranker import NearestTraining

    tensors = load(payload)
    return NearestTraining(tensors["mean"], tensors["reference"])


def unfamiliar(novelty: float, fitted: dict | None) -> bool | None:
    """Whether an image of this novelty is flagged; None without a threshold (no calibration, or too few
    validation images for its alpha)."""
    if fitted is None or fitted["threshold"] is None:
        return None
    return bool(novelty > fitted["threshold"])


def novelty_report(novelty: np.ndarray, fitted: dict | None) -> dict | None:
    """On one split: the share of its images flagged against the rate promised, and their novelty's spread."""
    if fitted is None:
        return None
    flags = None if fitted["threshold"] is None else np.asarray(novelty) > fitted["threshold"]
    return dict(alpha=fitted["alpha"], threshold=fitted["threshold"],
                flagged_share=None if flags is None else float(flags.mean()),
                flagged=None if flags is None else int(flags.sum()),
                n_images=int(len(novelty)), median=float(np.median(novelty)), max=float(np.max(novelty)),
                note=None if flags is not None else f"too few validation images ({fitted['n']}) for alpha "
                                                    f"{fitted['alpha']:g}: nothing is flagged")


def novelty_summary(report: dict | None) -> str | None:
    if not report:
        return None
    if report["flagged_share"] is None:
        return f"unfamiliar images: {report['note']}"
    return (f"unfamiliar images (alpha {report['alpha']:g}): {report['flagged']} of {report['n_images']} flagged "
            f"({report['flagged_share']:.1%}; promised <= {report['alpha']:.0%} for images like the validation "
            f"ones), threshold {report['threshold']:.4f}, median novelty {report['median']:.4f}")
