"""Issue 14 and 11: real photos at real scale. The reduced decode gives the picture the full decode
gives, chosen at the right scale; image checks are remembered until a file changes; the feature
cache survives an interruption; images whose white level is unknown are refused, never turned black
or white; many huge 1-bit canvases do not exhaust memory."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import write_dataset
from PIL import Image
from test_bad_input import cmyk_jpeg, encoded, exif_rotated_jpeg, png_file, ramp_16_bit_png, transparent_palette_png

import features
import images
from backbones import resolve_backbone
from data import load_table
from features import table_features
from images import check_image, load_pixels, open_image, preprocess

SPLIT = dict(val_fraction=0.1, test_fraction=0.1, seed=42)


def photo(width: int, height: int, *, orientation: int = 1) -> bytes:
    """A JPEG with a red block in its stored top-left quarter, on white, EXIF orientation as given."""
    stored = Image.new("RGB", (width, height), "white")
    stored.paste((255, 0, 0), (0, 0, width // 4, height // 4))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(stored, "JPEG", quality=95, exif=exif)


def resized_from(monkeypatch, source: bytes, image_size: int) -> tuple[int, int]:
    """The size of the decoded picture that load_pixels hands to the letterbox resize."""
    seen, letterbox = [], images.letterbox
    monkeypatch.setattr(images, "letterbox", lambda image, *a: seen.append(image.size) or letterbox(image, *a))
    load_pixels(source, image_size, 14)
    return seen[0]


# ---------------------------------------------------------------- reduced decoding

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


# ---------------------------------------------------------------- the letterbox, the canvas, predict's batches

def test_letterbox_follows_pillows_bicubic_within_two_levels():
    """torch's 8-bit antialiased bicubic stands in for Pillow's BICUBIC; bilinear or no antialias would not."""
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((400, 300), Image.BICUBIC)
    noisy = np.clip(np.asarray(smooth, np.int16) + rng.integers(-40, 41, (300, 400, 3)), 0, 255).astype(np.uint8)
    for image_size in (1000, 300, 100, 56):  # up, down by 4/3, by 4, by 7.1
        picture = Image.fromarray(noisy)
        ours = images.letterbox(picture, image_size).permute(1, 2, 0).numpy().astype(int)
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


def test_predict_batches_score_each_image_as_it_scores_alone(tmp_path):
    """Pictures of other shapes land in one reused batch array, decoded ahead in threads: each score
    is the one the image gets alone, in order, with an unreadable image in the middle."""
    from artrank import Scorer, score_images

    rng = np.random.default_rng(2)
    paths = []
    for i, size in enumerate([(90, 30), (30, 90), (60, 60), (90, 31), (17, 90), (70, 40), (40, 70)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    paths.insert(3, str(tmp_path / "bad.png"))
    weights = rng.normal(size=3 * 56 * 56)
    scorer = Scorer(score=lambda pixels: pixels.reshape(len(pixels), -1).astype(np.float64) @ weights,
                    image_size=56, patch_size=14, calibration=None, description="linear in every value")
    threads = torch.get_num_threads()
    scores, errors = score_images(scorer, paths, batch_size=2, workers=3)
    alone = [score_images(scorer, [p], batch_size=1, workers=1)[0][0] for p in paths]
    assert scores[3] is alone[3] is None and all(s is not None for s in scores[:3] + scores[4:])
    assert scores[:3] + scores[4:] == pytest.approx(alone[:3] + alone[4:], rel=1e-12)
    assert len(errors) == 1 and "bad.png: not a readable image" in errors[0]
    assert torch.get_num_threads() == threads  # the decoding threads' one-thread setting stays theirs


# ---------------------------------------------------------------- images decoded wrong before: now right or refused

def tiff(pixels: np.ndarray, mode: str) -> bytes:
    return encoded(Image.fromarray(pixels, mode), "TIFF")


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


# ---------------------------------------------------------------- image checks remembered until a file changes

@pytest.fixture
def counted_checks(monkeypatch):
    checked, check = [], images.check_image
    monkeypatch.setattr(images, "check_image", lambda path: checked.append(os.path.basename(path)) or check(path))
    return checked


def test_second_start_checks_nothing_and_a_changed_file_is_checked_again(tmp_path, counted_checks):
    data = write_dataset(tmp_path / "data")
    first, _ = load_table(data, cache_dir=tmp_path / "cache", **SPLIT)
    assert len(counted_checks) == 96
    counted_checks.clear()
    second, _ = load_table(data, cache_dir=tmp_path / "cache", **SPLIT)
    assert counted_checks == [] and second.equals(first)

    changed = data / "images" / "a03_02.png"
    before = changed.stat()
    Image.open(changed).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "flipped.png")
    os.replace(tmp_path / "flipped.png", changed)
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` would: same mtime
    third, _ = load_table(data, cache_dir=tmp_path / "cache", **SPLIT)
    assert counted_checks == ["a03_02.png"]
    differs = third.sha256 != first.sha256
    assert list(third.file_name[differs]) == ["images/a03_02.png"]


def test_a_bad_file_stays_refused_from_the_cache(tmp_path, counted_checks):
    data = write_dataset(tmp_path / "data")
    (data / "images" / "a00_00.png").write_bytes(b"not a picture")
    messages = []
    for _ in range(2):
        _, skipped = load_table(data, cache_dir=tmp_path / "cache", skip_bad_images=True, **SPLIT)
        messages.append(skipped)
    assert counted_checks.count("a00_00.png") == 1
    assert messages[0] == messages[1] and "cannot identify its format" in messages[1][0]


# ---------------------------------------------------------------- the feature cache survives an interruption

@pytest.fixture
def extraction(tmp_path, dataset, tiny_backbone, monkeypatch):
    monkeypatch.setattr(features, "CHUNK_ROWS", 16)
    table, _ = load_table(dataset, **SPLIT)
    backbone = resolve_backbone(str(tiny_backbone), accelerator=Accelerator(cpu=True))
    messages = []

    def run(cache: str = "cache"):
        return table_features(table, backbone=backbone, image_size=56, cache_dir=str(tmp_path / cache),
                              batch_size=8, num_workers=0, accelerator=Accelerator(cpu=True), log=messages.append)
    return run, messages


def stop_at_batch(monkeypatch, count: int, error: BaseException) -> None:
    forward, calls = features.DinoFeatureExtractor.forward, []

    def failing(self, pixels):
        calls.append(1)
        if len(calls) == count:
            raise error
        return forward(self, pixels)
    monkeypatch.setattr(features.DinoFeatureExtractor, "forward", failing)


@pytest.mark.parametrize("error, kept", [(KeyboardInterrupt(), 24), (RuntimeError("killed"), 16)],
                         ids=["ctrl-c-keeps-every-batch", "crash-loses-at-most-one-chunk"])
def test_interrupted_extraction_keeps_its_chunks_and_a_rerun_continues(extraction, monkeypatch, error, kept):
    run, messages = extraction
    reference = run("reference")
    with monkeypatch.context() as patch:
        stop_at_batch(patch, 4, error)  # three batches of 8 done: one chunk of 16 written, 8 in memory
        with pytest.raises(type(error)):
            run()
    if isinstance(error, KeyboardInterrupt):
        assert messages[-1].startswith(f"feature extraction interrupted: kept the features of {kept} images")
    messages.clear()
    resumed = run()
    assert messages == [f"feature cache: {kept} of 96 images cached, extracting {96 - kept}"]
    for got, want in zip(resumed, reference):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
