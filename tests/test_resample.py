"""pipeline/resample.py: torch's antialiased bicubic resize of 8-bit pictures, the same integers in numpy."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import images
from pipeline.resample import resize_bicubic


def torch_resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    channels = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(channels, size=(height, width), mode="bicubic",
                                           antialias=True)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("seed", range(4))
def test_numpy_resize_gives_torch_s_integers_reducing_enlarging_and_mixed(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        (height, width), (new_height, new_width) = rng.integers(1, 200, size=(2, 2))
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        assert np.array_equal(resize_bicubic(pixels, int(new_width), int(new_height)),
                              torch_resize(pixels, int(new_width), int(new_height))), (height, width, new_height,
                                                                                       new_width)


def test_numpy_resize_of_a_large_reduction_and_of_smooth_pictures_is_torch_s():
    """Factors up to 8 (a scan letterboxed small) widen the window to 33 taps; a smooth gradient is where
    an error of rounding shows as a level off everywhere."""
    rng = np.random.default_rng(9)
    noisy = rng.integers(0, 256, size=(600, 450, 3), dtype=np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 255, 450).astype(np.uint8)[None, :, None], (600, 450, 3)).copy()
    for pixels in (noisy, ramp):
        for width, height in ((56, 75), (449, 599), (451, 601), (900, 1200)):
            assert np.array_equal(resize_bicubic(pixels, width, height), torch_resize(pixels, width, height))


def test_letterbox_without_torch_loaded_is_the_letterbox_with_it(monkeypatch):
    """The ONNX path letterboxes in numpy (torch is not loaded there): the model sees the same pixels."""
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 256, (130, 97, 3), dtype=np.uint8))
    with_torch = images.letterbox(picture, 56)
    monkeypatch.delitem(sys.modules, "torch")
    without = images.letterbox(picture, 56)
    assert without.dtype == np.uint8 and without.shape == with_torch.shape == (3, 56, 42)
    assert np.array_equal(without, with_torch)
