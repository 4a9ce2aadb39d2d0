"""Evaluation (issue 4, spec 4.5): pairwise accuracy from one score per image, ties wrong, honest intervals."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_script, tiny_args
from PIL import Image

from backbones import DinoFeatureExtractor
from data import cross_tier_pairs
from evaluate import head_scores
from images import open_image, preprocess
from metrics import (
    artist_bootstrap_ci,
    pairwise_accuracy,
    per_tier_pair_accuracy,
    rank_correlations,
    spec_pairwise_accuracy,
    tier_pair_counts,
    tier_ranks,
)
from model import ArtRanker, RankingHead, load_head
from runfolder import RunFolderError, check_same_data

ONE_PER_TIER = np.array(["S", "A", "B", "C"])


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


def test_ensemble_score_is_the_mean_of_its_members():
    torch.manual_seed(0)
    heads = [RankingHead(input_dim=8, hidden_dim=8, proj_dim=4).eval() for _ in range(3)]
    features = torch.randn(5, 8)
    expected = torch.stack([h(features) for h in heads]).mean(0).detach().numpy()
    np.testing.assert_allclose(head_scores(heads, features), expected, rtol=1e-6)


def test_evaluation_refuses_a_split_that_differs_from_training(tmp_path):
    table = pd.DataFrame({"image_id": ["x", "y", "z"], "file_name": ["x", "y", "z"], "tier": ["S", "A", "B"],
                          "artist": ["p", "q", "r"], "sha256": ["1", "2", "3"], "split": ["train", "val", "test"]})
    table.to_csv(tmp_path / "splits.csv", index=False)
    check_same_data(tmp_path, table)
    moved = table.assign(split=["train", "val", "train"])
    with pytest.raises(RunFolderError, match=r"1 image\(s\) in another split \(e.g. 'z'\)"):
        check_same_data(tmp_path, moved)
    retiered = table.assign(tier=["S", "A", "C"], sha256=["1", "9", "3"])
    with pytest.raises(RunFolderError, match=r"1 image\(s\) with other content \(e.g. 'y'\); 1 image\(s\) with "
                                             r"another tier \(e.g. 'z'\)"):
        check_same_data(tmp_path, retiered)


@pytest.mark.slow
def test_evaluate_end_to_end(tmp_path, dataset, tiny_backbone):
    """Train, evaluate, and check the figures against the model run pair by pair as the spec does it."""
    args = tiny_args(tmp_path, dataset, tiny_backbone)
    run_script("train.py", *args)
    result = run_script("evaluate.py", *args)
    run = tmp_path / "run"
    report = json.loads((run / "eval_test.json").read_text())
    assert {"pairwise_accuracy", "n_pairs", "n_images", "kendall_tau", "spearman", "ci95", "per_tier_pair",
            "checkpoint", "backbone", "image_size", "gates"} <= set(report)
    assert report["checkpoint"] == str(run / "checkpoints" / "best") and report["image_size"] == 56
    assert 0 <= report["ci95"][0] <= report["pairwise_accuracy"] <= report["ci95"][1] <= 1
    for split, gate in report["gates"].items():
        assert gate["value"] == report["pairwise_accuracy_by_split"][split]
        assert f"{gate['value']:.4f} {'PASS' if gate['passed'] else 'FAIL'}" in result.stdout
    assert report["gates"]["train"]["passed"] == (report["pairwise_accuracy_by_split"]["train"] <= 0.80)
    final = json.loads((run / "final_metrics.json").read_text())
    assert report["pairwise_accuracy_by_split"]["val"] == pytest.approx(final["val/pairwise_acc"], abs=1e-6)

    scores = pd.read_csv(run / "scores_test.csv", keep_default_na=False)
    assert list(scores.columns) == ["image_id", "file_name", "tier", "artist", "score"]
    assert len(scores) == report["n_images"]
    a, b, label = cross_tier_pairs(scores.tier.to_numpy())
    assert report["n_pairs"] == len(a)
    for name in ("score_by_tier_test", "tier_pair_accuracy_test", "extremes_test"):
        with Image.open(run / "figures" / f"{name}.png") as figure:
            assert figure.format == "PNG" and min(figure.size) > 200

    # The spec's evaluator (4.5.1): the full model on both images of every pair, 2 backbone passes per pair.
    head, meta = load_head(run / "checkpoints" / "best")
    model = ArtRanker(DinoFeatureExtractor.from_pretrained(str(tiny_backbone)), head, meta["feature"])
    paths = [str(dataset / name) for name in scores.file_name]
    with torch.no_grad():
        def score_pair(i, j):
            return tuple(model(preprocess(open_image(paths[k]), 56, 14)[None]).item() for k in (i, j))
        assert spec_pairwise_accuracy(score_pair, zip(a, b, label)) == report["pairwise_accuracy"]
        alone = [model(preprocess(open_image(p), 56, 14)[None]).item() for p in paths]
    np.testing.assert_allclose(scores.score, alone, atol=1e-4)

    run_script("evaluate.py", *args, "--ensemble", "true", "--split", "val")
    ensemble = json.loads((run / "eval_val_ensemble.json").read_text())
    assert ensemble["ensemble"] and len(ensemble["checkpoint"]) == 3
    assert ensemble["split"] == "val" and (run / "scores_val_ensemble.csv").is_file()
    assert ensemble["best_single"]["pairwise_accuracy"] == report["pairwise_accuracy_by_split"]["val"]
    # The ensemble's score is the mean of its members' scores, each member run on its own.
    members = [load_head(Path(member))[0] for member in ensemble["checkpoint"]]
    ensemble_scores = pd.read_csv(run / "scores_val_ensemble.csv", keep_default_na=False)
    with torch.no_grad():
        pixels = torch.stack([preprocess(open_image(str(dataset / name)), 56, 14)
                              for name in ensemble_scores.file_name])
        member_scores = [ArtRanker(model.extractor, head, meta["feature"])(pixels).numpy() for head in members]
    np.testing.assert_allclose(ensemble_scores.score, np.mean(member_scores, axis=0), atol=1e-4)
    assert ensemble["pairwise_accuracy"] == pairwise_accuracy(ensemble_scores.score.to_numpy(),
                                                              ensemble_scores.tier.to_numpy())[0]
    assert (run / "figures" / "tier_pair_accuracy_val_ensemble.png").is_file()

    refused = run_script("evaluate.py", *args, "--feature", "cls_mean", check=False)
    assert refused.returncode != 0
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "feature: 'cls' -> 'cls_mean'" in line
