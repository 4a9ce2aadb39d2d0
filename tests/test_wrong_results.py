"""Fast checks of the numbers against independent computations: the loss against torch's
MarginRankingLoss over the spec's pairs, the interval's level by simulation, the calibration against
its own definition, and a config that must refuse a bool for a number."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_expit
from sklearn.model_selection import StratifiedGroupKFold

from config import parse_config
from data import cross_tier_pairs, split_by_artist
from metrics import artist_bootstrap_ci, fit_calibration, in_batch_pair_loss, pair_margin_loss, pairwise_accuracy

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
    loss = in_batch_pair_loss(scores, ranks_of(tiers), margin)
    expected = spec_loss(scores, tiers, margin)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, scores)
    (expected_grad,) = torch.autograd.grad(expected, scores)
    torch.testing.assert_close(grad, expected_grad)


def test_training_loss_is_zero_only_when_every_pair_is_ordered_by_the_margin():
    tiers = np.array(["S", "A", "A", "B", "C"])
    ordered = torch.tensor([3.0, 2.0, 2.0, 1.0, 0.0])  # the same-tier A pair ties: it must not count
    assert in_batch_pair_loss(ordered, ranks_of(tiers), 1.0).item() == 0.0
    assert in_batch_pair_loss(ordered, ranks_of(tiers), 1.5).item() > 0  # adjacent tiers closer than the margin
    assert in_batch_pair_loss(-ordered, ranks_of(tiers), 1.0).item() > 1.0


@pytest.mark.parametrize("block", [1024, 7])
def test_validation_loss_is_margin_ranking_loss_over_cross_tier_pairs(block):
    rng = np.random.default_rng(block)
    tiers = rng.choice(TIERS, 50)
    scores = torch.tensor(rng.normal(size=50))
    loss = pair_margin_loss(scores, ranks_of(tiers), 2.0, block=block)
    assert loss == pytest.approx(spec_loss(scores, tiers, 2.0).item(), rel=1e-6)  # scored in float32


def population(rng, artists: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """20 works per artist; a strong artist effect on the score, as in real teachers' grades."""
    artist = np.repeat(np.arange(artists), 20)
    tiers = rng.choice(TIERS, len(artist))
    ranks = np.array([RANK[t] for t in tiers])
    scores = 0.5 * ranks + rng.normal(0, 1.0, artists)[artist] + rng.normal(0, 0.3, len(artist))
    return scores, tiers, artist


def test_the_95_percent_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    """200 data sets of 30 artists drawn from one population: the interval must hold the population's
    accuracy in about 95% of them (a 50% interval, or one that resamples images, holds it far less often)."""
    truth, _ = pairwise_accuracy(*population(np.random.default_rng(0), 5000)[:2])
    rng, hits, widths = np.random.default_rng(1), 0, []
    for seed in range(200):
        scores, tiers, artists = population(rng, 30)
        low, high = artist_bootstrap_ci(scores, tiers, artists, resamples=200, seed=seed)
        hits += low <= truth <= high
        widths.append(high - low)
    assert 0.85 <= hits / 200 <= 0.99, hits / 200  # measured 0.905 (percentile bootstrap, 30 clusters)
    assert 0.05 < np.mean(widths) < 0.2


def test_interval_is_the_2_5_and_97_5_percentiles_of_the_accuracy_over_artist_resamples():
    """My own bootstrap, pair by pair: the intervals agree up to the resampling noise."""
    scores, tiers, artists = population(np.random.default_rng(11), 10)
    ranks = np.array([RANK[t] for t in tiers])
    names, draw, accuracies = np.unique(artists), np.random.default_rng(0), []
    for _ in range(3000):
        rows = np.concatenate([np.flatnonzero(artists == names[i]) for i in draw.integers(0, len(names), len(names))])
        higher = ranks[rows][:, None] > ranks[rows][None, :]
        if higher.any():
            accuracies.append((scores[rows][:, None] > scores[rows][None, :])[higher].mean())
    expected = np.quantile(accuracies, [0.025, 0.975])
    assert artist_bootstrap_ci(scores, tiers, artists, resamples=3000, seed=1) == pytest.approx(expected, abs=0.01)


