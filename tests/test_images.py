"""pipeline/images.py: every kind of image decoded right or refused with the reason; the one preprocessing; the
reduced decode of large photos; image checks remembered until a file changes."""

import io
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from conftest import SPLIT, image_frame, write_dataset
from PIL import Image
from samples import (
    append_rows,
    cmyk_jpeg,
    encoded,
    exif_rotated_jpeg,
    one_pixel_png,
    photo,
    png_file,
    ramp_16_bit_png,
    ramp_16_bit_rgb_png,
    tiff,
    transparent_palette_png,
    truncated_jpeg,
)

from pipeline import images
from pipeline.images import IMAGENET_MEAN, IMAGENET_STD, check_image, input_size, load_pixels, open_image, preprocess
from pipeline.tables import TIERS

NORMALISED_WHITE = ((1 - np.array(IMAGENET_MEAN)) / IMAGENET_STD).astype(np.float32)


def test_768_is_padded_to_whole_patches():
    assert input_size(768, 14) == 770 and input_size(224, 14) == 224 and input_size(56, 14) == 56


def test_req_u_005_preprocess_letterboxes_centred_and_keeps_the_aspect():
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    tensor = preprocess(image, 768, 14)
    assert tensor.shape == (3, 770, 770) and tensor.dtype == torch.float32
    drawn = (tensor != 0).any(dim=0)
    rows, cols = torch.nonzero(drawn, as_tuple=True)
    assert (rows.min().item(), rows.max().item() + 1) == (193, 193 + 384)  # 2:1 kept: 768 x 384, centred
    assert (cols.min().item(), cols.max().item() + 1) == (1, 1 + 768)
    assert torch.allclose(tensor[:, 193:577, 1:769], torch.from_numpy(NORMALISED_WHITE)[:, None, None], atol=1e-5)
    assert drawn.sum().item() == 768 * 384  # everything else is padding, exactly 0 after normalisation


def test_req_s_004_small_images_are_letterboxed():
    tensor = preprocess(Image.new("RGB", (1, 1), (255, 255, 255)), 768, 14)
    assert tensor.shape == (3, 770, 770)
    assert torch.allclose(tensor[:, 1:769, 1:769], torch.from_numpy(NORMALISED_WHITE)[:, None, None], atol=1e-5)
    border = torch.ones(770, 770, dtype=torch.bool)
    border[1:769, 1:769] = False
    assert (tensor[:, border] == 0).all()


def test_preprocess_treats_any_pil_image_like_open_image():
    rgba = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
    white = Image.new("RGB", (30, 20), (255, 255, 255))
    assert torch.equal(preprocess(rgba, 56, 14), preprocess(white, 56, 14))


def test_exif_rotated_photo_is_turned_upright():
    image = open_image(exif_rotated_jpeg())
    assert image.size == (20, 40)
    pixels = np.asarray(image).astype(int)
    assert (np.abs(pixels[2:8, 12:18] - [255, 0, 0]) < 30).all()  # now the top-right corner
    assert (pixels[2:8, 2:8] > 225).all()


def test_16_bit_png_keeps_its_range():
    assert Image.open(io.BytesIO(ramp_16_bit_png())).mode.startswith("I;16")
    pixels = np.asarray(open_image(ramp_16_bit_png())).astype(int)
    ramp = np.round(np.linspace(0, 255, 64))
    assert np.abs(pixels[0, :, 0] - ramp).max() <= 1  # a ramp, not saturated to white
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()

    pixels = np.asarray(open_image(ramp_16_bit_rgb_png())).astype(int)[0]
    assert np.abs(pixels - np.stack([ramp, ramp[::-1], np.full(64, 128)], axis=-1)).max() <= 1


def test_cmyk_jpeg_becomes_the_same_rgb():
    assert Image.open(io.BytesIO(cmyk_jpeg())).mode == "CMYK"
    image = open_image(cmyk_jpeg())
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image).astype(int) - [200, 30, 30]).max() <= 6


def test_transparent_palette_pixels_become_white_paper():
    pixels = np.asarray(open_image(transparent_palette_png()))
    assert (pixels[:, :2] == 255).all()
    assert (pixels[:, 2:] == [200, 20, 20]).all()


def test_rgba_is_composited_on_white_paper():
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 128))
    pixels = np.asarray(open_image(encoded(image))).astype(int)
    assert (pixels[0, 0] == 255).all() and (np.abs(pixels[0, 1] - 127) <= 1).all()


