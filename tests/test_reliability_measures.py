"""pipeline/reliability_measures.py: ECE and Brier score of P(A better), against cases worked by hand and against
synthetic predictors whose calibration is known; the artist interval is the one bootstrap's."""

import numpy as np
import pytest

from pipeline.metrics import artist_draws
from pipeline.reliability_measures import (
    BINS,
    both_orientations,
    brier_score,
    expected_calibration_error,
    judged_pairs,
    pair_calibration,
)


def drawn_outcomes(p: np.ndarray, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=len(p)) < p


def test_a_calibrated_predictor_has_an_ece_near_zero_and_an_over_confident_one_does_not():
    p = np.random.default_rng(1).uniform(size=40_000)
    won = drawn_outcomes(p)  # the outcomes are drawn from the stated probability
    assert expected_calibration_error(p, won) < 0.015
    logit = np.log(p / (1 - p))
    over_confident = 1 / (1 + np.exp(-4 * logit))  # the same ranking, four times as sure
    assert expected_calibration_error(over_confident, won) > 0.1
    under_confident = 1 / (1 + np.exp(-0.25 * logit))
    assert expected_calibration_error(under_confident, won) > 0.1


def test_ece_and_brier_of_cases_worked_by_hand():
    # bin [0.1, 0.2): P 0.15 twice, one won (gap 0.35); bin [0.8, 0.9): P 0.85 twice, both won (gap 0.15)
    p, won = np.array([0.15, 0.15, 0.85, 0.85]), np.array([0, 1, 1, 1])
    assert expected_calibration_error(p, won) == pytest.approx(0.5 * 0.35 + 0.5 * 0.15)
    assert brier_score(p, won) == pytest.approx((0.15 ** 2 + 0.85 ** 2 + 0.15 ** 2 + 0.15 ** 2) / 4)
    assert brier_score([1.0, 0.0, 0.5], [1, 1, 0]) == pytest.approx((0 + 1 + 0.25) / 3)
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == 0  # P = 1 falls in the last bin
    assert expected_calibration_error([0.05, 0.95], [0, 1]) == pytest.approx(0.05)


def test_pairs_count_in_both_orientations_so_the_order_pairs_are_named_in_does_not_matter():
    rng = np.random.default_rng(2)
    p = rng.uniform(size=500)
    won = drawn_outcomes(p, seed=3).astype(float)
    artist_a, artist_b = rng.integers(0, 8, 500), rng.integers(0, 8, 500)
    report = pair_calibration(p, won, artist_a, artist_b, resamples=50, seed=0)
    both_p, both_won, _, _ = both_orientations(p, won, artist_a, artist_b)
    assert report["ece"] == pytest.approx(expected_calibration_error(both_p, both_won))
    assert report["brier"] == pytest.approx(brier_score(p, won))  # the same over either orientation
    flip = rng.uniform(size=500) < 0.5  # name half the pairs the other way round
    flipped = pair_calibration(np.where(flip, 1 - p, p), np.where(flip, 1 - won, won),
                               np.where(flip, artist_b, artist_a), np.where(flip, artist_a, artist_b),
                               resamples=50, seed=0)
    assert flipped["ece"] == pytest.approx(report["ece"]) and flipped["brier"] == pytest.approx(report["brier"])
    assert flipped["ece_ci95"] == pytest.approx(report["ece_ci95"])
    assert report["n_pairs"] == 500 and report["bins"] == BINS and sum(report["diagram"]["count"]) == 1000


def test_the_interval_resamples_artists_as_the_one_bootstrap_draws_them():
    rng = np.random.default_rng(4)
    p = rng.uniform(size=300)
    won = drawn_outcomes(p, seed=5).astype(float)
    artist_a, artist_b = rng.choice(list("abcdef"), 300), rng.choice(list("abcdefg"), 300)
    report = pair_calibration(p, won, artist_a, artist_b, resamples=40, seed=9, chunk=7)
    # the same resamples, each pair weighted draws(artist of A) x draws(artist of B), pair by pair
    both_p, both_won, first, second = both_orientations(p, won, artist_a, artist_b)
    drawn, artist_of = artist_draws(np.concatenate([first, second]), resamples=40, seed=9)
    weights = drawn[:, artist_of[:600]] * drawn[:, artist_of[600:]]
    eces, briers = [], []
    for w in weights:
        index = np.minimum((both_p * BINS).astype(int), BINS - 1)
        gap = sum(abs((w * (both_won - both_p))[index == k].sum()) for k in range(BINS))
        eces.append(gap / w.sum())
        briers.append((w * (both_p - both_won) ** 2).sum() / w.sum())
    assert report["ece_ci95"] == pytest.approx(list(np.quantile(eces, [0.025, 0.975])))
    assert report["brier_ci95"] == pytest.approx(list(np.quantile(briers, [0.025, 0.975])))
    assert report["ece_ci95"][0] <= report["ece"] <= report["ece_ci95"][1] or report["ece"] < report["ece_ci95"][0]


def test_no_pairs_give_no_report():
    assert pair_calibration(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), resamples=10, seed=0) is None


def test_a_teacher_s_tie_is_left_out_and_counted():
    import pandas as pd

    comparisons = pd.DataFrame({"image_a": ["x", "y", "z", "x"], "image_b": ["y", "z", "x", "z"],
                                "winner": ["a", "tie", "b", "tie"]})
    first, second, a_won, ties = judged_pairs(comparisons, {"x": 0, "y": 1, "z": 2})
    assert (first.tolist(), second.tolist(), a_won.tolist(), ties) == ([0, 2], [1, 0], [True, False], 2)
