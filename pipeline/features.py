"""Backbone features, computed once per image and cached.

The backbone is frozen and there is no augmentation, so an image's features are a pure function of the
backbone weights, the image size, the preprocessing and the image bytes: computed once, they are exact.

The cache is a folder per (backbone weights, image size, preprocessing, precision) of Arrow chunks
keyed by each image file's sha256: a changed image or setting recomputes, nothing stale is reused.
Chunks are written as extraction goes (every CHUNK_ROWS images or CHUNK_SECONDS), each with its own
checksum, so a kill loses at most one chunk and a rerun extracts only what is missing. Extraction is
sharded across Accelerate processes; DataLoader workers decode while the model runs.
"""

import hashlib
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from accelerate import Accelerator
from accelerate.utils import release_memory
from accelerate.utils.memory import should_reduce_batch_size

from .backbones import Backbone, DinoFeatureExtractor
from .errors import ArtrankError
from .files import atomic_write_bytes, atomic_write_json
from .images import PREPROCESSING_VERSION, default_workers, input_size, load_pixels

CHUNK_ROWS = 1024
CHUNK_SECONDS = 60.0  # on a CPU a chunk of ViT-L features takes minutes: also cut by time


class ImageDataset(torch.utils.data.Dataset):
    """Paths in, model inputs out (images.load_pixels); decoded in DataLoader workers (Datasets' Image
    column re-decodes on every access and is many times slower).

    With `hashes` (the sha256 each file had when it was checked), the bytes read are hashed and decoded, once:
    features are filed under the hash of the very bytes they came from, and a file rewritten since its check
    is refused instead of filing the new picture under the old content's hash.
    """

    def __init__(self, paths: list[str], *, image_size: int, patch_size: int, hashes: list[str] | None = None):
        self.paths, self.image_size, self.patch_size, self.hashes = list(paths), image_size, patch_size, hashes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            payload = Path(path).read_bytes()
        except OSError as err:
            raise ArtrankError(f"{path}: cannot read: {err.strerror or err}") from None
        if self.hashes is not None and (digest := hashlib.sha256(payload).hexdigest()) != self.hashes[index]:
            raise ArtrankError(f"{path}: changed since the images were checked (content {digest[:12]}, checked "
                               f"{self.hashes[index][:12]}); run again so that its new content is checked")
        try:
            return load_pixels(payload, self.image_size, self.patch_size)
        except Exception as err:
            # A file changed or vanished after the start's checks: name it.
            raise ArtrankError(f"{path}: {type(err).__name__}: {err}") from err


def cache_key(*, backbone: str, image_size: int, patch_size: int, precision: str) -> dict:
    return dict(backbone=backbone, image_size=image_size, input_size=input_size(image_size, patch_size),
                preprocessing=PREPROCESSING_VERSION, precision=precision)


def _matrix_digest(cls_tokens: np.ndarray, mean_patches: np.ndarray, hashes: list[str]) -> str:
    digest = hashlib.sha256("".join(hashes).encode())
    digest.update(cls_tokens.tobytes())
    digest.update(mean_patches.tobytes())
    return digest.hexdigest()


