"""The spec's required values, written out here rather than read from the code they check (SPEC-AI-001)."""

import json

import pytest
import torch
from torch import nn

from model import Projector, RankingHead
from pipeline.arguments import parse_config
from pipeline.metrics import gate_results

SPEC_TRAINING = dict(batch_size=32, lr=1e-4, weight_decay=0.01, epochs=100, patience=10, margin=1.0, seed=42)
SPEC_HEAD = dict(hidden_dim=512, proj_dim=256, dropout=0.1)


@pytest.mark.parametrize("config", ["configs/baseline.json", "configs/demo.json", "empty"])
def test_req_u_004_training_values_are_the_spec_s_in_every_shipped_config(tmp_path, config):
    """baseline.json states them; demo.json and a config without them rely on the defaults."""
    if config == "empty":
        config = tmp_path / "empty.json"
        config.write_text("{}")
    cfg, _ = parse_config("", ["--config", str(config)])
    assert {key: getattr(cfg, key) for key in SPEC_TRAINING} == SPEC_TRAINING
    assert {key: getattr(cfg, key) for key in SPEC_HEAD} == SPEC_HEAD
    assert (cfg.feature, cfg.val_fraction, cfg.test_fraction) == ("cls", 0.1, 0.1)


def test_baseline_config_file_is_the_spec_s_768_px_vit_l():
    raw = json.loads(open("configs/baseline.json").read())
    assert (raw["image_size"], raw["backbone"], raw["mixed_precision"]) == (768, "facebook/dinov2-large", "fp16")


def test_req_e_002_projector_is_1024_512_256_with_layernorm_gelu_dropout_0_1():
    layers = list(Projector().projection)
    assert [type(m) for m in layers] == [nn.Linear, nn.LayerNorm, nn.GELU, nn.Dropout, nn.Linear, nn.LayerNorm]
    first, norm, _, dropout, second, last_norm = layers
    assert (first.in_features, first.out_features, second.in_features, second.out_features) == (1024, 512, 512, 256)
    assert norm.normalized_shape == (512,) and last_norm.normalized_shape == (256,)
    assert dropout.p == 0.1
    head = RankingHead(input_dim=1024)  # the head's defaults are the spec's projector too
    assert [(m.in_features, m.out_features) for m in head.projector.projection if isinstance(m, nn.Linear)] == [
        (1024, 512), (512, 256)]
    assert head.projector.projection[3].p == 0.1


def test_req_e_002_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    projector, x = Projector(), torch.randn(64, 1024)
    assert not torch.equal(projector.train()(x), projector(x))
    assert torch.equal(projector.eval()(x), projector(x))


@pytest.mark.parametrize("accuracy, passed", [
    ({"test": 0.60, "val": 0.62, "train": 0.80}, {"test": True, "val": True, "train": True}),
    ({"test": 0.5999, "val": 0.6199, "train": 0.8001}, {"test": False, "val": False, "train": False}),
    ({"test": 0.95, "val": 0.95, "train": 0.30}, {"test": True, "val": True, "train": True}),
])
def test_spec_4_5_2_gates_are_test_0_60_val_0_62_train_at_most_0_80(accuracy, passed):
    result = gate_results(accuracy)
    assert {split: gate["passed"] for split, gate in result.items()} == passed
    assert {split: gate["value"] for split, gate in result.items()} == accuracy
    assert {split: gate["target"] for split, gate in result.items()} == {
        "test": ">= 0.60", "val": ">= 0.62", "train": "<= 0.80"}
