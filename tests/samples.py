"""Hand-made images of every kind a user's folder holds, written byte by byte where Pillow cannot."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_file(width: int, height: int, *, bit_depth: int = 8, color_type: int = 0, rows: bytes = b"\0") -> bytes:
    """A PNG written by hand: its header may claim any size (the default rows are far too short for it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def encoded(image: Image.Image, kind: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **kwargs)
    return buffer.getvalue()


def append_rows(data_dir: Path, *lines: str) -> None:
    with open(data_dir / "metadata.csv", "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def exif_rotated_jpeg() -> bytes:
    stored = Image.new("RGB", (40, 20), "white")
    stored.paste((255, 0, 0), (0, 0, 10, 10))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encoded(stored, "JPEG", quality=95, exif=exif)


def ramp_16_bit_png() -> bytes:
    return encoded(Image.fromarray(np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (4, 1))))


def ramp_16_bit_rgb_png() -> bytes:
    """Red rises, green falls, blue stays at half: 16 bits per channel (Pillow cannot write these)."""
    ramp = np.linspace(0, 65535, 64)
    pixels = np.stack([ramp, ramp[::-1], np.full(64, 32768)], axis=-1).astype(">u2")
    return png_file(64, 1, bit_depth=16, color_type=2, rows=b"\0" + pixels.tobytes())


def cmyk_jpeg() -> bytes:
    return encoded(Image.new("RGB", (16, 16), (200, 30, 30)).convert("CMYK"), "JPEG", quality=95)


def transparent_palette_png() -> bytes:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 200, 20, 20] + [0] * 762)
    image.paste(1, (2, 0, 4, 4))  # right half: opaque red; left half: transparent black
    return encoded(image, transparency=0)


def one_pixel_png() -> bytes:
    return encoded(Image.new("RGB", (1, 1), (10, 200, 30)))


def truncated_jpeg() -> bytes:
    return encoded(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG")[:-300]


def photo(width: int, height: int, *, orientation: int = 1) -> bytes:
    """A JPEG with a red block in its stored top-left quarter, on white, EXIF orientation as given."""
    stored = Image.new("RGB", (width, height), "white")
    stored.paste((255, 0, 0), (0, 0, width // 4, height // 4))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(stored, "JPEG", quality=95, exif=exif)


def tiff(pixels: np.ndarray, mode: str) -> bytes:
    return encoded(Image.fromarray(pixels, mode), "TIFF")