def test_req_s_004_1x1_image_fills_the_whole_letterbox():
    tensor = preprocess(open_image(one_pixel_png()), 56, 14)
    expected = (np.array([10, 200, 30]) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    assert tensor.shape == (3, 56, 56)
    assert np.allclose(tensor.numpy(), expected[:, None, None].astype(np.float32), atol=1e-5)


def test_every_accepted_kind_passes_the_image_checks(tmp_path):
    data_dir = write_dataset(tmp_path / "data")
    kinds = {"rotated.jpg": exif_rotated_jpeg, "ramp16.png": ramp_16_bit_png, "rgb16.png": ramp_16_bit_rgb_png,
             "cmyk.jpg": cmyk_jpeg, "palette.png": transparent_palette_png, "1x1.png": one_pixel_png}
    for name, make in kinds.items():
        (data_dir / "images" / name).write_bytes(make())
    append_rows(data_dir, *(f"images/{name},{TIERS[i % 4]},artist{i:02d}" for i, name in enumerate(kinds)))
    table, skipped = image_frame(data_dir, **SPLIT)
    assert skipped == [] and len(table) == 96 + len(kinds)
    assert set(table.file_name) >= {f"images/{name}" for name in kinds}


@pytest.mark.parametrize("payload, reason", [
    (truncated_jpeg, "truncated"),
    (lambda: b"", "empty file"),
    (lambda: b"file_name,tier,artist\nthis is text, not a picture\n", "cannot identify its format"),
    (lambda: png_file(20000, 20000), "decompression bomb"),
    (lambda: png_file(10000, 10000), "decompression bomb"),  # between Pillow's warning and error limits
], ids=["truncated-jpeg", "zero-byte", "text-named-png", "20000x20000", "10000x10000"])
def test_unreadable_images_are_refused_with_the_reason(tmp_path, payload, reason):
    path = tmp_path / "image.png"
    path.write_bytes(payload())
    _, error = check_image(path)
    assert reason in error


def test_decompression_bomb_is_refused_even_when_warnings_are_not_errors(monkeypatch):
    # scan_images decodes in threads, and warning filters are process-wide: one thread's filter can be gone
    monkeypatch.setattr(warnings, "simplefilter", lambda *args, **kwargs: None)
    with pytest.warns(Image.DecompressionBombWarning), \
            pytest.raises(Image.DecompressionBombError, match="10000x10000 = 100M pixels, over the 89M-pixel limit"):
        open_image(png_file(10000, 10000))


def resized_from(monkeypatch, source: bytes, image_size: int) -> tuple[int, int]:
    """The size of the decoded picture that load_pixels hands to the letterbox resize."""
    seen, letterbox = [], images.letterbox
    monkeypatch.setattr(images, "letterbox", lambda image, *a: seen.append(image.size) or letterbox(image, *a))
    load_pixels(source, image_size, 14)
    return seen[0]


@pytest.mark.parametrize("make", [exif_rotated_jpeg, cmyk_jpeg, ramp_16_bit_png, transparent_palette_png],
                         ids=["orientation", "cmyk", "16-bit", "palette"])
def test_small_inputs_of_every_kind_decode_as_before(make):
    """Below the letterbox side nothing is reduced: the model input is the full decode's, exactly."""
    assert torch.equal(load_pixels(make(), 56, 14), preprocess(open_image(make()), 56, 14))


@pytest.mark.parametrize("orientation", [1, 6])
def test_large_jpeg_decoded_reduced_is_the_same_picture_upright(orientation):
    source = photo(1600, 1200, orientation=orientation)
    reduced, full = load_pixels(source, 56, 14), preprocess(open_image(source), 56, 14)
    assert (reduced - full).abs().mean() < 0.02
    red = (reduced[0] > 2.0) & (reduced[1] < -1.5)  # normalised red: high R, low G
    rows, cols = np.nonzero(red.numpy())
    # stored top-left; EXIF 6 turns it clockwise to the top-right. Letterbox 56x42 (landscape), 42x56 (portrait)
    if orientation == 1:
        assert rows.max() < 7 + 11 and cols.max() < 14 and rows.min() >= 7
    else:
        assert cols.min() >= 7 + 42 - 11 and rows.max() < 14 and cols.max() < 7 + 42


@pytest.mark.parametrize("image_size, decoded", [(768, (1008, 756)), (1008, (1008, 756)), (1009, (2016, 1512)),
                                                 (56, (504, 378)), (4032, (4032, 3024))])
def test_jpeg_is_decoded_at_the_smallest_dct_scale_still_covering_the_letterbox(monkeypatch, image_size, decoded):
    assert resized_from(monkeypatch, photo(4032, 3024), image_size) == decoded


def test_phone_mpo_is_decoded_reduced_like_a_jpeg(monkeypatch):
    frames = [Image.open(io.BytesIO(photo(4032, 3024))), Image.new("RGB", (640, 480))]
    source = encoded(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(source)).format == "MPO"
    assert resized_from(monkeypatch, source, 768) == (1008, 756)


def test_rotated_jpeg_scale_is_chosen_on_the_stored_picture(monkeypatch):
    assert resized_from(monkeypatch, photo(4032, 3024, orientation=6), 768) == (756, 1008)


def test_png_is_decoded_whole(monkeypatch):
    source = encoded(Image.new("RGB", (800, 600), (10, 20, 30)))
    assert resized_from(monkeypatch, source, 56) == (800, 600)


def test_letterbox_follows_pillows_bicubic_within_two_levels():
    """torch's 8-bit antialiased bicubic stands in for Pillow's BICUBIC; bilinear or no antialias would not."""
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((400, 300), Image.BICUBIC)
    noisy = np.clip(np.asarray(smooth, np.int16) + rng.integers(-40, 41, (300, 400, 3)), 0, 255).astype(np.uint8)
    for image_size in (1000, 300, 100, 56):  # up, down by 4/3, by 4, by 7.1
        picture = Image.fromarray(noisy)
        ours = images.letterbox(picture, image_size).transpose(1, 2, 0).astype(int)
        size = images.letterbox_size(400, 300, image_size)
        pillow = np.asarray(picture.resize(size, Image.BICUBIC)).astype(int)
        assert ours.shape == pillow.shape and np.abs(ours - pillow).max() <= 2, image_size


def test_canvas_is_the_normalised_picture_centred_on_zeros_whatever_was_in_out():
    rng = np.random.default_rng(1)
    mean, std = np.array(images.IMAGENET_MEAN)[:, None, None], np.array(images.IMAGENET_STD)[:, None, None]
    for height, width in ((5, 9), (9, 5), (11, 11)):
        picture = torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))
        out = np.full((3, 11, 11), np.nan, np.float32)  # a reused batch row still holds the last picture
        images.on_canvas(picture, 11, out=out)
        top, left = (11 - height) // 2, (11 - width) // 2
        inside = out[:, top:top + height, left:left + width]
        assert np.abs(inside - (picture.numpy() / 255 - mean) / std).max() < 1e-6
        inside[:] = 0
        assert not out.any(), (height, width)


