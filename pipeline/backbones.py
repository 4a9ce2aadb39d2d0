"""The frozen backbone: which checkpoints artrank runs, how they are found, loaded and keyed.

Supported are the DINO ViTs, each loaded through AutoModel as its own architecture: DINOv2 (small, base,
large, giant), DINOv2 with registers and DINOv3 ViT. Anything else, and any load that leaves a weight
missing or unused, is refused: a backbone on random weights trains to a meaningless figure.
Every family lays out its tokens as [CLS, register tokens (none in plain DINOv2), patch tokens].
"""

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator
from huggingface_hub import snapshot_download
from huggingface_hub.errors import GatedRepoError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError
from transformers import AutoModel, Dinov2Config, Dinov2Model, PreTrainedModel
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings
from transformers.models.dinov2_with_registers.modeling_dinov2_with_registers import Dinov2WithRegistersEmbeddings

from .errors import ArtrankError
from .files import StatCache, atomic_dir, user_cache_dir
from .images import IMAGENET_MEAN, IMAGENET_STD

SUPPORTED = {  # config.json's model_type -> what the user knows it as
    "dinov2": "DINOv2 (facebook/dinov2-small, -base, -large, -giant)",
    "dinov2_with_registers": "DINOv2 with registers (facebook/dinov2-with-registers-*)",
    "dinov3_vit": "DINOv3 ViT (facebook/dinov3-vit*)",
}
RANDOM_BACKBONES = {
    # A tiny stand-in for the demo and tests: no machine here reaches a model hub.
    "tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=4,
                 patch_size=14, image_size=224),
    # The real ViT-L/14 architecture (facebook/dinov2-large), for GPU benchmarks with random weights.
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4,
                  patch_size=14, image_size=518),
}
SHA256_NAME = re.compile(r"[0-9a-f]{64}")


class BackboneError(ArtrankError):
    """A backbone that cannot be used; the message names it, says why and what would work."""


@dataclass(frozen=True)
class Backbone:
    path: Path  # a local directory, also for a hub id (its snapshot)
    id: str  # hash of its config and weights: what the feature cache and checkpoints are keyed by
    patch_size: int
    hidden_size: int
    family: str  # config.json's model_type, a key of SUPPORTED


def make_random_backbone(kind: str, path: str | os.PathLike, *, seed: int = 0) -> None:
    """Save a randomly initialised DINOv2 of the given architecture to `path` (once)."""
    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(**RANDOM_BACKBONES[kind]))
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)


def resolve_backbone(name: str, *, random_backbone: str = "", accelerator: Accelerator) -> Backbone:
    """Find the backbone: `name` as a local directory, or its hub snapshot (downloaded once).

    With random_backbone set and `name` missing, a random DINOv2 of that architecture is saved there.
    Raises BackboneError for an unsupported architecture or a hub id that cannot be fetched.
    """
    if random_backbone and not Path(name).exists():
        if accelerator.is_main_process:
            make_random_backbone(random_backbone, name)
        accelerator.wait_for_everyone()
    if not Path(name).is_dir() and names_a_path(name):
        raise BackboneError(f"backbone {name}: no such folder ({Path(name).expanduser().resolve()}); a local backbone "
                            "is a folder written by save_pretrained, and a relative path is read from the folder "
                            "the command runs in")
    path = Path(name) if Path(name).is_dir() else _hub_snapshot(name)
    config = read_config(path, name)
    _check_normalisation(path, name)
    return Backbone(path, _weights_digest(path), _square(config["patch_size"], name), config["hidden_size"],
                    config["model_type"])


def names_a_path(name: str) -> bool:
    """Whether `name` can only mean a local folder: it starts like a path, or its parent folder exists here
    (a hub id is owner/name, and nobody keeps an `owner` folder beside their runs)."""
    parent = Path(name).expanduser().parent
    return name.startswith(("/", ".", "~")) or (parent != Path(".") and parent.is_dir())


