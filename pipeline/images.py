"""Images: the one decoder and the one preprocessing, used by training, evaluation, export and prediction.

Decoding turns anything Pillow reads into RGB the same way (EXIF rotation, high bit depths, CMYK,
transparency on white paper) and refuses decompression bombs and pictures whose white level it cannot
know. `load_pixels` decodes only what the letterbox needs: a 12 MP phone JPEG is decoded at 1/4 scale
by the codec itself, then resized once. Image checks are remembered per file while it is unchanged.
"""

import contextlib
import ctypes
import hashlib
import io
import math
import os
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

from .files import StatCache
from .resample import resize_bicubic

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bumped whenever load_pixels() or preprocess() change, so cached features computed the old way are never reused.
PREPROCESSING_VERSION = "letterbox-v3-torch-bicubic"
# Bumped whenever check_image() changes what it accepts, so cached verdicts made the old way are redone.
CHECK_VERSION = "check-v2"
# Pillow warns above this many pixels and we refuse: a 20000x20000 image is a decompression bomb.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS
# Decoded bytes that concurrent checks may hold at once: small files can declare 80 MP canvases each.
CHECK_MEMORY = 1 << 30
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
# (pixel / 255 - mean) / std of every 8-bit level, per channel, in float32 as pixel * (1/255/std) - mean/std:
# normalising by table lookup costs a quarter of the arithmetic on a 768 px picture.
_NORMALISED_LEVELS = (np.arange(256, dtype=np.float32) * (np.float32(1 / 255) / np.float32(IMAGENET_STD))[:, None]
                      - (np.float32(IMAGENET_MEAN) / np.float32(IMAGENET_STD))[:, None])


class MultiFrameError(ValueError):
    """An image of several frames: the one that is graded cannot be told."""


def letterbox_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """The picture's size inside the letterbox: long side image_size, aspect kept, rounded half to even."""
    scale = image_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    """Image.open that refuses decompression bombs from the header, before any pixel is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    # Warning filters are process-wide and scan_images checks in threads: check the size here too.
    if image.width * image.height > MAX_IMAGE_PIXELS:
        image.close()
        raise Image.DecompressionBombError(
            f"{image.width}x{image.height} = {image.width * image.height / 1e6:.0f}M pixels, over the "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f}M-pixel limit")
    # Which frame of a multi-page TIFF or an animated GIF/WebP/PNG is the drawing is unknown: refused, not
    # scored by its first frame. A phone's MPO JPEG is one photo; its other frames are previews.
    if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
        frames = image.n_frames
        image.close()
        raise MultiFrameError(f"{frames} frames (a multi-page or animated {image.format}): which one is the drawing "
                              "is unknown; save the frame to grade as an image of its own")
    return image


def _white_level(image: Image.Image) -> float:
    """The value that means white in a high-bit-depth image, or ValueError when it cannot be known.

    16-bit containers often hold 10-, 12- or 14-bit data unscaled, and float images [0, 1] or [0, 255]:
    read with the wrong white level they decode to black or to white, so such images are refused.
    """
    low, high = image.getextrema()
    if image.mode == "F":
        if not (0.0 <= low and high <= 1.0):  # NaN fails both comparisons
            raise ValueError(f"float image with values from {low} to {high}: only [0, 1] has a known white level")
        white = 1.0
    elif low < 0 or high > 65535:
        raise ValueError(f"{image.mode} integer image with values from {low} to {high}: beyond 16 bits the white "
                         "level is unknown; save it as 8- or 16-bit")
    else:
        white = 65535.0
    if high < white / 4:
        raise ValueError(f"{image.mode} image whose brightest value is {high} of {white:g}: it would decode nearly "
                         "black (fewer bits stored unscaled?); save it scaled to its full range or as 8-bit")
    return white


def to_rgb(image: Image.Image) -> Image.Image:
    """EXIF rotation, high bit depths, CMYK, and alpha on white paper, to a new RGB image."""
    image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_DEPTH_MODES:
        # convert("L") clips 16-bit values at 255 and floats at 1/255: scale the real range instead.
        pixels = np.asarray(image, dtype=np.float32)
        grey = np.clip(pixels * (255.0 / _white_level(image)), 0, 255).round().astype(np.uint8)
        transparent = image.info.get("transparency")
        if isinstance(transparent, int):  # grey PNG with tRNS: that one value is paper showing through
            grey[pixels == transparent] = 255
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    return image.convert("RGB")


def open_image(source: str | os.PathLike | bytes) -> Image.Image:
    """The whole picture at full size in RGB (thumbnails, figures); the model's input is load_pixels'."""
    with _open(source) as image:
        image.load()
        return to_rgb(image)


def decode_reduced(source: str | os.PathLike | bytes, image_size: int) -> Image.Image:
    """Decode to RGB, upright, only as large as the letterbox needs: JPEGs are DCT-scaled by 1/2, 1/4
    or 1/8 as far as both sides stay >= the letterbox's (other formats are decoded whole)."""
    with _open(source) as image:
        # JPEG and MPO (the multi-picture JPEG many phones write) scale; other formats ignore draft().
        image.draft(None, letterbox_size(image.width, image.height, image_size))
        image.load()
        return to_rgb(image)


