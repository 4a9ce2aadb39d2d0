"""evaluate.py: the figures of a trained run against the spec's evaluator, ensembles, the refusals."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import read_head, run_script, tiny_args
from PIL import Image

from evaluate import head_scores
from model import ArtRanker, RankingHead
from pipeline.backbones import DinoFeatureExtractor
from pipeline.config import Config
from pipeline.figures import tier_pair_heatmap
from pipeline.images import open_image, preprocess
from pipeline.metrics import pairwise_accuracy, spec_pairwise_accuracy
from pipeline.tables import cross_tier_pairs


def test_ensemble_score_is_the_mean_of_its_members():
    torch.manual_seed(0)
    heads = [RankingHead(input_dim=8, hidden_dim=8, proj_dim=4).eval() for _ in range(3)]
    features = torch.randn(5, 8)
    expected = torch.stack([h(features) for h in heads]).mean(0).detach().numpy()
    np.testing.assert_allclose(head_scores(heads, features), expected, rtol=1e-6)


def test_tier_pair_heatmap_puts_each_pair_in_the_row_of_its_higher_tier_and_the_column_of_its_lower(tmp_path,
                                                                                                   monkeypatch):
    import pipeline.figures as figures

    drawn = []
    monkeypatch.setattr(figures, "save_png", lambda figure, path: drawn.append(figure) or Path(path))
    accuracy = {"S-A": 0.1, "S-B": 0.2, "S-C": 0.3, "A-B": 0.4, "A-C": 0.5}  # no B-C pair
    tier_pair_heatmap({p: (a, 10 * (k + 1)) for k, (p, a) in enumerate(accuracy.items())}, tmp_path / "h.png",
                      title="t")
    ax = drawn[0].axes[0]
    # rows: higher S, A, B; columns: lower A, B, C
    expected = np.array([[0.1, 0.2, 0.3], [np.nan, 0.4, 0.5], [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(np.ma.filled(ax.images[0].get_array(), np.nan), expected)
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts[(0, 2)] == "30.0%\n30 pairs" and texts[(1, 1)] == "40.0%\n40 pairs" and texts[(2, 2)] == "no pairs"


def test_checkpoint_is_the_head_evaluate_reads(tmp_path):
    from evaluate import checkpoint_dirs

    elsewhere = tmp_path / "kept" / "epoch0007"
    assert checkpoint_dirs(Config(output_dir=str(tmp_path), checkpoint=str(elsewhere))) == (elsewhere, [])
    assert checkpoint_dirs(Config(output_dir=str(tmp_path))) == (tmp_path / "checkpoints" / "best", [])


def test_the_console_says_what_each_gate_means_and_where_it_comes_from(tmp_path):
    from evaluate import console_report
    from pipeline.metrics import GATES, gate_results

    accuracy = {"test": 0.7, "val": 0.6, "train": 0.9}
    report = dict(gates=gate_results(accuracy), kendall_tau=0.3, spearman=0.4, pairwise_accuracy=0.7, n_pairs=10,
                  n_images=8, n_artists=2, ci95=[0.6, 0.8], bootstrap={"resamples": 5}, per_tier_pair={},
                  per_tier_pair_n_pairs={}, reliability=dict(cross_tier=None, comparisons=None, tier_sets=None))
    text = console_report({"best single": report}, "test", tmp_path, [])
    assert "0.6000 FAIL" in text and "0.9000 FAIL" in text and "0.7000 PASS" in text
    legend = next(line for line in text.splitlines() if "gates: the requirements' acceptance targets" in line)
    assert [f"{split} {op} {bound:.2f}: " in legend for split, (op, bound) in GATES.items()] == [True] * 3
    assert "never seen" in legend and "chose the checkpoint" in legend and "learnt its training artists" in legend


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
    # a head that is not a tier model names no tier: no tier figures, no fake numbers
    assert "tier_model" not in report and "tier model" not in result.stdout
    assert not (run / "figures" / "tier_confusion_test.png").exists()
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
    head, meta = read_head(run / "checkpoints" / "best")
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
    members = [read_head(Path(member))[0] for member in ensemble["checkpoint"]]
    ensemble_scores = pd.read_csv(run / "scores_val_ensemble.csv", keep_default_na=False)
    with torch.no_grad():
        pixels = torch.stack([preprocess(open_image(str(dataset / name)), 56, 14)
                              for name in ensemble_scores.file_name])
        member_scores = [ArtRanker(model.extractor, head, meta["feature"])(pixels).numpy() for head in members]
    np.testing.assert_allclose(ensemble_scores.score, np.mean(member_scores, axis=0), atol=1e-4)
    assert ensemble["pairwise_accuracy"] == pairwise_accuracy(ensemble_scores.score.to_numpy(),
                                                              ensemble_scores.tier.to_numpy())[0]
    assert (run / "figures" / "tier_pair_accuracy_val_ensemble.png").is_file()

    import evaluate  # a refusal, in this process: a script's start costs seconds of imports

    with pytest.raises(SystemExit) as refused:
        evaluate.main([*args, "--feature", "cls_mean"])
    line = str(refused.value)
    assert line.startswith("error: ") and "\n" not in line and "feature: 'cls' -> 'cls_mean'" in line

    # Judgements a teacher adds after training are not the run's: its test comparisons would be other ones.
    names = list(scores.file_name)
    (dataset / "comparisons.csv").write_text(f"image_a,image_b,winner,rater\n{names[0]},{names[1]},a,x\n")
    with pytest.raises(SystemExit) as refused:
        evaluate.main(args)
    assert "the comparisons file differs from this run's" in str(refused.value)