def test_an_odd_margin_leaves_its_extra_pixel_after_the_picture_as_model_json_states():
    """A 7 x 4 picture on a 10 x 10 canvas: offsets (10 - 7) // 2 = 1 and (10 - 4) // 2 = 3, rounded down."""
    assert "paste at offset ((S - w) // 2, (S - h) // 2)" in images.PREPROCESSING_STEPS[4]
    picture = torch.full((3, 4, 7), 255, dtype=torch.uint8)
    drawn = (images.on_canvas(picture, 10) != 0).any(axis=0)
    rows, cols = np.nonzero(drawn)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 6, 1, 7) and drawn.sum() == 28


def test_float_image_in_0_1_decodes_to_its_greys():
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (2, 1))
    grey = np.asarray(open_image(tiff(ramp, "F")))[0, :, 0].astype(int)
    assert np.abs(grey - np.round(np.linspace(0, 255, 32))).max() <= 1


@pytest.mark.parametrize("pixels, mode, reason", [
    (np.tile(np.linspace(0, 255, 32, dtype=np.float32), (2, 1)), "F", "only [0, 1] has a known white level"),
    (np.tile(np.linspace(0, 4095, 32), (2, 1)).astype(np.int32), "I", "it would decode nearly black"),
    (np.tile(np.linspace(0, 2 ** 31 - 1, 32), (2, 1)).astype(np.int32), "I", "beyond 16 bits"),
], ids=["float-0-255", "int32-12-bit", "int32-full"])
def test_images_of_unknown_white_level_are_refused(tmp_path, pixels, mode, reason):
    path = tmp_path / "image.tif"
    path.write_bytes(tiff(pixels, mode))
    _, error = check_image(path)
    assert reason in error
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        load_pixels(path, 56, 14)


def test_32_bit_integers_of_16_bit_range_decode_as_16_bit():
    ramp = np.tile(np.linspace(0, 65535, 32), (2, 1)).astype(np.int32)
    grey = np.asarray(open_image(tiff(ramp, "I")))[0, :, 0].astype(int)
    assert np.abs(grey - np.round(np.linspace(0, 255, 32))).max() <= 1