def test_calibration_slope_is_the_maximum_likelihood_and_cuts_hint_the_most_images_their_own_tier():
    rng = np.random.default_rng(5)
    tiers = rng.choice(TIERS, 40)
    scores = np.array([RANK[t] for t in tiers]) + rng.normal(0, 1.2, 40)
    calibration = fit_calibration(scores, tiers)
    a, b, label = cross_tier_pairs(tiers)
    diff = scores[a] - scores[b]
    # P(the first of a pair is the higher tier) = sigmoid(slope * difference); both orders give the same term
    nll = lambda slope: -2 * log_expit(slope * diff * label).sum()  # noqa: E731
    best = minimize_scalar(nll, bounds=(-20, 20), method="bounded", options={"xatol": 1e-8}).x
    assert calibration["slope"] == pytest.approx(best, rel=1e-3) and calibration["slope"] > 0
    cuts = calibration["tier_cuts"]
    assert [(c["above"], c["below"]) for c in cuts] == [("S", "A"), ("A", "B"), ("B", "C")]
    thresholds = [c["threshold"] for c in cuts]
    ordered = np.sort(scores)
    midpoints = (ordered[1:] + ordered[:-1]) / 2
    assert thresholds == sorted(thresholds, reverse=True) and all(np.isclose(midpoints, t).any() for t in thresholds)

    def own_tier(cut_values) -> int:  # images whose band, S above the first cut down to C, is their tier
        band = np.searchsorted(-np.asarray(cut_values), -scores, side="right")
        return int((np.asarray(TIERS)[band] == tiers).sum())

    # every ordered choice of three cut points between neighbouring scores, each band non-empty
    best_count = max(own_tier(midpoints[[k, j, i]]) for i in range(len(midpoints)) for j in range(i + 1, len(midpoints))
                     for k in range(j + 1, len(midpoints)))
    assert own_tier(thresholds) == best_count


def test_test_and_val_splits_are_folds_0_and_1_of_sklearn_stratified_group_kfold_over_sorted_ids():
    """The documented split, recomputed with scikit-learn: reproducible from the seed whatever the row order."""
    rng = np.random.default_rng(3)
    ids = [f"img{i:04d}" for i in range(400)]
    df = pd.DataFrame({"image_id": ids, "tier": rng.choice(TIERS, 400), "artist": [f"artist{i % 40:02d}" for i in
                                                                                    range(400)]})
    split = split_by_artist(df.sample(frac=1, random_state=1), seed=42).reindex(df.index)
    folds = list(StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=42).split(df, df.tier, df.artist))
    assert set(df.image_id.iloc[folds[0][1]]) == set(df.image_id[split == "test"])
    assert set(df.image_id.iloc[folds[1][1]]) == set(df.image_id[split == "val"])


@pytest.mark.parametrize("key, value", [("epochs", True), ("batch_size", False), ("patience", True),
                                        ("seed", True), ("lr", True), ("margin", False)])
def test_a_bool_is_refused_for_a_number_key(tmp_path, key, value):
    """JSON true is 1 to Python: `"epochs": true` would silently train one epoch."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({key: value}))
    with pytest.raises(SystemExit, match=key):
        parse_config("", ["--config", str(config)])


@pytest.mark.parametrize("argv", [["--epochs", "true"], ["--seed", "false"], ["--batch_size", "1.5"]])
def test_a_bool_or_fraction_is_refused_for_an_int_override(tmp_path, argv, capsys):
    config = tmp_path / "config.json"
    config.write_text("{}")
    with pytest.raises(SystemExit):
        parse_config("", ["--config", str(config), *argv])
    assert argv[0] in capsys.readouterr().err
