"""pipeline/calibration.py: P(A better) is the maximum-likelihood logistic fit; the tier cuts are the ordered
thresholds that hint the most images their own tier."""

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_expit

from pipeline.calibration import fit_calibration, fit_tier_cuts, tier_hint
from pipeline.tables import cross_tier_pairs

TIERS = np.array(["S", "A", "B", "C"])
RANK = {"S": 3, "A": 2, "B": 1, "C": 0}  # the spec's order, written out


def test_every_tier_is_hinted_when_the_medians_are_out_of_order():
    # The demo's validation scores: medians S 2.35, A 1.33, B 1.54, C 1.65. Midpoints of medians never say B.
    rng = np.random.default_rng(0)
    medians = {"S": 2.35, "A": 1.33, "B": 1.54, "C": 1.65}
    tiers = np.repeat(list("SABC"), 15)
    scores = np.concatenate([medians[t] + rng.normal(0, 0.4, 15) for t in "SABC"])
    calibration = fit_calibration(scores, tiers)
    thresholds = [cut["threshold"] for cut in calibration["tier_cuts"]]
    assert [(c["above"], c["below"]) for c in calibration["tier_cuts"]] == [("S", "A"), ("A", "B"), ("B", "C")]
    assert thresholds == sorted(thresholds, reverse=True) and len(set(thresholds)) == 3
    hints = [tier_hint(s, calibration) for s in scores]
    assert set(hints) == set("SABC")
    assert calibration["tier_hint_agreement"] == pytest.approx(np.mean(np.array(hints) == tiers))
    assert calibration["tier_hint_agreement"] > 0.25  # better than hinting one tier for all


def brute_force_agreement(scores, tiers, present) -> float | None:
    distinct = np.unique(scores)
    best = None
    for cuts in itertools.combinations(((distinct[1:] + distinct[:-1]) / 2)[::-1], len(present) - 1):
        calibration = {"tier_cuts": [{"above": a, "below": b, "threshold": t}
                                     for a, b, t in zip(present, present[1:], cuts)]}
        hints = [tier_hint(s, calibration) for s in scores]
        if set(hints) == set(present):
            agreement = float(np.mean(np.array(hints) == tiers))
            best = agreement if best is None else max(best, agreement)
    return best


def test_tier_cuts_are_the_ordered_thresholds_with_the_most_agreement():
    rng = np.random.default_rng(1)
    for trial in range(120):
        n = int(rng.integers(3, 11))
        tiers = rng.choice(list("SABC"), n)
        scores = rng.integers(0, 5, n).astype(float) if trial % 2 else rng.normal(size=n)  # ties half the time
        present = [t for t in "SABC" if t in tiers]
        cuts, agreement = fit_tier_cuts(scores, tiers)
        expected = brute_force_agreement(scores, tiers, present) if len(present) > 1 else None
        if expected is None:
            assert cuts == [] and agreement is None
            continue
        hints = [tier_hint(s, {"tier_cuts": cuts}) for s in scores]
        assert set(hints) == set(present)
        assert agreement == pytest.approx(expected) == pytest.approx(np.mean(np.array(hints) == tiers))


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