def test_12_bit_data_in_a_16_bit_png_is_refused_not_black(tmp_path):
    values = np.linspace(0, 4095, 64).astype(">u2")
    path = tmp_path / "scan12.png"
    path.write_bytes(png_file(64, 1, bit_depth=16, rows=b"\0" + values.tobytes()))
    _, error = check_image(path)
    assert "brightest value is 4095 of 65535" in error and "nearly black" in error


def test_16_bit_grey_with_transparency_shows_white_paper():
    values = np.array([0, 30000, 65535, 0], dtype=">u2")
    source = png_file(4, 1, bit_depth=16, rows=b"\0" + values.tobytes())
    trns = struct.pack(">I", 2) + b"tRNS" + struct.pack(">H", 0)
    trns += struct.pack(">I", zlib.crc32(b"tRNS" + struct.pack(">H", 0)))
    source = source[:33] + trns + source[33:]  # after the signature (8) and IHDR (25)
    assert Image.open(io.BytesIO(source)).info["transparency"] == 0
    grey = np.asarray(open_image(source))[0, :, 0].tolist()
    assert grey == [255, 117, 255, 255]


def test_many_huge_1_bit_canvases_are_checked_within_a_memory_bound(tmp_path):
    from bench.common import PEAK_RSS, measure

    if not PEAK_RSS:
        pytest.skip("needs Linux peak-RSS accounting")
    canvas = encoded(Image.new("1", (7000, 7000)))  # 49 M pixels in 6 kB
    paths = []
    for i in range(8):
        paths.append(str(tmp_path / f"blank{i}.png"))
        with open(paths[-1], "wb") as f:
            f.write(canvas + bytes([i]))  # trailing byte: distinct files, same picture
    results, _, peak = measure(lambda: images.check_images(paths, workers=8))
    assert all(error is None for _, error in results)
    # Without the budget, or without handing freed blocks back to the system, this is over 2 GB.
    assert peak < images.CHECK_MEMORY * 1.1


@pytest.fixture
def counted_checks(monkeypatch):
    checked, check = [], images.check_image
    monkeypatch.setattr(images, "check_image", lambda path: checked.append(os.path.basename(path)) or check(path))
    return checked


def test_second_start_checks_nothing_and_a_changed_file_is_checked_again(tmp_path, counted_checks):
    data = write_dataset(tmp_path / "data")
    first, _ = image_frame(data, cache_dir=tmp_path / "cache", **SPLIT)
    assert len(counted_checks) == 96
    counted_checks.clear()
    second, _ = image_frame(data, cache_dir=tmp_path / "cache", **SPLIT)
    assert counted_checks == [] and second.equals(first)

    changed = data / "images" / "a03_02.png"
    before = changed.stat()
    Image.open(changed).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "flipped.png")
    os.replace(tmp_path / "flipped.png", changed)
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` would: same mtime
    third, _ = image_frame(data, cache_dir=tmp_path / "cache", **SPLIT)
    assert counted_checks == ["a03_02.png"]
    differs = third.sha256 != first.sha256
    assert list(third.file_name[differs]) == ["images/a03_02.png"]


def test_a_bad_file_stays_refused_from_the_cache(tmp_path, counted_checks):
    data = write_dataset(tmp_path / "data")
    (data / "images" / "a00_00.png").write_bytes(b"not a picture")
    messages = []
    for _ in range(2):
        _, skipped = image_frame(data, cache_dir=tmp_path / "cache", skip_bad_images=True, **SPLIT)
        messages.append(skipped)
    assert counted_checks.count("a00_00.png") == 1
    assert messages[0] == messages[1] and "cannot identify its format" in messages[1][0]


def frames_file(kind: str, count: int) -> bytes:
    pictures = [Image.new("RGB", (32, 24), (60 * k, 200 - 60 * k, 90)) for k in range(count)]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format=kind, save_all=count > 1, append_images=pictures[1:])
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["TIFF", "GIF", "WEBP", "PNG"])
def test_a_multi_page_or_animated_image_is_refused_and_a_single_frame_or_a_phone_s_mpo_is_not(tmp_path, kind):
    path = tmp_path / f"image.{kind.lower()}"
    path.write_bytes(frames_file(kind, 3))
    _, error = check_image(path)
    assert error.startswith(f"not a readable image: MultiFrameError: 3 frames (a multi-page or animated {kind})")
    with pytest.raises(images.MultiFrameError):  # the one decode every script uses refuses it too
        load_pixels(path, 56, 14)
    path.write_bytes(frames_file(kind, 1))
    assert check_image(path)[1] is None
    path = tmp_path / "phone.jpg"
    path.write_bytes(frames_file("MPO", 2))
    with Image.open(path) as mpo:
        assert mpo.format == "MPO" and mpo.n_frames == 2
    assert check_image(path)[1] is None