def _hub_snapshot(name: str) -> Path:
    local_copy = ("point backbone at a folder written by save_pretrained, or fetch the model once where the hub "
                  "is reachable (later runs read the hub cache; HF_HUB_OFFLINE=1 keeps them off the network)")
    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=["*.json", "*.safetensors"]))
    except HFValidationError:
        raise BackboneError(f"backbone {name}: no such folder, and not a model hub id") from None
    except GatedRepoError:
        raise BackboneError(f"backbone {name} is gated on the model hub: accept its licence on "
                            f"https://huggingface.co/{name} and log in (hf auth login), or {local_copy}") from None
    except RepositoryNotFoundError:
        raise BackboneError(f"backbone {name}: no such folder, and no such model on the hub") from None
    except LocalEntryNotFoundError:  # offline, or no connection, and not in the hub cache
        raise BackboneError(f"backbone {name}: the model hub cannot be reached and no copy is cached; "
                            f"{local_copy}") from None
    except OSError as err:  # HTTP errors and interrupted downloads
        raise BackboneError(f"backbone {name}: download failed ({type(err).__name__}: "
                            f"{(str(err).splitlines() or [''])[0]}); {local_copy}") from None


def read_config(path: Path, name: str) -> dict:
    """The backbone's config.json, refused unless it is one of the SUPPORTED architectures."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BackboneError(f"backbone {name}: cannot read {path / 'config.json'} ({type(err).__name__}); "
                            "a backbone is a folder written by save_pretrained, or a hub id") from None
    family = config.get("model_type")
    if family not in SUPPORTED:
        architecture = ", ".join(config.get("architectures") or []) or "an unnamed architecture"
        raise BackboneError(f"backbone {name} is {architecture} (model_type {family!r}), which artrank does not "
                            "run.\n  Supported: " + "; ".join(SUPPORTED.values()))
    return config


def _check_normalisation(path: Path, name: str) -> None:
    """Refuse a checkpoint made for other pixel statistics (DINOv3's satellite models): preprocessing is one."""
    try:
        processor = json.loads((path / "preprocessor_config.json").read_text())
    except FileNotFoundError:
        return
    except ValueError as err:
        raise BackboneError(f"backbone {name}: {path / 'preprocessor_config.json'} is not JSON: {err}") from None
    expected = {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    for key, values in expected.items():
        if key in processor and not np.allclose(processor[key], values, atol=1e-3):
            raise BackboneError(f"backbone {name}: preprocessor_config.json has {key} {processor[key]}, "
                                f"but artrank normalises every image with the ImageNet {values}")


def _square(size, name: str) -> int:
    if isinstance(size, list) and len(set(size)) == 1:
        return size[0]
    if not isinstance(size, int):
        raise BackboneError(f"backbone {name}: patch_size {size!r} is not square")
    return size


def _weights_digest(directory: Path) -> str:
    """Hash of the config and weight files' contents, without reading 1.2 GB at every start.

    A hub snapshot's weight files are links to blobs named by their sha256; any other file's sha256 is
    remembered while its size, mtime, ctime and inode are unchanged (file-hashes.sqlite in the user cache), so
    a file is read again only when it was rewritten, which new weights of the same shape always are.
    """
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:  # other formats would load unhashed: new weights would reuse old features
        raise BackboneError(f"backbone {directory}: no .safetensors weights; save it with save_pretrained")
    known = StatCache(user_cache_dir() / "file-hashes.sqlite", version="sha256")
    digest, learnt = hashlib.sha256(), []
    try:
        for path in sorted(directory.glob("*.json")) + weights:
            target = path.resolve()
            if target.parent.name == "blobs" and SHA256_NAME.fullmatch(target.name):
                sha256 = target.name
            else:
                stamp = known.stamp(str(target))
                sha256 = known.get(str(target), stamp)
                if sha256 is None:
                    sha256 = _file_sha256(target)
                    learnt.append((str(target), stamp, sha256))
            digest.update(path.name.encode())
            digest.update(sha256.encode())
        known.put(learnt)
    finally:
        known.close()
    return digest.hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


class DinoFeatureExtractor(nn.Module):
    """The frozen backbone: eval mode for good, no parameter trains.

    Returns the CLS token (1024-d for ViT-L) and the mean of the patch tokens, the register
    tokens left out: they hold no place in the image.
    """

    def __init__(self, backbone: PreTrainedModel):
        super().__init__()
        if backbone.config.model_type not in SUPPORTED:
            raise BackboneError(f"{type(backbone).__name__} is not a supported backbone: "
                                + "; ".join(SUPPORTED.values()))
        self.backbone = backbone.eval()
        self.backbone.requires_grad_(False)
        self.first_patch = 1 + getattr(backbone.config, "num_register_tokens", 0)

    @classmethod
    def from_pretrained(cls, path: str, *, attn_implementation: str = "sdpa") -> "DinoFeatureExtractor":
        """Load a resolved backbone folder as its own architecture; BackboneError unless every weight loads."""
        family = read_config(Path(path), path)["model_type"]
        try:
            model, info = AutoModel.from_pretrained(path, attn_implementation=attn_implementation,
                                                    output_loading_info=True)
        except (OSError, RuntimeError) as err:  # unreadable files, weights of the wrong shape
            raise BackboneError(f"backbone {path} ({family}): its weights do not load: "
                                f"{(str(err).splitlines() or [''])[0]}") from None
        problems = {"missing from the checkpoint": info["missing_keys"],
                    "in the checkpoint but unused": info["unexpected_keys"],
                    "of the wrong shape": {key for key, *_ in info["mismatched_keys"]}}
        if any(problems.values()):
            found = "; ".join(f"{len(keys)} weight{'s' * (len(keys) > 1)} {what} ({', '.join(sorted(keys)[:3])}"
                              f"{', ...' if len(keys) > 3 else ''})" for what, keys in problems.items() if keys)
            raise BackboneError(f"backbone {path} does not fit {type(model).__name__}: {found}.\n  Refused: those "
                                "weights would be random; use the complete checkpoint (its hub id, or a folder "
                                "written by save_pretrained)")
        return cls(model)

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def patch_size(self) -> int:
        return _square(self.backbone.config.patch_size, type(self.backbone).__name__)

    def train(self, mode: bool = True) -> "DinoFeatureExtractor":
        # a parent's .train() must not switch on dropout, drop-path or DINOv3's random RoPE jitter
        return super().train(False)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.backbone(pixel_values=pixel_values).last_hidden_state
        return tokens[:, 0], tokens[:, self.first_patch:].mean(dim=1)

    def bake_position_embeddings(self, side: int) -> None:
        """Store DINOv2's position embeddings interpolated for a fixed input side as a constant, for export.

        DINOv2 interpolates them (bicubic; antialiased with registers) at every call, even at its native
        size: that Resize is the known ONNX failure point and costs about 1 ms per image. DINOv3 has none:
        its RoPE angles depend on the input shape alone, which the exporter folds into constants.
        """
        embeddings = self.backbone.embeddings
        if type(embeddings) not in _FIXED:
            return
        with torch.no_grad():
            dummy = torch.zeros(1, (side // self.patch_size) ** 2 + 1, self.hidden_size)
            fixed = embeddings.interpolate_pos_encoding(dummy, side, side).clone()
        embeddings.register_buffer("fixed_position_embeddings", fixed)
        embeddings.__class__ = _FIXED[type(embeddings)]


class _FixedPositions:
    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.fixed_position_embeddings


class _FixedDinov2Embeddings(_FixedPositions, Dinov2Embeddings):
    pass


class _FixedDinov2WithRegistersEmbeddings(_FixedPositions, Dinov2WithRegistersEmbeddings):
    pass


_FIXED = {Dinov2Embeddings: _FixedDinov2Embeddings,
          Dinov2WithRegistersEmbeddings: _FixedDinov2WithRegistersEmbeddings}
