"""pipeline/metrics.py: pairwise accuracy from one score per image, ties wrong, honest intervals."""

import math

import numpy as np
import pytest

from pipeline.metrics import (
    artist_bootstrap_ci,
    pairwise_accuracy,
    per_tier_pair_accuracy,
    rank_correlations,
    spec_pairwise_accuracy,
    tier_pair_counts,
)
from pipeline.tables import cross_tier_pairs, tier_ranks

ONE_PER_TIER = np.array(["S", "A", "B", "C"])

TIERS = np.array(["S", "A", "B", "C"])
RANK = {"S": 3, "A": 2, "B": 1, "C": 0}  # the spec's order, written out


def ties_wrong_by_pairs(scores, tiers) -> float:
    """Every cross-tier pair materialised: the definition the fast metric must match."""
    a, b, label = cross_tier_pairs(tiers)
    better, worse = np.where(label > 0, a, b), np.where(label > 0, b, a)
    return float((scores[better] > scores[worse]).mean())


def test_perfect_ranking_scores_one():
    accuracy, pairs = pairwise_accuracy([4.0, 3.0, 2.0, 1.0], ONE_PER_TIER)
    assert (accuracy, pairs) == (1.0, 6)
    assert rank_correlations([4.0, 3.0, 2.0, 1.0], ONE_PER_TIER) == pytest.approx((1.0, 1.0))
    assert per_tier_pair_accuracy([4.0, 3.0, 2.0, 1.0], ONE_PER_TIER) == {
        "S-A": (1.0, 1), "S-B": (1.0, 1), "S-C": (1.0, 1), "A-B": (1.0, 1), "A-C": (1.0, 1), "B-C": (1.0, 1)}


def test_reversed_ranking_scores_zero():
    assert pairwise_accuracy([1.0, 2.0, 3.0, 4.0], ONE_PER_TIER) == (0.0, 6)
    assert rank_correlations([1.0, 2.0, 3.0, 4.0], ONE_PER_TIER) == pytest.approx((-1.0, -1.0))
    assert {acc for acc, _ in per_tier_pair_accuracy([1.0, 2.0, 3.0, 4.0], ONE_PER_TIER).values()} == {0.0}


def test_kendall_tau_b_corrects_for_tied_tiers():
    # 3 images per tier, perfectly ordered: 54 concordant pairs, 12 tied in tier, none tied in score,
    # so tau-b = 54 / sqrt(66 * 54) = sqrt(9 / 11), not 54 / 66.
    tiers = np.repeat(ONE_PER_TIER, 3)
    tau, rho = rank_correlations(np.arange(12.0)[::-1], tiers)
    assert tau == pytest.approx(math.sqrt(9 / 11))
    assert 0.9 < rho < 1.0


def test_all_ties_score_zero_not_half():
    """A constant model ranks nothing: every tie is wrong, and the correlations are undefined."""
    assert pairwise_accuracy(np.zeros(8), np.repeat(ONE_PER_TIER, 2)) == (0.0, 24)
    tau, rho = rank_correlations(np.zeros(8), np.repeat(ONE_PER_TIER, 2))
    assert math.isnan(tau) and math.isnan(rho)


def test_a_tie_across_tiers_is_wrong_the_rest_right():
    assert pairwise_accuracy([1.0, 1.0, 0.5], ["S", "A", "B"]) == (2 / 3, 3)
    assert per_tier_pair_accuracy([1.0, 1.0, 0.5], ["S", "A", "B"])["S-A"] == (0.0, 1)


def test_one_tier_missing_leaves_its_pairs_out():
    tiers = ["S", "S", "A", "A", "C", "C"]
    scores = [5.0, 1.0, 3.0, 4.0, 2.0, 0.0]
    assert per_tier_pair_accuracy(scores, tiers) == {"S-A": (0.5, 4), "S-C": (0.75, 4), "A-C": (1.0, 4)}
    assert pairwise_accuracy(scores, tiers) == (0.75, 12)


@pytest.mark.parametrize("tiers", [["A", "A", "A"], []])
def test_a_split_with_no_cross_tier_pair_is_a_clear_error(tiers):
    with pytest.raises(ValueError, match="no cross-tier pairs"):
        pairwise_accuracy(np.arange(len(tiers), dtype=float), tiers)


