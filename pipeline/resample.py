"""torch's antialiased bicubic resize of 8-bit pictures, in numpy: the same integers, without torch.

The ONNX path (predict.py and the API on an export) needs nothing but onnxruntime, Pillow and numpy, yet
must see the very pixels training saw. torch.nn.functional.interpolate(mode="bicubic", antialias=True) on
uint8 is Pillow's resampling in fixed point: per output pixel a window of input pixels, Keys' cubic
(a = -0.5) widened by the reduction factor, the weights normalised in float64 and rounded to int16 at the
largest precision that keeps them in range, the sum rounded and clipped to 8 bits; horizontal pass first.
Done here with the same arithmetic, it gives the same integers (tests compare them with torch's).
"""

import math

import numpy as np

KEYS_A = -0.5
SUPPORT = 2.0  # of the cubic kernel, in input pixels when enlarging


def cubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    near = ((KEYS_A + 2) * x - (KEYS_A + 3)) * x * x + 1
    far = ((KEYS_A * x - 5 * KEYS_A) * x + 8 * KEYS_A) * x - 4 * KEYS_A
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def window_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, int]:
    """For each output pixel, the input indices (n_out, taps) and their int16-range weights, and the
    number of fraction bits of those weights."""
    scale = n_in / n_out
    support = SUPPORT * max(scale, 1.0)
    taps = math.ceil(support) * 2 + 1
    center = scale * (np.arange(n_out) + 0.5)
    # int64 casts truncate like C's: the window bounds are computed as torch computes them.
    first = np.maximum((center - support + 0.5).astype(np.int64), 0)
    size = np.clip(np.minimum((center + support + 0.5).astype(np.int64), n_in) - first, 0, taps)
    tap = np.arange(taps)
    weights = cubic((tap + first[:, None] - center[:, None] + 0.5) / max(scale, 1.0))
    weights = np.where(tap < size[:, None], weights, 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total != 0)
    # The most fraction bits (at most 22) for which the largest weight, doubled, stays below 2**15.
    bits = next((b for b in range(22) if int(0.5 + weights.max() * (1 << (b + 1))) >= 1 << 15), 22)
    scaled = weights * (1 << bits)
    fixed = np.where(scaled < 0, scaled - 0.5, scaled + 0.5).astype(np.int32)  # round half away from zero
    return np.minimum(first[:, None] + tap, n_in - 1), fixed, bits


def resample_rows(pixels: np.ndarray, n_out: int) -> np.ndarray:
    """uint8 (n_in, ...) resampled along its first axis to (n_out, ...)."""
    if pixels.shape[0] == n_out:  # torch skips a pass of unchanged size
        return pixels
    index, weights, bits = window_weights(pixels.shape[0], n_out)
    total = np.full((n_out, *pixels.shape[1:]), 1 << (bits - 1), dtype=np.int32)
    product, spread = np.empty_like(total), (n_out,) + (1,) * (pixels.ndim - 1)
    for tap in range(index.shape[1]):  # whole rows gathered per tap: contiguous copies, no per-pixel loop
        np.multiply(pixels[index[:, tap]], weights[:, tap].reshape(spread), out=product, dtype=np.int32)
        total += product
    total >>= bits
    return np.clip(total, 0, 255, out=total).astype(np.uint8)


def resize_bicubic(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, C) to (height, width, C), as torch's antialiased bicubic resize does it."""
    across = resample_rows(np.ascontiguousarray(pixels.transpose(1, 0, 2)), width)
    return resample_rows(np.ascontiguousarray(across.transpose(1, 0, 2)), height)