def load_picture(source: str | os.PathLike | bytes, image_size: int) -> np.ndarray:
    """File to the letterboxed picture, uint8 (3, h, w): a reduced decode, then the letterbox."""
    return letterbox(decode_reduced(source, image_size), image_size)


def load_pixels(source: str | os.PathLike | bytes, image_size: int, patch_size: int) -> "torch.Tensor":
    """File to model input, the one way (training, evaluation, export parity, predict): see
    PREPROCESSING_STEPS."""
    return preprocess(decode_reduced(source, image_size), image_size, patch_size)


def default_workers() -> int:
    """Decoding workers (DataLoader processes, predict's threads): the CPU cores this process may use,
    shared by the processes on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


class _MemoryBudget:
    """Threads wait here until the decoded bytes they will hold fit under a shared limit."""

    def __init__(self, limit: int):
        self.limit, self.held, self.ready = limit, 0, threading.Condition()

    @contextlib.contextmanager
    def hold(self, amount: int):
        amount = min(amount, self.limit)  # one image over the limit still runs, alone
        with self.ready:
            self.ready.wait_for(lambda: self.held + amount <= self.limit)
            self.held += amount
        try:
            yield
        finally:
            with self.ready:
                self.held -= amount
                self.ready.notify_all()
            if amount > 1 << 28 and _LIBC is not None:  # over 32 MP: rare, and trimming costs a few ms
                _LIBC.malloc_trim(0)  # glibc keeps freed blocks in each thread's arena: give them back


_check_memory = _MemoryBudget(CHECK_MEMORY)
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to trim
    _LIBC = None


def check_decode(payload: bytes) -> None:
    """Decode enough to be sure the image loads the way load_pixels will load it, or raise.

    A JPEG is decoded at 1/8 scale: libjpeg still reads and entropy-decodes every coefficient, so a
    truncated or corrupt stream fails as it does at full size. Other formats are decoded whole. Then
    the same to_rgb as load_pixels: EXIF, bit depth and white level are checked on the real data.
    """
    with _open(payload) as image:
        image.draft(None, (1, 1))
        # Pillow stores at most 4 bytes per pixel, and the RGB copy another 4.
        with _check_memory.hold(image.width * image.height * 8):
            image.load()
            to_rgb(image)


def check_image(path: str | os.PathLike) -> tuple[str, str | None]:
    """Read, hash and decode-check one image. Returns (sha256 of the file bytes, error or None)."""
    try:
        payload = Path(path).read_bytes()
    except FileNotFoundError:
        return "", "file not found"
    except OSError as err:
        return "", f"cannot read: {err.strerror or err}"
    digest = hashlib.sha256(payload).hexdigest()
    if not payload:
        return digest, "empty file (0 bytes)"
    try:
        check_decode(payload)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        return digest, f"refused as a decompression bomb: {err}"
    except UnidentifiedImageError:
        return digest, "not an image: Pillow cannot identify its format"
    except Exception as err:  # Pillow raises many types for corrupt data
        return digest, f"not a readable image: {type(err).__name__}: {err}"
    return digest, None


def check_images(paths: list[str], *, cache_dir: str | os.PathLike | None = None, workers: int = 8,
                 track=None) -> list[tuple[str, str | None]]:
    """check_image of every path ("" is skipped), in threads (Pillow releases the GIL while decoding).

    With cache_dir, a verdict is reused while the file's size, mtime, ctime and inode are unchanged,
    so a second start costs a stat per file; new verdicts are saved every few hundred files, so an
    interrupted scan keeps its progress.
    """
    cache = StatCache(Path(cache_dir) / "image-checks.sqlite" if cache_dir is not None else None,
                      version=f"{CHECK_VERSION} Pillow-{PIL.__version__}")
    absolute = [os.path.abspath(p) if p else "" for p in paths]
    stats = [cache.stamp(p) if p else None for p in absolute]
    remembered = [cache.get(p, stat) if p else ["", None] for p, stat in zip(absolute, stats)]
    results = [tuple(found) if found is not None else None for found in remembered]  # (sha256, error)
    todo = [i for i, result in enumerate(results) if result is None]
    pool = ThreadPoolExecutor(max_workers=workers)
    progress = track(total=len(paths), initial=len(paths) - len(todo)) if track else None
    batch = []
    try:
        for i, result in zip(todo, pool.map(lambda i: check_image(paths[i]), todo)):
            results[i] = result
            batch.append((absolute[i], stats[i], list(result)))
            if len(batch) >= 256:
                cache.put(batch)
                batch = []
            if progress is not None:
                progress.update(1)
    finally:  # Ctrl-C: drop the queued checks, keep the verdicts made
        pool.shutdown(cancel_futures=True)
        cache.put(batch)
        cache.close()
        if progress is not None:
            progress.close()
    return results


def input_size(image_size: int, patch_size: int) -> int:
    """The side the backbone sees: image_size rounded up to whole patches.

    768 is not a multiple of 14; DINOv2's patch conv would silently drop the last 12 rows and
    columns, so the 768 letterbox is padded to 770 (55 patches) and every pixel is seen.
    """
    return math.ceil(image_size / patch_size) * patch_size


def letterbox(image: Image.Image, image_size: int) -> np.ndarray:
    """An RGB picture at its letterbox size (w, h): uint8 (3, h, w).

    torch's antialiased bicubic on 8 bits: Pillow's BICUBIC to within two levels, at a quarter of its
    cost (AVX2 and NEON code), and as fast from a whole A4 scan as Pillow's box reduction would be.
    Where torch is not loaded (the ONNX path, which never imports it) resample.py computes the same
    integers in numpy, at about 50 times torch's time (0.1 s for a phone photo to 768 on one core): the
    import it saves costs as much as 20 photos.
    """
    w, h = letterbox_size(image.width, image.height, image_size)
    if "torch" not in sys.modules:
        return resize_bicubic(np.asarray(image), w, h).transpose(2, 0, 1)
    import torch

    channels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a channels-last view: the fast layout
    return torch.nn.functional.interpolate(channels[None], size=(h, w), mode="bicubic", antialias=True)[0].numpy()


def on_canvas(picture: np.ndarray, side: int, out: np.ndarray | None = None) -> np.ndarray:
    """A uint8 (3, h, w) picture normalised and centred on a side x side canvas of the ImageNet mean
    (0 after normalisation): float32 (3, side, side), written into `out` when given (every value of it)."""
    out = np.empty((3, side, side), dtype=np.float32) if out is None else out
    height, width = picture.shape[1:]
    top, left = (side - height) // 2, (side - width) // 2
    out[:, :top] = out[:, top + height:] = 0
    out[:, top:top + height, :left] = out[:, top:top + height, left + width:] = 0
    pixels = np.asarray(picture)
    for channel in range(3):
        # mode="clip" lets take() write into the strided window unbuffered; 8-bit indices never clip.
        np.take(_NORMALISED_LEVELS[channel], pixels[channel], mode="clip",
                out=out[channel, top:top + height, left:left + width])
    return out


def preprocess(image: Image.Image, image_size: int, patch_size: int) -> "torch.Tensor":
    """Letterbox to image_size (whole work kept: composition is judged), pad to whole patches, normalise.

    Returns float32 (3, side, side). Takes open_image's output; any other PIL image goes through the
    same conversion first. load_pixels is this after a reduced decode.
    """
    import torch

    if image.mode != "RGB":
        image = to_rgb(image)
    return torch.from_numpy(on_canvas(letterbox(image, image_size), input_size(image_size, patch_size)))


PREPROCESSING_STEPS = [
    "decode to RGB: EXIF orientation applied; transparency composited on white; CMYK converted; 16-bit and "
    "float images scaled by their white level (65535, or 1.0 for float)",
    "letterbox size (w, h) = (max(1, round(W * s)), max(1, round(H * s))), s = image_size / max(W, H), "
    "Python round (half to even)",
    "JPEG (and MPO) only, reduced decode: libjpeg DCT scaling by 1/k, k the largest of 8, 4, 2, 1 with k <= "
    "min(W // w, H // h) in the stored orientation (before EXIF rotation); size ceil(W / k) x ceil(H / k) "
    "(Pillow Image.draft)",
    "bicubic resampling of the decoded, upright W' x H' picture to w x h on 8 bits: torch.nn.functional.interpolate("
    "mode='bicubic', antialias=True, align_corners=False) on uint8 (Keys a = -0.5, support widened by the factor "
    "when reducing; Pillow's Image.resize((w, h), BICUBIC) agrees to within 2 levels)",
    "paste at offset ((S - w) // 2, (S - h) // 2) on an S x S canvas, S = input_size (whole patches)",
    "per channel, in float32: pixel * a - b, a = float32(1 / 255) / float32(std), b = float32(mean) / float32(std) "
    "(that is (pixel / 255 - mean) / std); the canvas outside the picture is 0", "CHW float32",
]


def preprocessing_description(image_size: int, patch_size: int) -> dict:
    """What model.json states so that a consumer outside this repository reproduces the input."""
    return {"version": PREPROCESSING_VERSION, "image_size": image_size, "patch_size": patch_size,
            "input_size": input_size(image_size, patch_size), "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "steps": PREPROCESSING_STEPS,
            "reproducibility": "torch's interpolate with the same CPU code (AVX2 on x86-64, NEON on ARM) "
                               "reproduces the input exactly; other code and Pillow's BICUBIC agree to within "
                               "2 levels on a few pixels, so the scores are close, not identical"}
