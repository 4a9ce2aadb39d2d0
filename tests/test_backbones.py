"""Backbones: each DINO family loaded as itself and read at the right tokens; anything else refused;
the backbone id is exact without re-reading the weights; a hub id that cannot be reached says what to do."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from conftest import ROOT, read_head, run_script, tiny_args, write_dataset
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
)

from pipeline import backbones
from pipeline.arguments import parse_config
from pipeline.backbones import BackboneError, DinoFeatureExtractor, resolve_backbone
from pipeline.cli import quiet_libraries
from pipeline.files import StatCache
from pipeline.images import input_size, open_image, preprocess
from pipeline.scoring import onnx_session

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
DINOV2 = dict(**TINY, mlp_ratio=2, image_size=56, patch_size=14)  # the hub checkpoints have patch 14
# Each family as its transformers config class builds it, with the register tokens each one has:
# the patch tokens are the ones after CLS and the registers.
FAMILIES = {
    "dinov2": (lambda: Dinov2Model(Dinov2Config(**DINOV2)), 0),
    "dinov2_giant_swiglu": (lambda: Dinov2Model(Dinov2Config(**DINOV2, use_swiglu_ffn=True)), 0),
    "dinov2_with_registers": (lambda: Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        **DINOV2, num_register_tokens=3)), 3),
    "dinov3_vit": (lambda: DINOv3ViTModel(DINOv3ViTConfig(**TINY, intermediate_size=64, image_size=64,
                                                          num_register_tokens=2)), 2),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family saved with save_pretrained, so the real loading path runs."""
    root = tmp_path_factory.mktemp("families")
    for name, (build, _) in FAMILIES.items():
        torch.manual_seed(0)
        build().save_pretrained(root / name)
    return root


