"""Backbone features, computed once per image and cached (docs/design.md 7).

The cache is a Hugging Face dataset per (backbone weights, image size, preprocessing, precision),
keyed by each image file's sha256: a changed image or setting recomputes, nothing stale is reused.
Extraction is sharded across Accelerate processes and gathered.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, release_memory
from accelerate.utils.memory import should_reduce_batch_size

from backbones import Backbone, DinoFeatureExtractor
from data import ImageDataset
from images import PREPROCESSING_VERSION, input_size
from runfolder import atomic_dir, recover_dir


def cache_key(*, backbone: str, image_size: int, patch_size: int, precision: str) -> dict:
    return dict(backbone=backbone, image_size=image_size, input_size=input_size(image_size, patch_size),
                preprocessing=PREPROCESSING_VERSION, precision=precision)


def _matrix_digest(cls_tokens: np.ndarray, mean_patches: np.ndarray, hashes: list[str]) -> str:
    digest = hashlib.sha256("".join(hashes).encode())
    digest.update(cls_tokens.tobytes())
    digest.update(mean_patches.tobytes())
    return digest.hexdigest()


def read_cache(directory: Path, key: dict) -> tuple[dict[str, int], np.ndarray, np.ndarray, str | None]:
    """Load a cache directory. A missing, truncated, corrupt or mismatched cache reads as empty,
    with the reason, so it is rebuilt and never silently used."""
    from datasets import load_from_disk  # here, not at the top: bench/gpu.py runs where datasets is absent

    empty = {}, np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    recover_dir(directory)
    if not directory.exists():
        return *empty, None
    try:
        meta = json.loads((directory / "cache.json").read_text())
        if meta["key"] != key:
            return *empty, f"{directory}: made for {meta['key']}, not {key}; rebuilding"
        table = load_from_disk(str(directory / "features")).with_format("numpy")
        hashes = list(table["sha256"])
        cls_tokens = np.asarray(table["cls"], dtype=np.float32)
        mean_patches = np.asarray(table["mean_patch"], dtype=np.float32)
        if len(hashes) != meta["rows"] or _matrix_digest(cls_tokens, mean_patches, hashes) != meta["digest"]:
            return *empty, f"{directory}: contents do not match their checksum; rebuilding"
    except Exception as err:  # truncated arrow files raise several types
        return *empty, f"{directory}: unreadable ({type(err).__name__}: {err}); rebuilding"
    return {h: i for i, h in enumerate(hashes)}, cls_tokens, mean_patches, None


def write_cache(directory: Path, key: dict, hashes: list[str], cls_tokens: np.ndarray,
                mean_patches: np.ndarray) -> None:
    from datasets import Dataset

    columns = {"sha256": pa.array(hashes, pa.string())}
    for name, matrix in (("cls", cls_tokens), ("mean_patch", mean_patches)):
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    meta = dict(key=key, rows=len(hashes), digest=_matrix_digest(cls_tokens, mean_patches, hashes))
    with atomic_dir(directory) as tmp:
        Dataset(pa.table(columns)).save_to_disk(str(tmp / "features"))
        (tmp / "cache.json").write_text(json.dumps(meta, indent=2) + "\n")


def extract(extractor: DinoFeatureExtractor, paths: list[str], *, image_size: int, batch_size: int,
            num_workers: int, accelerator: Accelerator, track=None, log=None) -> tuple[np.ndarray, np.ndarray]:
    """CLS and mean patch tokens of this process's images, fp16 autocast on CUDA (REQ-U-002).

    Out of memory halves the batch and starts again (REQ-S-001).
    """
    dataset = ImageDataset(paths, image_size=image_size, patch_size=extractor.patch_size)
    extractor = extractor.to(accelerator.device)

    def run(batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                             pin_memory=accelerator.device.type == "cuda")
        cls_parts, mean_parts = [], []
        with torch.inference_mode(), accelerator.autocast():
            for pixels in (track(loader) if track else loader):
                cls_token, mean_patch = extractor(pixels.to(accelerator.device, non_blocking=True))
                cls_parts.append(cls_token.float().cpu().numpy())
                mean_parts.append(mean_patch.float().cpu().numpy())
        width = extractor.hidden_size
        return (np.concatenate(cls_parts) if cls_parts else np.zeros((0, width), np.float32),
                np.concatenate(mean_parts) if mean_parts else np.zeros((0, width), np.float32))

    # Accelerate's find_executable_batch_size shrinks by 10% per failure; halving finds a fit in log2 steps.
    while True:
        try:
            return run(batch_size)
        except Exception as err:
            if not should_reduce_batch_size(err) or batch_size == 1:
                raise
            batch_size //= 2
            release_memory()
            if log:
                log(f"out of memory: extraction batch size halved to {batch_size}")


def table_features(table: pd.DataFrame, *, backbone: Backbone, image_size: int, cache_dir: str,
                   batch_size: int, num_workers: int, accelerator: Accelerator,
                   track=None, log=print) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS and mean patch features for every row of `table` (in its order), from the cache where valid.

    Only images missing from the cache go through the backbone, split across processes.
    """
    precision = accelerator.mixed_precision if accelerator.device.type == "cuda" else "no"
    key = cache_key(backbone=backbone.id, image_size=image_size, patch_size=backbone.patch_size,
                    precision=precision)
    directory = Path(cache_dir) / ("features-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode())
                                   .hexdigest()[:16])
    index, cls_tokens, mean_patches, problem = read_cache(directory, key)
    if problem:
        log(f"feature cache: {problem}")
    missing = sorted(set(table["sha256"]) - set(index))
    if missing:
        path_of = dict(zip(table["sha256"], table["path"]))
        log(f"feature cache: {len(table) - len(missing)} of {len(table)} images cached, extracting {len(missing)}")
        extractor = DinoFeatureExtractor.from_pretrained(str(backbone.path))
        with accelerator.split_between_processes(missing) as mine:
            new_cls, new_mean = extract(extractor, [path_of[h] for h in mine], image_size=image_size,
                                        batch_size=batch_size, num_workers=num_workers,
                                        accelerator=accelerator, track=track, log=log)
            shards = gather_object([(list(mine), new_cls, new_mean)])
        del extractor
        hashes = sorted(index, key=index.get)
        for shard_hashes, shard_cls, shard_mean in shards:
            hashes += shard_hashes
            cls_tokens = np.concatenate([cls_tokens.reshape(-1, shard_cls.shape[1]), shard_cls])
            mean_patches = np.concatenate([mean_patches.reshape(-1, shard_mean.shape[1]), shard_mean])
        if accelerator.is_main_process:
            write_cache(directory, key, hashes, cls_tokens, mean_patches)
        accelerator.wait_for_everyone()
        index = {h: i for i, h in enumerate(hashes)}
    rows = np.asarray([index[h] for h in table["sha256"]])
    return torch.from_numpy(cls_tokens[rows]), torch.from_numpy(mean_patches[rows])

