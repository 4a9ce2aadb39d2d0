"""model.py: the spec's projector, the score heads, the one training procedure."""

import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from test_losses import ranks_of, spec_loss

from model import HeadTraining, Progress, Projector, RankingHead
from pipeline.backbones import DinoFeatureExtractor
from pipeline.config import Config
from pipeline.images import input_size
from pipeline.ranker import ArtRanker, NearestTraining, score_spread, select_features
from pipeline.tables import cross_tier_pairs


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


TIERS = np.array(["S", "A", "B", "C"])


# ---------------------------------------------------------------- the one training procedure

def recorded_training(cfg: Config, seed: int = 0) -> tuple[HeadTraining, list[dict]]:
    """HeadTraining on features that carry the tier in noise, with every validated epoch's record."""
    rng = np.random.default_rng(seed)
    tiers = rng.choice(TIERS, 120)
    noisy = ranks_of(tiers).numpy()[:, None] + rng.normal(0, 2.0, (120, 8))
    features = torch.from_numpy(noisy.astype(np.float32))
    training, records = HeadTraining(cfg, Accelerator(cpu=True), input_dim=8), []
    training.run(features[:80], tiers[:80], features[80:], tiers[80:], after_epoch=lambda r, _: records.append(r))
    return training, records


def test_the_score_spread_is_exactly_zero_for_identical_heads_and_else_their_standard_deviation(tiny_backbone):
    import copy

    torch.manual_seed(0)
    heads = [RankingHead(input_dim=32, hidden_dim=16, proj_dim=8, dropout=0.0).eval() for _ in range(3)]
    features = torch.randn(5, 32)
    with torch.no_grad():
        same = score_spread([copy.deepcopy(heads[0]) for _ in range(3)], features)
        assert torch.equal(same, torch.zeros(5))
        scores = np.stack([head(features).numpy() for head in heads])
        np.testing.assert_allclose(score_spread(heads, features).numpy(), scores.std(axis=0), rtol=1e-5)
        extractor = DinoFeatureExtractor.from_pretrained(str(tiny_backbone))
        pixels = torch.randn(2, 3, 56, 56)
        cls_token = select_features(*extractor(pixels), "cls")
        nearest = NearestTraining.fit(torch.randn(7, 32))
        ranker = ArtRanker(extractor, heads[0], "cls", heads, nearest)
        assert ranker.readout_names == ("score", "score_sd", "novelty")
        read = ranker.readout(pixels)  # one backbone pass: the head's score, the members' spread, the novelty
        torch.testing.assert_close(read[:, 0], ranker(pixels))
        torch.testing.assert_close(read[:, 1], torch.stack([h(cls_token) for h in heads]).std(dim=0, correction=0))
        torch.testing.assert_close(read[:, 2], nearest(cls_token))
        assert ArtRanker(extractor, heads[0], "cls", heads[:1]).readout_names == ("score",)  # one head: no spread


def test_training_stops_after_patience_epochs_without_a_better_val_loss_and_the_best_is_the_first_highest():
    cfg = Config(epochs=40, patience=3, min_lr=0.0, batch_size=16, lr=0.05, hidden_dim=8, proj_dim=4, dropout=0.0)
    training, records = recorded_training(cfg)
    best_loss, stale, stop_epoch = math.inf, 0, None
    for record in records:  # REQ-S-002, by hand from the recorded losses
        best_loss, stale = (record["val/loss"], 0) if record["val/loss"] < best_loss else (best_loss, stale + 1)
        if stale >= cfg.patience and stop_epoch is None:
            stop_epoch = record["epoch"]
    assert stop_epoch is not None and len(records) == stop_epoch + 1 < cfg.epochs  # it did stop early, there
    assert training.progress.stop_reason == "early stop: val loss not improved for 3 epochs"
    accuracies = [r["val/pairwise_acc"] for r in records]
    firsts = [e for e, a in enumerate(accuracies) if a > max(accuracies[:e], default=-1)]
    assert [r["epoch"] for r in records if r.get("best")] == firsts  # each new best, the first of equals
    for record in records:  # REQ-O-002: the cosine schedule over cfg.epochs
        assert record["lr"] == pytest.approx(cfg.lr * (1 + math.cos(math.pi * record["epoch"] / cfg.epochs)) / 2)


def test_training_stops_when_the_next_learning_rate_falls_below_min_lr():
    lr_after = [1e-2 * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(11)]
    cfg = Config(epochs=10, patience=100, min_lr=(lr_after[6] + lr_after[7]) / 2, batch_size=16, lr=1e-2,
                 hidden_dim=8, proj_dim=4)
    training, records = recorded_training(cfg)
    assert len(records) == 7  # after epoch 6 the next rate, lr_after[7], is below min_lr (REQ-S-003)
    assert training.progress.stop_reason.startswith(f"learning rate {lr_after[7]:.2e} below min_lr")
    long, records = recorded_training(Config(epochs=5, patience=100, min_lr=0.0, batch_size=16, hidden_dim=8,
                                             proj_dim=4))
    assert len(records) == 5 and long.progress.stop_reason == "reached 5 epochs"


def test_top_k_keeps_the_best_and_an_earlier_epoch_wins_a_tie():
    progress = Progress()
    kept = []
    for epoch, accuracy in enumerate([0.5, 0.7, 0.6, 0.7, 0.4, 0.8]):
        progress.epoch = epoch
        kept.append(progress.keep_top_k(accuracy, 2))
    assert kept == [(True, []), (True, []), (True, [0]), (True, [2]), (False, []), (True, [3])]
    assert progress.top == [(0.8, 5), (0.7, 1)]


@pytest.mark.parametrize("loss", ["margin", "logistic"])
def test_the_training_and_validation_losses_are_those_of_the_loss_setting(loss):
    """One epoch of one batch at a learning rate too small to move a weight: both losses are the chosen loss
    of the head the seed made, over the cross-tier pairs of its split."""
    cfg = Config(epochs=1, lr=1e-30, dropout=0.0, batch_size=1000, margin=2.5, seed=7, loss=loss, hidden_dim=8,
                 proj_dim=4)
    rng = np.random.default_rng(3)
    tiers = rng.choice(TIERS, 60)
    features = torch.from_numpy(rng.normal(size=(60, 8)).astype(np.float32))
    torch.manual_seed(7)
    head = RankingHead(input_dim=8, hidden_dim=8, proj_dim=4, dropout=0.0).eval()

    def expected(rows: slice) -> float:
        with torch.no_grad():
            scores = head(features[rows]).double()
        if loss == "margin":
            return spec_loss(scores, tiers[rows], 2.5).item()
        a, b, label = cross_tier_pairs(tiers[rows])
        gap = torch.from_numpy(label) * (scores[torch.from_numpy(a)] - scores[torch.from_numpy(b)])
        return (-torch.log(torch.sigmoid(gap))).mean().item()  # RankNet: -log P(better above worse)

    training, records = HeadTraining(cfg, Accelerator(cpu=True), input_dim=8), []
    training.run(features[:40], tiers[:40], features[40:], tiers[40:], after_epoch=lambda r, _: records.append(r))
    (record,) = records
    assert record["train/loss"] == pytest.approx(expected(slice(0, 40)), rel=1e-5)
    assert record["val/loss"] == pytest.approx(expected(slice(40, 60)), rel=1e-5)
