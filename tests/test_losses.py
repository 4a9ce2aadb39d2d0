"""pipeline/losses.py: the pair losses, against torch's own MarginRankingLoss and RankNet written out."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.losses import all_pairs_loss, in_batch_pair_loss
from pipeline.tables import cross_tier_pairs, tier_ranks

TIERS = np.array(["S", "A", "B", "C"])
RANK = {"S": 3, "A": 2, "B": 1, "C": 0}  # the spec's order, written out


def spec_loss(scores: torch.Tensor, tiers: np.ndarray, margin: float) -> torch.Tensor:
    """nn.MarginRankingLoss (spec 4.4.3) over the pairs of spec 4.4.2 with their labels."""
    a, b, label = cross_tier_pairs(tiers)
    a, b = torch.from_numpy(a), torch.from_numpy(b)
    return torch.nn.MarginRankingLoss(margin=margin)(scores[a], scores[b], torch.from_numpy(label).float())


def ranks_of(tiers: np.ndarray) -> torch.Tensor:
    return torch.tensor([RANK[t] for t in tiers])


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.5])
def test_training_loss_is_margin_ranking_loss_over_cross_tier_pairs(margin):
    rng = np.random.default_rng(int(margin * 10))
    tiers = rng.choice(TIERS, 32)  # a batch of 32: many same-tier pairs, which must not count
    scores = torch.tensor(rng.normal(size=32), requires_grad=True)
    loss = in_batch_pair_loss(scores, ranks_of(tiers), margin, "margin")
    expected = spec_loss(scores, tiers, margin)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, scores)
    (expected_grad,) = torch.autograd.grad(expected, scores)
    torch.testing.assert_close(grad, expected_grad)


def test_training_loss_is_zero_only_when_every_pair_is_ordered_by_the_margin():
    tiers = np.array(["S", "A", "A", "B", "C"])
    ordered = torch.tensor([3.0, 2.0, 2.0, 1.0, 0.0])  # the same-tier A pair ties: it must not count
    assert in_batch_pair_loss(ordered, ranks_of(tiers), 1.0, "margin").item() == 0.0
    assert in_batch_pair_loss(ordered, ranks_of(tiers), 1.5, "margin").item() > 0  # adjacent tiers within the margin
    assert in_batch_pair_loss(-ordered, ranks_of(tiers), 1.0, "margin").item() > 1.0


@pytest.mark.parametrize("block", [1024, 7])
def test_validation_loss_is_margin_ranking_loss_over_cross_tier_pairs(block):
    rng = np.random.default_rng(block)
    tiers = rng.choice(TIERS, 50)
    scores = torch.tensor(rng.normal(size=50))
    loss = all_pairs_loss(scores, ranks_of(tiers), 2.0, "margin", block=block)
    assert loss == pytest.approx(spec_loss(scores, tiers, 2.0).item(), rel=1e-6)  # scored in float32


def test_logistic_loss_is_ranknet_over_every_cross_tier_pair():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(40, generator=generator, dtype=torch.float64) * 3
    tiers = np.array(list("SABC"))[torch.randint(0, 4, (40,), generator=generator).numpy()]
    a, b, label = cross_tier_pairs(tiers)
    better = torch.from_numpy(np.where(label > 0, a, b))
    worse = torch.from_numpy(np.where(label > 0, b, a))
    # RankNet: -log P(better above worse), P = sigmoid(score gap)
    expected = -torch.log(torch.sigmoid(scores[better] - scores[worse])).mean()
    ranks = torch.from_numpy(tier_ranks(tiers))
    assert torch.allclose(in_batch_pair_loss(scores, ranks, 1.0, "logistic"), expected)
    assert all_pairs_loss(scores, ranks, 1.0, "logistic", block=7) == pytest.approx(float(expected))
    margin = F.margin_ranking_loss(scores[better], scores[worse], torch.ones(len(better), dtype=torch.float64),
                                   margin=0.5)
    assert torch.allclose(in_batch_pair_loss(scores, ranks, 0.5, "margin"), margin)
    assert all_pairs_loss(scores, ranks, 0.5, "margin", block=7) == pytest.approx(float(margin))