def test_nan_scores_are_refused_not_ranked():
    with pytest.raises(ValueError, match="NaN or infinite"):
        pairwise_accuracy([1.0, float("nan")], ["S", "C"])


def test_score_once_equals_every_pair_compared():
    rng = np.random.default_rng(0)
    tiers = rng.choice(ONE_PER_TIER, 400)
    scores = np.round(rng.normal(size=400) + 0.4 * tier_ranks(tiers), 1)  # rounded: many ties
    assert pairwise_accuracy(scores, tiers)[0] == ties_wrong_by_pairs(scores, tiers)
    for name, (accuracy, _) in per_tier_pair_accuracy(scores, tiers).items():
        keep = np.isin(tiers, name.split("-"))
        assert accuracy == ties_wrong_by_pairs(scores[keep], tiers[keep])


def test_score_once_equals_the_spec_evaluator_when_no_score_ties():
    rng = np.random.default_rng(1)
    tiers = rng.choice(ONE_PER_TIER, 120)
    scores = rng.normal(size=120) + 0.5 * tier_ranks(tiers)
    a, b, label = cross_tier_pairs(tiers)
    spec = spec_pairwise_accuracy(lambda i, j: (scores[i], scores[j]), zip(a, b, label))
    assert pairwise_accuracy(scores, tiers)[0] == spec


def test_spec_evaluator_counts_a_tie_right_when_the_pair_is_written_worse_first():
    """Why ties are wrong here whatever the order: the spec's loop defaults to -1 on a tie."""
    scores = {"s": 1.0, "c": 1.0}
    score_pair = lambda i, j: (scores[i], scores[j])  # noqa: E731
    assert spec_pairwise_accuracy(score_pair, [("s", "c", 1)]) == 0.0
    assert spec_pairwise_accuracy(score_pair, [("c", "s", -1)]) == 1.0
    assert pairwise_accuracy([1.0, 1.0], ["S", "C"])[0] == 0.0


def test_a_bootstrap_resample_counts_a_twice_drawn_artist_twice():
    rng = np.random.default_rng(2)
    tiers, scores = rng.choice(ONE_PER_TIER, 30), rng.normal(size=30)
    weights = rng.integers(0, 3, 30)
    counts = tier_pair_counts(scores, tiers, weights[None]).values()
    weighted = sum(int(c[0]) for c, _ in counts) / sum(int(t[0]) for _, t in counts)
    duplicated = np.repeat(np.arange(30), weights)
    assert weighted == pytest.approx(ties_wrong_by_pairs(scores[duplicated], tiers[duplicated]))


def artist_effect_data(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """20 artists of 10 works whose scores share a strong artist offset: pairs are far from independent."""
    rng = np.random.default_rng(seed)
    artists = np.repeat(np.arange(20), 10)
    tiers = rng.choice(ONE_PER_TIER, 200)
    scores = 0.3 * tier_ranks(tiers) + rng.normal(0, 1.0, 20)[artists] + rng.normal(0, 0.3, 200)
    return scores, tiers, artists


def test_bootstrap_is_deterministic_with_its_seed():
    scores, tiers, artists = artist_effect_data()
    first = artist_bootstrap_ci(scores, tiers, artists, resamples=300, seed=7)
    assert artist_bootstrap_ci(scores, tiers, artists, resamples=300, seed=7) == first
    assert artist_bootstrap_ci(scores, tiers, artists, resamples=300, seed=8) != first
    assert first[0] < pairwise_accuracy(scores, tiers)[0] < first[1]


def test_resampling_artists_is_wider_than_resampling_pairs():
    scores, tiers, artists = artist_effect_data()
    low, high = artist_bootstrap_ci(scores, tiers, artists, resamples=500, seed=0)
    a, b, label = cross_tier_pairs(tiers)
    correct = np.where(label > 0, scores[a] > scores[b], scores[b] > scores[a])
    rng = np.random.default_rng(0)
    by_pairs = [correct[rng.integers(0, len(correct), len(correct))].mean() for _ in range(500)]
    pair_low, pair_high = np.quantile(by_pairs, [0.025, 0.975])
    assert high - low > 3 * (pair_high - pair_low)


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