def _read_chunk(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    table = pa.ipc.open_file(pa.py_buffer(path.read_bytes())).read_all()
    hashes = table["sha256"].to_pylist()
    width = table.schema.field("cls").type.list_size
    cls_tokens, mean_patches = (table[name].combine_chunks().flatten().to_numpy().astype(np.float32)
                                .reshape(len(hashes), width) for name in ("cls", "mean_patch"))
    if _matrix_digest(cls_tokens, mean_patches, hashes) != table.schema.metadata[b"digest"].decode():
        raise ValueError("contents do not match their checksum")
    return hashes, cls_tokens, mean_patches


def write_chunk(directory: Path, hashes: list[str], cls_tokens: np.ndarray, mean_patches: np.ndarray) -> None:
    """One Arrow file of features with its checksum, appearing whole or not at all."""
    columns = {"sha256": pa.array(hashes, pa.string())}
    for name, matrix in (("cls", cls_tokens), ("mean_patch", mean_patches)):
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    table = pa.table(columns).replace_schema_metadata(
        {"digest": _matrix_digest(cls_tokens, mean_patches, hashes)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    # Named by time, then a random part: processes writing at once never collide.
    atomic_write_bytes(directory / "features" / f"chunk-{time.time_ns()}-{uuid.uuid4().hex[:8]}.arrow",
                       sink.getvalue().to_pybytes())


def read_cache(directory: Path, key: dict, *, width: int | None = None, repair: bool = False
               ) -> tuple[dict[str, int], np.ndarray, np.ndarray, str | None]:
    """Load every sound chunk of a cache directory: (index by sha256, CLS rows, mean patch rows, problem).

    A truncated, corrupt or mismatched chunk, or one whose rows are not `width` wide (the backbone's hidden
    size), is left out with the reason, so its images are extracted again and nothing damaged is used; a
    folder made for another key reads as empty. With repair, what was left out is deleted and the folder is
    made ready for new chunks.
    """
    problems, hashes, cls_parts, mean_parts = [], [], [], []
    try:
        found = json.loads((directory / "cache.json").read_text())["key"]
    except FileNotFoundError:
        found = None
    except (OSError, ValueError, KeyError, TypeError) as err:
        found = f"unreadable ({type(err).__name__})"
    if found not in (None, key):
        problems.append(f"{directory}: made for {found}, not {key}; rebuilding")
    chunks = sorted((directory / "features").glob("chunk-*.arrow")) if found == key else []
    for chunk in chunks:
        try:
            chunk_hashes, cls_tokens, mean_patches = _read_chunk(chunk)
            if width is not None and cls_tokens.shape[1] != width:
                raise ValueError(f"rows {cls_tokens.shape[1]} wide, the backbone's are {width}")
        except Exception as err:  # truncated Arrow files raise several types
            problems.append(f"{chunk}: unreadable ({type(err).__name__}: {err}); rebuilding its images")
            if repair:
                chunk.unlink(missing_ok=True)
            continue
        hashes += chunk_hashes
        cls_parts.append(cls_tokens)
        mean_parts.append(mean_patches)
    if repair and found != key:
        for stale in (directory / "features").glob("chunk-*.arrow"):
            stale.unlink()
        atomic_write_json(directory / "cache.json", {"key": key})
    if not cls_parts:
        return {}, np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), "; ".join(problems) or None
    index = {h: i for i, h in enumerate(hashes)}
    return index, np.concatenate(cls_parts), np.concatenate(mean_parts), "; ".join(problems) or None


class _ChunkWriter:
    """Features in arrival order, written as a chunk every CHUNK_ROWS rows or CHUNK_SECONDS."""

    def __init__(self, directory: Path):
        self.directory, self.parts, self.written, self.since = directory, [], 0, time.monotonic()

    def add(self, hashes: list[str], cls_tokens: np.ndarray, mean_patches: np.ndarray) -> None:
        self.parts.append((hashes, cls_tokens, mean_patches))
        if sum(len(h) for h, _, _ in self.parts) >= CHUNK_ROWS or time.monotonic() - self.since > CHUNK_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            hashes = [h for part, _, _ in self.parts for h in part]
            write_chunk(self.directory, hashes, np.concatenate([c for _, c, _ in self.parts]),
                        np.concatenate([m for _, _, m in self.parts]))
            self.written += len(hashes)
        self.parts, self.since = [], time.monotonic()


def extract(extractor: DinoFeatureExtractor, paths: list[str], *, image_size: int, batch_size: int,
            num_workers: int, accelerator: Accelerator, track=None, log=None,
            on_batch=None, hashes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CLS and mean patch tokens of this process's images, fp16 autocast on CUDA.

    Workers (num_workers, -1: default_workers()) decode the next batches while the model runs.
    on_batch(start, cls, mean) receives each batch as it is done. Out of memory halves the batch and
    goes on from the first image not yet done. With `hashes`, each file must still have its hash
    (ImageDataset).
    """
    dataset = ImageDataset(paths, image_size=image_size, patch_size=extractor.patch_size, hashes=hashes)
    extractor = extractor.to(accelerator.device)
    workers = default_workers() if num_workers < 0 else num_workers
    cls_parts, mean_parts, done = [], [], 0
    progress = track(total=len(paths)) if track else None
    while done < len(paths):
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(done, len(paths))),
                                             batch_size=batch_size, num_workers=workers,
                                             pin_memory=accelerator.device.type == "cuda")
        try:
            with torch.inference_mode(), accelerator.autocast():
                for pixels in loader:
                    cls_token, mean_patch = extractor(pixels.to(accelerator.device, non_blocking=True))
                    cls_parts.append(cls_token.float().cpu().numpy())
                    mean_parts.append(mean_patch.float().cpu().numpy())
                    if on_batch:
                        on_batch(done, cls_parts[-1], mean_parts[-1])
                    done += len(pixels)
                    if progress is not None:
                        progress.update(len(pixels))
        # Accelerate's find_executable_batch_size shrinks by 10% per failure; halving finds a fit in log2 steps.
        except Exception as err:
            if not should_reduce_batch_size(err) or batch_size == 1:
                raise
            batch_size //= 2
            release_memory()
            if log:
                log(f"out of memory: extraction batch size halved to {batch_size}")
    if progress is not None:
        progress.close()
    width = extractor.hidden_size
    return (np.concatenate(cls_parts) if cls_parts else np.zeros((0, width), np.float32),
            np.concatenate(mean_parts) if mean_parts else np.zeros((0, width), np.float32))


def table_features(table, *, backbone: Backbone, image_size: int, cache_dir: str,
                   batch_size: int, num_workers: int, accelerator: Accelerator,
                   track=None, log=print) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS and mean patch features for every row of `table` (a Dataset with sha256 and path, in its order),
    from the cache where valid.

    Only images missing from the cache go through the backbone, split across processes, and are
    saved in chunks as they come. Ctrl-C keeps what was extracted, says so and re-raises.
    """
    precision = accelerator.mixed_precision if accelerator.device.type == "cuda" else "no"
    key = cache_key(backbone=backbone.id, image_size=image_size, patch_size=backbone.patch_size,
                    precision=precision)
    directory = Path(cache_dir) / ("features-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode())
                                   .hexdigest()[:16])
    with accelerator.main_process_first():  # the main process repairs; the others then read the same chunks
        index, cls_tokens, mean_patches, problem = read_cache(directory, key, width=backbone.hidden_size,
                                                              repair=accelerator.is_main_process)
    if problem and accelerator.is_main_process:
        log(f"feature cache: {problem}")
    hashes = list(table["sha256"])
    missing = sorted(set(hashes) - set(index))
    if missing:
        path_of = dict(zip(hashes, table["path"]))
        log(f"feature cache: {len(table) - len(missing)} of {len(table)} images cached, extracting {len(missing)}")
        extractor = DinoFeatureExtractor.from_pretrained(str(backbone.path))
        with accelerator.split_between_processes(missing) as mine:
            chunks = _ChunkWriter(directory)
            try:
                extract(extractor, [path_of[h] for h in mine], image_size=image_size, batch_size=batch_size,
                        num_workers=num_workers, accelerator=accelerator, track=track, log=log,
                        on_batch=lambda start, c, m: chunks.add(mine[start:start + len(c)], c, m), hashes=mine)
            except KeyboardInterrupt:
                chunks.flush()
                log(f"feature extraction interrupted: kept the features of {len(index) + chunks.written} images in "
                    f"{directory}; a rerun extracts only the other {len(mine) - chunks.written}")
                raise
            chunks.flush()
        del extractor
        accelerator.wait_for_everyone()
        index, cls_tokens, mean_patches, problem = read_cache(directory, key, width=backbone.hidden_size)
        lost = set(missing) - set(index)
        if problem or lost:
            raise RuntimeError(f"feature cache {directory}: {problem or f'{len(lost)} extracted images not found'}")
    rows = np.asarray([index[h] for h in hashes], dtype=np.int64)
    return torch.from_numpy(cls_tokens[rows]), torch.from_numpy(mean_patches[rows])

