"""The model's shapes and scores, and the config's refusals."""

import json

import pytest
import torch

from backbones import DinoFeatureExtractor
from config import Config, parse_config
from images import input_size
from model import ArtRanker, Projector, RankingHead, select_features


def test_req_e_002_projector_is_the_spec_stack():
    projector = Projector()
    kinds = [type(m).__name__ for m in projector.projection]
    assert kinds == ["Linear", "LayerNorm", "GELU", "Dropout", "Linear", "LayerNorm"]
    assert projector(torch.randn(5, 1024)).shape == (5, 256)
    assert projector.projection[0].in_features == 1024 and projector.projection[0].out_features == 512
    assert projector.projection[3].p == 0.1


def test_req_e_003_norm_head_is_minus_embedding_norm_and_linear_head_reads_the_embedding():
    torch.manual_seed(0)
    features = torch.randn(4, 64)
    norm = RankingHead(input_dim=64, hidden_dim=32, proj_dim=16, score_head="norm").eval()
    assert torch.allclose(norm(features), -norm.projector(features).norm(dim=-1))
    linear = RankingHead(input_dim=64, hidden_dim=32, proj_dim=16, score_head="linear").eval()
    embedding = linear.projector(features)
    assert torch.allclose(linear(features), embedding @ linear.linear.weight[0] + linear.linear.bias)


def test_cls_mean_feature_concatenates_cls_and_mean_patch():
    cls_token, mean_patch = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.equal(select_features(cls_token, mean_patch, "cls"), cls_token)
    assert torch.equal(select_features(cls_token, mean_patch, "cls_mean"), torch.cat([cls_token, mean_patch], 1))


def test_baked_position_embeddings_give_the_same_scores(tiny_backbone):
    torch.manual_seed(0)
    side = input_size(64, 14)  # 70: not the backbone's native 56, so interpolation really happens
    head = RankingHead(input_dim=64, hidden_dim=32, proj_dim=16).eval()
    ranker = ArtRanker(DinoFeatureExtractor.from_pretrained(str(tiny_backbone)), head, "cls_mean")
    pixels = torch.randn(2, 3, side, side)
    with torch.no_grad():
        before = ranker(pixels)
        ranker.extractor.bake_position_embeddings(side)
        after = ranker(pixels)
    torch.testing.assert_close(after, before)


def write_config(tmp_path, **values):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    return str(path)


def test_overrides_beat_the_file_and_the_file_beats_the_defaults(tmp_path):
    cfg, _ = parse_config("", ["--config", write_config(tmp_path, lr=0.5, epochs=7), "--lr", "0.25"])
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (0.25, 7, Config.batch_size)


@pytest.mark.parametrize("values, argv, message", [
    ({"learning_rate": 0.1}, [], "unknown key 'learning_rate'"),
    ({"epochs": "ten"}, [], "key 'epochs' must be int"),
    ({"seed": None}, [], "key 'seed' must be int"),  # REQ-N-003: no run without a seed
    ({"resume": 1}, [], "key 'resume' must be bool"),
    ({"score_head": "mlp"}, [], "must be one of"),
])
def test_bad_config_files_are_refused_naming_the_key(tmp_path, values, argv, message):
    with pytest.raises(SystemExit, match=message):
        parse_config("", ["--config", write_config(tmp_path, **values), *argv])


@pytest.mark.parametrize("argv", [["--epochs", "ten"], ["--no_such_key", "1"], ["--wandb_mode", "disabled"],
                                  ["--resume", "maybe"]])
def test_bad_overrides_are_refused(tmp_path, argv, capsys):
    # REQ-N-004: wandb cannot be switched off, only online or offline.
    with pytest.raises(SystemExit):
        parse_config("", ["--config", write_config(tmp_path), *argv])
    assert argv[0] in capsys.readouterr().err


def test_baseline_config_holds_the_spec_values():
    cfg, _ = parse_config("", ["--config", "configs/baseline.json"])
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.patience, cfg.margin, cfg.seed) == (
        32, 1e-4, 0.01, 100, 10, 1.0, 42)
    assert (cfg.image_size, cfg.mixed_precision, cfg.backbone) == (768, "fp16", "facebook/dinov2-large")  # REQ-U-002
