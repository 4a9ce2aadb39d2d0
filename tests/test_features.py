"""pipeline/features.py: the feature cache is exact, reused, invalidated by any change, rebuilt when damaged, kept
through an interruption; out of memory halves the batch."""

import json

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import SPLIT, image_frame
from PIL import Image

from pipeline import features
from pipeline.backbones import DinoFeatureExtractor, resolve_backbone
from pipeline.errors import ArtrankError
from pipeline.features import ImageDataset, extract, table_features
from pipeline.images import open_image, preprocess


@pytest.fixture
def setup(tmp_path, dataset, tiny_backbone):
    accelerator = Accelerator(cpu=True)
    table, _ = image_frame(dataset, val_fraction=0.1, test_fraction=0.1, seed=42)
    backbone = resolve_backbone(str(tiny_backbone), accelerator=accelerator)
    messages = []

    def features(rows=table, image_size=56):
        return table_features(rows, backbone=backbone, image_size=image_size, cache_dir=str(tmp_path / "cache"),
                              batch_size=16, num_workers=0, accelerator=accelerator, log=messages.append)
    return table, features, messages, tmp_path / "cache"


def test_req_e_001_cached_features_are_the_backbone_cls_token(setup, tiny_backbone):
    table, features, _, _ = setup
    cls_token, mean_patch = features()
    extractor = DinoFeatureExtractor.from_pretrained(str(tiny_backbone))
    pixels = torch.stack([preprocess(open_image(p), 56, 14) for p in table.path[:3]])
    with torch.no_grad():
        tokens = extractor.backbone(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(cls_token[:3], tokens[:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mean_patch[:3], tokens[:, 1:].mean(1), atol=1e-5, rtol=1e-4)
    assert cls_token.shape == (len(table), 32)


def test_second_run_extracts_nothing(setup):
    _, features, messages, _ = setup
    first = features()
    messages.clear()
    second = features()
    assert messages == [] and all(torch.equal(a, b) for a, b in zip(first, second))


def test_changed_image_is_recomputed_alone(setup):
    table, features, messages, _ = setup
    before, _ = features()
    image = open_image(table.path[0]).transpose(0)  # mirrored: same size, different content
    image.save(table.path[0])
    table, _ = image_frame(table.path[0].rsplit("/images/", 1)[0], val_fraction=0.1, test_fraction=0.1, seed=42)
    messages.clear()
    after, _ = features(table)
    assert messages[-1].endswith(f"{len(table) - 1} of {len(table)} images cached, extracting 1")
    assert not torch.equal(after[0], before[0]) and torch.equal(after[1:], before[1:])


def test_other_image_size_uses_another_cache(setup):
    _, features, _, cache = setup
    features()
    features(image_size=42)
    keys = sorted(json.loads((d / "cache.json").read_text())["key"]["image_size"] for d in cache.iterdir())
    assert keys == [42, 56]


@pytest.mark.parametrize("damage", ["truncate", "flip", "key", "shape"])
def test_damaged_cache_is_detected_and_rebuilt(setup, damage):
    _, features, messages, cache = setup
    good, _ = features()
    (directory,) = cache.iterdir()
    if damage == "key":
        meta = json.loads((directory / "cache.json").read_text())
        meta["key"]["preprocessing"] = "center-crop"
        (directory / "cache.json").write_text(json.dumps(meta))
    elif damage == "shape":  # a sound chunk, checksum and all, of rows another width than the backbone's
        from pipeline.features import _read_chunk, write_chunk

        (arrow,) = directory.glob("features/*.arrow")
        hashes, _, _ = _read_chunk(arrow)
        arrow.unlink()
        write_chunk(directory, hashes, np.zeros((len(hashes), 7), np.float32),
                                    np.zeros((len(hashes), 7), np.float32))
    else:
        (arrow,) = directory.glob("features/*.arrow")
        payload = bytearray(arrow.read_bytes())
        if damage == "truncate":
            del payload[len(payload) // 2:]
        else:
            payload[len(payload) // 2] ^= 0xFF
        arrow.write_bytes(bytes(payload))
    messages.clear()
    rebuilt, _ = features()
    assert "rebuilding" in messages[0] and messages[1].startswith("feature cache: 0 of")
    torch.testing.assert_close(rebuilt, good)


def test_req_s_001_out_of_memory_halves_the_batch(setup, tiny_backbone):
    table, _, _, _ = setup
    extractor = DinoFeatureExtractor.from_pretrained(str(tiny_backbone))
    forward, batches = extractor.forward, []

    def small_memory(pixels):
        batches.append(len(pixels))
        if len(pixels) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(pixels)

    extractor.forward = small_memory
    paths = list(table.path[:10])
    cls_token, _ = extract(extractor, paths, image_size=56, batch_size=16, num_workers=0,
                           accelerator=Accelerator(cpu=True))
    assert batches[:3] == [10, 8, 4] and set(batches[2:]) <= {4, 2}
    extractor.forward = forward
    expected, _ = extract(extractor, paths, image_size=56, batch_size=16, num_workers=0,
                          accelerator=Accelerator(cpu=True))
    torch.testing.assert_close(torch.from_numpy(cls_token), torch.from_numpy(expected), atol=1e-5, rtol=1e-4)


def test_image_dataset_gives_preprocessed_tensors_and_names_a_bad_file(tmp_path):
    Image.new("RGB", (40, 20), (255, 255, 255)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    dataset = ImageDataset([str(tmp_path / "good.png"), str(tmp_path / "bad.png")], image_size=56, patch_size=14)
    assert len(dataset) == 2
    assert torch.equal(dataset[0], preprocess(Image.open(tmp_path / "good.png").convert("RGB"), 56, 14))
    with pytest.raises(ArtrankError, match="bad.png"):
        dataset[1]


@pytest.fixture
def extraction(tmp_path, dataset, tiny_backbone, monkeypatch):
    monkeypatch.setattr(features, "CHUNK_ROWS", 16)
    table, _ = image_frame(dataset, **SPLIT)
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


KEY = features.cache_key(backbone="weights-1", image_size=56, patch_size=14, precision="no")


def one_chunk_cache(directory, key=KEY):
    rng = np.random.default_rng(0)
    hashes = [c * 64 for c in "abc"]
    cls_tokens, mean_patches = (rng.normal(size=(3, 4)).astype(np.float32) for _ in range(2))
    (directory / "features").mkdir(parents=True)
    (directory / "cache.json").write_text(json.dumps({"key": key}))
    features.write_chunk(directory, hashes, cls_tokens, mean_patches)
    return hashes, cls_tokens, mean_patches


@pytest.mark.parametrize("column", ["sha256", "cls", "mean_patch"])
def test_a_chunk_changed_in_its_hashes_or_either_feature_column_fails_its_checksum(tmp_path, monkeypatch, column):
    hashes, cls_tokens, mean_patches = one_chunk_cache(tmp_path)
    index, cls_read, mean_read, problem = features.read_cache(tmp_path, KEY)
    assert problem is None and index == {h: i for i, h in enumerate(hashes)}
    assert np.array_equal(cls_read, cls_tokens) and np.array_equal(mean_read, mean_patches)
    (chunk,) = (tmp_path / "features").glob("chunk-*.arrow")
    old_digest = features._matrix_digest(cls_tokens, mean_patches, hashes)
    chunk.unlink()  # written again with one value changed under its old checksum
    changed = dict(sha256=list(hashes), cls=cls_tokens.copy(), mean_patch=mean_patches.copy())
    if column == "sha256":
        changed[column][1] = "d" * 64
    else:
        changed[column][1, 2] += 0.5
    monkeypatch.setattr(features, "_matrix_digest", lambda *_: old_digest)
    features.write_chunk(tmp_path, changed["sha256"], changed["cls"], changed["mean_patch"])
    monkeypatch.undo()
    index, _, _, problem = features.read_cache(tmp_path, KEY)
    assert index == {} and "contents do not match their checksum" in problem


def test_features_of_another_precision_are_never_read_for_this_one(tmp_path):
    fp16 = features.cache_key(backbone="weights-1", image_size=56, patch_size=14, precision="fp16")
    assert fp16 != KEY
    one_chunk_cache(tmp_path, key=fp16)  # as a GPU run under fp16 leaves it
    index, _, _, problem = features.read_cache(tmp_path, KEY)
    assert index == {} and "made for" in problem


def test_an_image_rewritten_after_its_check_is_refused_and_its_new_picture_never_filed_under_the_old_hash(setup):
    from pipeline.features import cache_key, read_cache

    table, features, _, cache = setup
    victim = table.path[5]
    Image.new("RGB", (40, 48), (250, 0, 0)).save(victim)  # rewritten between the image check and the extraction
    with pytest.raises(ArtrankError, match=rf"^{victim}: changed since the images were checked \(content "):
        features()
    (directory,) = cache.glob("features-*")
    key = json.loads((directory / "cache.json").read_text())["key"]
    assert key == cache_key(backbone=key["backbone"], image_size=56, patch_size=14, precision="no")
    index, _, _, _ = read_cache(directory, key)
    assert table.sha256[5] not in index  # the batch holding it was never filed