def reference_features(path: Path, pixels: torch.Tensor, registers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS and mean patch token straight from AutoModel, registers skipped by the count the test knows."""
    with torch.no_grad():
        tokens = AutoModel.from_pretrained(path).eval()(pixel_values=pixels).last_hidden_state
    return tokens[:, 0], tokens[:, 1 + registers:].mean(dim=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_gives_its_cls_token_and_the_mean_of_its_patch_tokens_without_registers(saved, family):
    registers = FAMILIES[family][1]
    backbone = resolve_backbone(str(saved / family), accelerator=Accelerator(cpu=True))
    extractor = DinoFeatureExtractor.from_pretrained(str(backbone.path))
    assert backbone.family == family.replace("_giant_swiglu", "")
    assert backbone.patch_size == extractor.patch_size == (16 if family == "dinov3_vit" else 14)
    assert backbone.hidden_size == extractor.hidden_size == 32
    side = input_size(64, extractor.patch_size)  # 70 for patch 14 (not the native 56), 64 for 16
    pixels = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cls_token, mean_patch = extractor(pixels)
    expected_cls, expected_mean = reference_features(saved / family, pixels, registers)
    torch.testing.assert_close(cls_token, expected_cls)
    torch.testing.assert_close(mean_patch, expected_mean)
    if registers:  # the registers really differ from patches, so leaving them in would show
        _, with_registers = reference_features(saved / family, pixels, 0)
        assert not torch.allclose(mean_patch, with_registers, atol=1e-4)


def test_dinov3_stays_in_eval_mode_so_its_rope_does_not_jitter(saved):
    extractor = DinoFeatureExtractor.from_pretrained(str(saved / "dinov3_vit")).train()
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first, second = extractor(pixels)[0], extractor(pixels)[0]
        raw = AutoModel.from_pretrained(saved / "dinov3_vit").train()
        jittered = raw(pixel_values=pixels).last_hidden_state[:, 0]
    assert not extractor.backbone.training
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.allclose(first, jittered, atol=1e-4)  # train mode would rescale the RoPE grid


@pytest.mark.parametrize("family", FAMILIES)
def test_baking_for_the_fixed_side_changes_no_feature(saved, family):
    extractor = DinoFeatureExtractor.from_pretrained(str(saved / family))
    side = input_size(64, extractor.patch_size)
    pixels = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = extractor(pixels)
        extractor.bake_position_embeddings(side)
        after = extractor(pixels)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b)


def test_a_clip_vision_checkpoint_is_refused_naming_it_and_what_is_supported(tmp_path):
    CLIPVisionModel(CLIPVisionConfig(**TINY, intermediate_size=64, image_size=56, patch_size=14)).save_pretrained(
        tmp_path / "clip")
    for load in (lambda: resolve_backbone(str(tmp_path / "clip"), accelerator=Accelerator(cpu=True)),
                 lambda: DinoFeatureExtractor.from_pretrained(str(tmp_path / "clip"))):
        with pytest.raises(BackboneError) as refusal:
            load()
        message = str(refusal.value)
        assert message.startswith(f"backbone {tmp_path / 'clip'} is CLIPVisionModel (model_type 'clip_vision_model')")
        assert "DINOv2 (" in message and "DINOv2 with registers" in message and "DINOv3 ViT" in message
        assert len(message.splitlines()) == 2


def test_a_folder_without_safetensors_weights_is_refused_since_its_weights_would_go_unhashed(saved, tmp_path):
    folder = tmp_path / "bin-only"
    folder.mkdir()
    shutil.copy(saved / "dinov2" / "config.json", folder)
    torch.save(load_file(saved / "dinov2" / "model.safetensors"), folder / "pytorch_model.bin")
    with pytest.raises(BackboneError, match=r"bin-only: no .safetensors weights; save it with save_pretrained"):
        resolve_backbone(str(folder), accelerator=Accelerator(cpu=True))


def test_a_checkpoint_with_missing_or_unused_weights_is_refused(saved, tmp_path):
    damaged = Path(shutil.copytree(saved / "dinov2", tmp_path / "damaged"))
    weights = load_file(damaged / "model.safetensors")
    weights = {k: v for k, v in weights.items() if ".layer.1.mlp." not in k} | {"extra.weight": torch.zeros(2)}
    save_file(weights, damaged / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BackboneError) as refusal:
        DinoFeatureExtractor.from_pretrained(str(damaged))
    message = str(refusal.value)
    assert message.startswith(f"backbone {damaged} does not fit Dinov2Model: 4 weights missing from the "
                              "checkpoint (encoder.layer.1.mlp.fc1.bias, ")
    assert "1 weight in the checkpoint but unused (extra.weight)" in message and "would be random" in message


def test_a_registers_checkpoint_labelled_plain_dinov2_is_refused_not_loaded_without_its_registers(saved, tmp_path):
    relabelled = Path(shutil.copytree(saved / "dinov2_with_registers", tmp_path / "relabelled"))
    config = json.loads((relabelled / "config.json").read_text())
    config |= {"model_type": "dinov2", "architectures": ["Dinov2Model"]}
    (relabelled / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackboneError, match=r"1 weight in the checkpoint but unused \(embeddings.register_tokens\)"):
        DinoFeatureExtractor.from_pretrained(str(relabelled))


def test_quiet_libraries_keeps_the_load_report_and_nothing_else(saved, tmp_path, caplog):
    damaged = Path(shutil.copytree(saved / "dinov2", tmp_path / "damaged"))
    weights = load_file(damaged / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "layer.1." not in k}, damaged / "model.safetensors",
              metadata={"format": "pt"})
    quiet_libraries()
    AutoModel.from_pretrained(saved / "dinov2")
    assert caplog.records == []
    AutoModel.from_pretrained(damaged)
    assert len(caplog.records) == 1 and "Dinov2Model LOAD REPORT" in caplog.records[0].getMessage()
    assert "encoder.layer.1.mlp.fc1.weight" in caplog.records[0].getMessage()


def test_a_checkpoint_made_for_other_pixel_statistics_is_refused(saved, tmp_path):
    """DINOv3's satellite models are normalised with their own mean and std; artrank's preprocessing is one."""
    folder = Path(shutil.copytree(saved / "dinov3_vit", tmp_path / "sat"))
    imagenet = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    (folder / "preprocessor_config.json").write_text(json.dumps(imagenet))
    assert resolve_backbone(str(folder), accelerator=Accelerator(cpu=True)).family == "dinov3_vit"
    satellite = {"image_mean": [0.43, 0.411, 0.296], "image_std": [0.213, 0.156, 0.143]}
    (folder / "preprocessor_config.json").write_text(json.dumps(satellite))
    with pytest.raises(BackboneError, match=r"image_mean \[0.43, 0.411, 0.296\], but artrank normalises every image"):
        resolve_backbone(str(folder), accelerator=Accelerator(cpu=True))


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("dinov*.json")), ids=lambda path: path.stem)
def test_each_backbone_config_is_the_baseline_with_its_own_backbone_at_the_768_letterbox(config):
    baseline = dataclasses.asdict(parse_config("", ["--config", str(ROOT / "configs" / "baseline.json")])[0])
    values = dataclasses.asdict(parse_config("", ["--config", str(config)])[0])
    assert {k: v for k, v in values.items() if baseline[k] != v} == {
        "output_dir": f"runs/{config.stem}", "backbone": values["backbone"]}
    assert values["image_size"] == 768
    family = {"dinov2_reg": "facebook/dinov2-with-registers-", "dinov2": "facebook/dinov2-",
              "dinov3": "facebook/dinov3-vit"}
    prefix = next(prefix for start, prefix in family.items() if config.stem.startswith(start))
    assert values["backbone"].startswith(prefix)


@pytest.fixture
def hash_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache" / "artrank" / "file-hashes.sqlite"


def test_backbone_id_is_not_rehashed_at_start_but_new_weights_of_the_same_shape_change_it(tmp_path, hash_cache,
                                                                                        monkeypatch):
    accelerator = Accelerator(cpu=True)
    folder = tmp_path / "backbone"
    torch.manual_seed(0)
    FAMILIES["dinov2"][0]().save_pretrained(folder)
    first = resolve_backbone(str(folder), accelerator=accelerator).id
    assert str((folder / "model.safetensors").resolve()) in StatCache(hash_cache, version="sha256").rows

    real_sha256 = backbones._file_sha256
    read = []
    monkeypatch.setattr(backbones, "_file_sha256", lambda path: read.append(path.name) or real_sha256(path))
    assert resolve_backbone(str(folder), accelerator=accelerator).id == first
    assert read == []  # nothing re-read: the sizes, times and inodes matched

    torch.manual_seed(1)
    FAMILIES["dinov2"][0]().save_pretrained(folder)  # other weights, the very same shapes and size
    assert resolve_backbone(str(folder), accelerator=accelerator).id != first
    assert "model.safetensors" in read


def test_a_hub_snapshot_is_keyed_by_its_blob_names_and_matches_the_same_files_in_a_folder(saved, tmp_path,
                                                                                         hash_cache, monkeypatch):
    """The hub cache stores weights as blobs named by their sha256, linked from snapshots/COMMIT/."""
    snapshot = tmp_path / "models--facebook--tiny" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    blobs = tmp_path / "models--facebook--tiny" / "blobs"
    blobs.mkdir()
    for name in ("config.json", "model.safetensors"):
        sha256 = backbones._file_sha256(saved / "dinov2" / name)
        blob_name = sha256 if name.endswith(".safetensors") else sha256[:40]  # git's sha1 for small files
        shutil.copy(saved / "dinov2" / name, blobs / blob_name)
        (snapshot / name).symlink_to(Path("../../blobs") / blob_name)
    real_sha256 = backbones._file_sha256
    read = []
    monkeypatch.setattr(backbones, "_file_sha256", lambda path: read.append(path) or real_sha256(path))
    assert backbones._weights_digest(snapshot) == backbones._weights_digest(saved / "dinov2")
    assert not [path for path in read if path.parent == blobs and path.stat().st_size > 10_000]


def test_a_hub_id_that_cannot_be_reached_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    with pytest.raises(BackboneError) as refusal:
        resolve_backbone("facebook/dinov2-large", accelerator=Accelerator(cpu=True))
    assert str(refusal.value) == (
        "backbone facebook/dinov2-large: the model hub cannot be reached and no copy is cached; point backbone "
        "at a folder written by save_pretrained, or fetch the model once where the hub is reachable (later runs "
        "read the hub cache; HF_HUB_OFFLINE=1 keeps them off the network)")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dinov2_with_registers", "dinov3_vit"])  # plain DINOv2: test_export_onnx.py
def test_each_family_trains_exports_and_predicts_and_onnx_equals_automodel_tokens_through_the_head(
        saved, tmp_path, family):
    registers = FAMILIES[family][1]
    data_dir = write_dataset(tmp_path / "data", artists=10, per_artist=6)
    args = tiny_args(tmp_path, data_dir, saved / family, image_size=64, epochs=2, feature="cls_mean")
    run_script("train.py", *args)
    run_script("export_onnx.py", *args, "--parity_images", "3", "--bench_seconds", "0")
    out = tmp_path / "run"
    splits = pd.read_csv(out / "splits.csv")
    paths = [str(data_dir / name) for name in splits[splits.split == "val"].file_name][:4]
    predicted = run_script("predict.py", *args, *paths, "--out", tmp_path / "scores.csv")

    patch = 16 if family == "dinov3_vit" else 14
    side = input_size(64, patch)
    model_json = json.loads((out / "model.json").read_text())
    assert model_json["input"]["shape"] == ["batch", 3, side, side] and model_json["parity"]["fp32"]["ok"]
    graph = onnx.load(str(out / "model.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert "Resize" not in ops and "Cos" not in ops  # position embeddings and RoPE angles are constants

    pixels = torch.stack([preprocess(open_image(p), 64, patch) for p in paths])
    head, meta = read_head(out / "checkpoints" / "best")
    cls_token, mean_patch = reference_features(saved / family, pixels, registers)
    with torch.no_grad():
        expected = head(torch.cat([cls_token, mean_patch], dim=-1)).numpy()
    onnx_scores = onnx_session(out / "model.onnx").run(None, {"pixel_values": pixels.numpy()})[0]
    np.testing.assert_allclose(onnx_scores, expected, atol=1e-5, rtol=1e-4)
    written = pd.read_csv(tmp_path / "scores.csv").set_index("file_name").score
    np.testing.assert_allclose([written[Path(p).name] if Path(p).name in written else written[p] for p in paths],
                               expected, atol=1e-4)
    assert meta["patch_size"] == patch and predicted.returncode == 0


@pytest.mark.parametrize("given", ["absolute", "relative"])
def test_a_missing_local_backbone_is_named_as_a_folder_not_blamed_on_the_hub(tmp_path, monkeypatch, given):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    name = str(tmp_path / "models" / "dinov2") if given == "absolute" else "models/dinov2"
    with pytest.raises(BackboneError) as refusal:
        resolve_backbone(name, accelerator=Accelerator(cpu=True))
    assert str(refusal.value).startswith(f"backbone {name}: no such folder ({tmp_path / 'models' / 'dinov2'})")
    assert "hub" not in str(refusal.value)
