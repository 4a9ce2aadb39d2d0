"""pipeline/tier_sets.py: split conformal tier sets hold the true tier as often as promised, are runs of adjacent
tiers, and their threshold is the conformal rank of the validation nonconformities."""

import math

import numpy as np
import pytest

from pipeline.ordinal import tier_probabilities
from pipeline.tier_sets import fit_tier_sets, nonconformity, shown_set, tier_set_report, tier_set_rule, tier_sets

TIERS = np.array(["S", "A", "B", "C"])
POSITION = {"S": 3.0, "A": 2.0, "B": 1.0, "C": 0.0}


def synthetic(n: int, seed: int, spread: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Scores around each tier's position with a known noise: the same law for every split."""
    rng = np.random.default_rng(seed)
    tiers = rng.choice(TIERS, n)
    return np.array([POSITION[t] for t in tiers]) + rng.normal(0, spread, n), tiers


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_coverage_on_fresh_images_is_one_minus_alpha_within_its_interval(alpha):
    rule = tier_set_rule(*synthetic(400, seed=0))
    # many validation images: the coverage given them is then 1 - alpha to within 0.003 (it is a Beta draw)
    fitted = fit_tier_sets(*synthetic(20_000, seed=1), rule, alpha=alpha)
    scores, tiers = synthetic(6000, seed=2)
    artists = np.arange(6000) // 20  # 300 artists of 20 images
    report = tier_set_report(scores, tiers, artists, fitted, resamples=300, seed=0)
    low, high = report["coverage_ci95"]
    assert low <= 1 - alpha <= high
    assert abs(report["coverage"] - (1 - alpha)) < 0.01
    assert 1 < report["mean_set_size"] < 4  # the noise mixes neighbours: sets hold more than one tier, not all
    assert report["target"] == pytest.approx(1 - alpha) and "marginal" in report["guarantee"]
    assert sum(report["per_tier_n"].values()) == 6000


def test_the_threshold_is_the_conformal_rank_of_the_validation_nonconformities():
    rule = tier_set_rule(*synthetic(200, seed=3))
    scores, tiers = synthetic(20, seed=4)
    own = nonconformity(scores, rule)[np.arange(20), [list(TIERS).index(t) for t in tiers]]
    fitted = fit_tier_sets(scores, tiers, rule, alpha=0.1)
    assert fitted["rank"] == math.ceil(21 * 0.9) == 19  # the (n + 1) correction: not the 18th of 20
    assert fitted["threshold"] == pytest.approx(np.sort(own)[18])
    # too few images for the asked alpha: the rank passes n, every set is every tier
    few = fit_tier_sets(scores[:8], tiers[:8], rule, alpha=0.1)
    assert few["threshold"] is None and set(tier_sets(scores[:8], few)) == {tuple(TIERS)}


def test_bands_are_the_training_quartiles_and_the_nonconformity_is_the_distance_outside():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 10.0, 11.0, 12.0, 13.0, 14.0])
    rule = tier_set_rule(scores, np.array(["C"] * 5 + ["A"] * 5))
    assert rule["bands"] == {"A": [11.0, 13.0], "C": [1.0, 3.0]}
    misfit = nonconformity([-5.0, 2.0, 5.0, 12.5, 20.0], rule)
    # A, the best tier trained on, is open above; C, the worst, open below
    np.testing.assert_allclose(misfit[:, [1, 3]], [[16.0, 0.0], [9.0, 0.0], [6.0, 2.0], [0.0, 9.5], [0.0, 17.0]])
    assert np.isinf(misfit[:, [0, 2]]).all()  # S and B have no training image: they never fit


def test_sets_are_runs_of_adjacent_tiers_and_never_empty():
    rule = {"method": "band", "bands": {"S": [3.0, 4.0], "A": [0.0, 1.0], "B": [2.0, 2.5], "C": [-1.0, 0.5]}}
    fitted = rule | {"threshold": 0.1, "alpha": 0.1}
    # 0.3 fits A and C but not B (bands out of order): the set is the span A, B, C; 1.5 fits none: the nearest
    assert tier_sets([0.3, 3.5, 10.0, 1.5], fitted) == [("A", "B", "C"), ("S",), ("S",), ("A",)]
    assert shown_set(("A", "B")) == "{A,B}" and shown_set(None) == "-"


def test_a_tier_model_s_sets_come_from_its_probabilities():
    thresholds = [-1.0, 0.0, 1.0]
    rule = tier_set_rule(np.zeros(3), np.array(["A", "B", "C"]), thresholds)
    assert rule["method"] == "probability"
    fitted = rule | {"threshold": 0.7, "alpha": 0.1}
    for score in (-3.0, -0.5, 0.4, 2.5):
        p = dict(zip("CBAS", tier_probabilities([score], thresholds)[0]))
        held = [t for t in "SABC" if 1 - p[t] <= 0.7]
        expected = "SABC"["SABC".index(held[0]):"SABC".index(held[-1]) + 1]
        assert tier_sets([score], fitted) == [tuple(expected)]
