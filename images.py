"""Images: the one decoder and the one preprocessing, used by training, evaluation, export and prediction.

Decoding turns anything Pillow reads into RGB the same way (EXIF rotation, 16-bit range, CMYK,
transparency on white paper) and refuses decompression bombs; preprocessing letterboxes it for the
backbone (docs/design.md 1-3).
"""

import hashlib
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bumped whenever preprocess() changes, so cached features computed the old way are never reused.
PREPROCESSING_VERSION = "letterbox-v1"
# Pillow warns above this many pixels and we refuse: a 20000x20000 image is a decompression bomb.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS


def to_rgb(image: Image.Image) -> Image.Image:
    """EXIF rotation, 16-bit range, CMYK, and alpha on white paper, to a new RGB image."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # convert("L") clips 16-bit values at 255; scale the real range instead.
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        image = Image.fromarray(np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    return image.convert("RGB")


def open_image(source: str | os.PathLike | bytes) -> Image.Image:
    """Decode an image to RGB the same way everywhere; refuse decompression bombs before decoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    with image:
        # Warning filters are process-wide and scan_images decodes in threads: check the size here too.
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(
                f"{image.width}x{image.height} = {image.width * image.height / 1e6:.0f}M pixels, over the "
                f"{MAX_IMAGE_PIXELS / 1e6:.0f}M-pixel limit")
        image.load()
        return to_rgb(image)


def check_image(path: str | os.PathLike) -> tuple[str, str | None]:
    """Read, hash and fully decode one image. Returns (sha256 of the file bytes, error or None)."""
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
        open_image(payload)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        return digest, f"refused as a decompression bomb: {err}"
    except UnidentifiedImageError:
        return digest, "not an image: Pillow cannot identify its format"
    except Exception as err:  # Pillow raises many types for corrupt data
        return digest, f"not a readable image: {type(err).__name__}: {err}"
    return digest, None


def input_size(image_size: int, patch_size: int) -> int:
    """The side the backbone sees: image_size rounded up to whole patches.

    768 is not a multiple of 14; DINOv2's patch conv would silently drop the last 12 rows and
    columns, so the 768 letterbox is padded to 770 (55 patches) and every pixel is seen.
    """
    return math.ceil(image_size / patch_size) * patch_size


def preprocess(image: Image.Image, image_size: int, patch_size: int) -> torch.Tensor:
    """Letterbox to image_size (whole work kept: composition is judged), pad to whole patches, normalise.

    Returns float32 (3, side, side). Padding is the ImageNet mean, i.e. zero after normalisation.
    Takes open_image's output; any other PIL image goes through the same conversion first.
    """
    if image.mode != "RGB":
        image = to_rgb(image)
    scale = image_size / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.resize(size, Image.BICUBIC, reducing_gap=3.0)
    side = input_size(image_size, patch_size)
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    out = np.zeros((side, side, 3), dtype=np.float32)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    out[top:top + size[1], left:left + size[0]] = (pixels - mean) / std
    return torch.from_numpy(out.transpose(2, 0, 1).copy())
