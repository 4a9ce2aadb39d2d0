"""What the bench scripts share: the device, synchronised timing, peak memory, random backbones, tables."""

import contextlib
import ctypes
import gc
import os
import platform
import re
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import Dinov2Config, Dinov2Model

from pipeline.backbones import RANDOM_BACKBONES, DinoFeatureExtractor

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def add_model_arguments(parser, *, backbone: str, size: int) -> None:
    """--backbone, --size and --device, which every bench script that runs a backbone takes."""
    parser.add_argument("--backbone", default=backbone, choices=sorted(RANDOM_BACKBONES),
                        help="random DINOv2 architecture: tiny, or large = ViT-L/14 (default: %(default)s)")
    parser.add_argument("--size", type=int, default=size, help="image_size (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    return torch.device(name)


def random_extractor(kind: str, *, seed: int = 0) -> DinoFeatureExtractor:
    """A frozen DINOv2 of a backbones.RANDOM_BACKBONES architecture with random weights and SDPA attention.

    Speed does not depend on the weights, so "large" times the real ViT-L/14 with no download.
    """
    torch.manual_seed(seed)
    return DinoFeatureExtractor(Dinov2Model(Dinov2Config(**RANDOM_BACKBONES[kind], attn_implementation="sdpa")))


def autocast(device: torch.device):
    """fp16 autocast on CUDA, the way pipeline/features.py extracts; fp32 on CPU."""
    return torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable, device: torch.device):
    """(fn(), wall seconds), with the device's queued work finished before each clock read."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def median_seconds(fn: Callable, device: torch.device, *, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device)[1] for _ in range(repeats))


def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.M).group(1))


def _can_reset_peak_rss() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return STATUS.exists()
    except OSError:
        return False


PEAK_RSS = _can_reset_peak_rss()
MEMORY_METHOD = ("peak resident memory above the resident memory before (Linux VmHWM, reset through "
                 "/proc/self/clear_refs): every allocation, numpy and torch included" if PEAK_RSS else
                 "tracemalloc peak: Python and numpy allocations only, torch tensors not counted")


def measure(fn: Callable):
    """Run fn once: (result, wall seconds, peak memory growth in bytes) by MEMORY_METHOD.

    The result is still alive at the end, so memory it holds (a pair table) counts.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap pages otherwise hide the next allocation
    if PEAK_RSS:
        before = _status_kib("VmRSS")
        CLEAR_REFS.write_text("5")
    else:
        tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    if PEAK_RSS:
        peak = (_status_kib("VmHWM") - before) * 1024
    else:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, seconds, max(peak, 0)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, AttributeError):
        cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M).group(1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")  # other work skews CPU timings
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} (CPU, {torch.get_num_threads()} threads), "
            f"load average {load:.1f} at start")


def duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds * 1000:.3g} ms"


def size(num_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.3g} {unit}"
    return f"{num_bytes:.0f} B"


def print_table(headers: list[str], rows: list[list]) -> None:
    """A markdown table: what RESULTS.md and the README hold, pasted as printed."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    print(flush=True)
