"""Issue 6: the bench scripts run on CPU at tiny sizes and print their tables and a one-line summary.

Speed figures depend on the machine, so what is checked is what does not: pair and pass counts, the
spec's evaluator and score-once agreeing, the ONNX graph agreeing with PyTorch, the FLOP count.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_script, tiny_args

from pipeline.tables import TIERS, cross_tier_pairs

pytestmark = pytest.mark.slow


def table_and_summary(stdout: str) -> tuple[str, str]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert any(line.startswith("|---") for line in lines), f"no table printed:\n{stdout}"
    return "\n".join(line for line in lines if line.startswith("|")), lines[-1]


def cross_tier_pair_count(images: int, *, train_fraction: float = 1.0, seed: int = 42) -> int:
    tiers = np.random.default_rng(seed).choice(list(TIERS), size=images)
    return len(cross_tier_pairs(tiers[:int(images * train_fraction)])[0])


def test_train_speed_times_the_spec_loop_against_training_on_cached_features():
    result = run_script("bench/train_speed.py", "--images", 60, "--size", 28, "--epochs", 2, "--spec_batches", 1,
                        "--device", "cpu")
    table, summary = table_and_summary(result.stdout)
    pairs = cross_tier_pair_count(60, train_fraction=0.8)
    assert f"| pairs compared per epoch | {pairs:,} (all cross-tier pairs)" in table
    assert f"2 per pair: {2 * pairs:,} per epoch | 1 per image: 60 in all" in table
    assert "head at ViT-L width (1024-d features)" in table  # the tiny backbone's 64-d head is not the real cost
    assert summary.startswith("train_speed: 2 epochs on 48 training images") and "(extrapolated)" in summary
    assert "x faster" in summary


def test_eval_speed_same_accuracy_with_one_backbone_pass_per_image():
    result = run_script("bench/eval_speed.py", "--images", 12, "--size", 28, "--spec_pairs", 0, "--device", "cpu")
    table, summary = table_and_summary(result.stdout)
    pairs = cross_tier_pair_count(12)
    assert f"| {2 * pairs:,} (2 per pair) | {pairs:,} |" in table
    assert "| 12 (1 per image) |" in table
    assert summary.startswith(f"eval_speed: 12 images, {pairs:,} pairs")
    assert "same accuracy on the same pairs" in summary and "1 backbone pass per image" in summary


def test_scale_materialises_the_full_pair_table_only_below_the_limit():
    result = run_script("bench/scale.py", "--sizes", 400, 200, "--materialise_max", 10_000)
    table, summary = table_and_summary(result.stdout)
    rows = [line for line in table.splitlines() if line.startswith("| 2") or line.startswith("| 4")]
    assert [row.split(" | ")[0] for row in rows] == ["| 200", "| 400"]  # smallest first
    assert "pairs: not materialised; would hold" in rows[1] and "not materialised" not in rows[0]
    assert "memory: " in result.stdout
    assert summary.startswith("scale: 200 -> 400 images (x2)")


def test_gpu_bench_check_run_on_cpu_writes_json(tmp_path):
    out = tmp_path / "gpu.json"
    result = run_script("bench/gpu.py", "--backbone", "tiny", "--size", 28, "--batches", 1, 2, "--repeats", 2,
                        "--parts", "extract", "eager", "onnx", "--device", "cpu", "--out", out)
    table, summary = table_and_summary(result.stdout)
    results = json.loads(out.read_text())
    assert [row["batch"] for row in results["extraction"]] == [1, 2]
    assert all(row["images_per_s"] > 0 and row["peak_gib"] is None for row in results["extraction"])
    assert results["flops_per_image"]["tokens"] == 2 * 2 + 1
    assert results["latency_batch1_ms"]["eager"] > 0 and results["latency_batch1_ms"]["onnx"] > 0
    assert results["onnx"]["provider"] == "CPUExecutionProvider" and results["onnx"]["precision"] == "fp32"
    assert results["onnx"]["max_abs_diff_vs_fp32"] <= 1e-4 * max(1.0, results["onnx"]["score_range"])
    assert results["not_measured"] == ["compile"]
    assert "| torch.compile(max-autotune-no-cudagraphs), fp32 weights | not measured |" in table
    assert summary.startswith("gpu: tiny at 28")


def test_flop_count_of_vit_l_at_756_is_the_2_6_tflops_of_notes_4():
    from transformers import Dinov2Config

    from bench.gpu import flops_per_image
    from pipeline.backbones import RANDOM_BACKBONES

    flops = flops_per_image(Dinov2Config(**RANDOM_BACKBONES["large"]), 756)
    assert flops["tokens"] == 2917
    assert flops["linear"] == pytest.approx(1.76e12, rel=0.01)
    assert flops["attention"] == pytest.approx(0.84e12, rel=0.01)
    assert flops["total"] == pytest.approx(2.6e12, rel=0.01)


def test_heads_reports_the_sample_standard_deviation_over_seeds_and_none_for_one_seed():
    import statistics

    from bench.heads import spread

    accuracies = [0.61, 0.66, 0.70, 0.58]
    assert spread(np.array(accuracies)) == f"{statistics.stdev(accuracies):.3f}"  # n - 1, as crossval's report
    assert spread(np.array([0.61])).strip() == "-"


def test_heads_trains_every_head_and_feature_with_train_py_and_prints_the_table(tmp_path, tiny_backbone, dataset):
    config = tiny_args(tmp_path, dataset, tiny_backbone, epochs=1)[1]
    result = subprocess.run([sys.executable, "-m", "bench.heads", "--config", config, "--seeds", "42"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    runs = [line for line in lines if line.startswith("feature=")]
    assert len(runs) == 4 and all(" seed=42: val " in line for line in runs)
    for feature, head in (("cls", "norm"), ("cls", "linear"), ("cls_mean", "norm"), ("cls_mean", "linear")):
        run = tmp_path / "run" / "heads" / f"{feature}-{head}-seed42"
        metrics = json.loads((run / "final_metrics.json").read_text())
        assert f"feature={feature} score_head={head} seed=42: val {metrics['val/pairwise_acc']:.3f}" in result.stdout
    assert lines[-1].startswith("best by mean val accuracy: feature=")


def test_photos_runs_at_its_smallest_and_prints_every_target(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.photos", "--photos", "2", "--scans", "1", "--startup", "200",
                             "--demo_artists", "10"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Spearman" in result.stdout and "| target |" in result.stdout


def test_startup_times_every_script_s_help_and_predict_from_start_to_score(exported):
    result = subprocess.run([sys.executable, "-m", "bench.startup", "--run", str(exported["out"]), "--repeats", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table, summary = table_and_summary(result.stdout)
    for script in ("make_pairs", "train", "evaluate", "export_onnx", "predict", "crossval"):
        assert f"| {script}.py --help | " in table
    assert "| predict.py --model RUN/model.onnx PHOTO (start to score, 12 MP JPEG) | " in table
    assert "| python -c 'import onnxruntime, PIL' (the least a scorer loads) | " in table
    assert summary.startswith("startup: --help ") and "predict to score" in summary


def test_active_pairs_counts_agreement_with_the_latent_quality_beyond_the_tie_gap():
    from bench.active_pairs import latent_accuracy

    q, tiers = np.array([0.1, 0.5, 0.6, 0.9, 0.905]), np.array(list("CBBSS"))
    scores = np.array([0.0, 2.0, 1.0, 1.5, -9.0])  # the last pair (0.9, 0.905) is a tie: never counted
    # pairs of the first four: (0,1) (0,2) (0,3) (2,3) right, (1,2) (1,3) wrong; with the fifth: (0,4) (1,4) (2,4)
    # wrong, the tie (3,4) left out
    overall, within = latent_accuracy(scores, q, tiers)
    assert overall == pytest.approx(4 / 9) and within == 0.0  # within one tier: (1,2) alone


def test_the_demo_s_latent_quality_is_the_one_its_tiers_are_cut_from(tmp_path):
    import pandas as pd

    from pipeline.demo_data import generate_demo_dataset, latent_quality, tier_of

    data = generate_demo_dataset(tmp_path / "demo", num_artists=10, works_per_artist=8, seed=5)
    rows = pd.read_csv(data / "metadata.csv")
    q = latent_quality(num_artists=10, works_per_artist=8, seed=5)
    assert len(q) == len(rows) and [tier_of(q[name.split("/")[1].rsplit(".", 1)[0]]) for name in rows.file_name] == \
        list(rows.tier)
    assert q != latent_quality(num_artists=10, works_per_artist=8, seed=6)


def test_active_pairs_start_keeps_exactly_k_of_the_train_and_val_comparisons_drawn_by_seed():
    import pandas as pd

    from bench.active_pairs import starting_comparisons

    judged = pd.DataFrame(dict(image_a=[f"a{i}" for i in range(20)], image_b=[f"b{i}" for i in range(20)],
                               winner="A", rater="r1", split=["train", "val"] * 10))
    kept = starting_comparisons(judged, 7, np.random.default_rng(3))
    again = starting_comparisons(judged, 7, np.random.default_rng(3))
    assert len(kept) == 7 and kept["image_a"].nunique() == 7 and set(kept["image_a"]) <= set(judged["image_a"])
    assert kept.equals(again) and not kept.equals(starting_comparisons(judged, 7, np.random.default_rng(4)))
    assert (kept.set_index("image_a")["image_b"] == judged.set_index("image_a")["image_b"].loc[kept["image_a"]]).all()
    assert starting_comparisons(judged, None, np.random.default_rng(3)) is judged
    with pytest.raises(ValueError, match="--start 21"):
        starting_comparisons(judged, 21, np.random.default_rng(3))


def test_active_pairs_quality_signal_appends_columns_that_carry_the_latent_quality_and_leaves_zero_alone():
    import torch

    from bench.active_pairs import with_quality_signal

    rng = np.random.default_rng(0)
    features = [torch.as_tensor(rng.normal(3.0, 2.0, (n, 8)), dtype=torch.float32) for n in (400, 100)]
    qualities = [rng.uniform(0, 1, 400), rng.uniform(0, 1, 100)]
    columns = 16
    assert with_quality_signal(features, qualities, 0.0, columns, seed=1) is features
    fit, test = with_quality_signal(features, qualities, 2.0, columns, seed=1)
    assert fit.shape == (400, 8 + columns) and test.shape == (100, 8 + columns)
    mean, sd = features[0].mean(dim=0), features[0].std(dim=0)
    assert torch.allclose(test[:, :8], (features[1] - mean) / sd, atol=1e-4)  # the test works on the fit's scale
    for x, q in ((fit, qualities[0]), (test, qualities[1])):
        extra = x[:, 8:].numpy()
        # the columns' one direction of signal: along it the latent quality, across it unit noise alone
        direction = np.linalg.lstsq(np.c_[extra, np.ones(len(q))], q, rcond=None)[0][:-1]
        assert np.corrcoef(extra @ direction, q)[0, 1] > 0.8
    again = with_quality_signal(features, qualities, 2.0, columns, seed=1)
    assert torch.equal(again[0], fit) and torch.equal(again[1], test)


@pytest.mark.parametrize("argument", [["--heads", "0"], ["--quality-columns", "0"], ["--quality-signal", "-1"]])
def test_active_pairs_refuses_no_heads_no_columns_or_a_negative_signal_before_any_work(argument, capsys):
    from bench.active_pairs import main

    with pytest.raises(SystemExit) as exit_:
        main(argument + ["--config", "no/such/config.json"])
    assert exit_.value.code == 2 and f"{argument[0]} {argument[1]}" in capsys.readouterr().err
