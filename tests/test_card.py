"""pipeline/card.py: the run's model card in the Hugging Face layout, with the run's own figures."""

import json
from pathlib import Path

import pandas as pd
import yaml

from pipeline.card import model_card, results_section, write_model_card
from pipeline.config import Config
from pipeline.files import UMASK
from pipeline.runs import write_record
from pipeline.tables import to_dataset


def fake_run(out: Path, *, random_backbone: str = "", with_eval: bool = True) -> Path:
    """A run folder holding the files train.py and evaluate.py write, with known figures."""
    out.mkdir(parents=True)
    config = vars(Config(output_dir=str(out), data_dir="data/demo", random_backbone=random_backbone))
    (out / "config.json").write_text(json.dumps(config))
    (out / "final_metrics.json").write_text(json.dumps({
        "stop_reason": "early stop: val loss not improved for 10 epochs", "epochs_run": 41, "best_epoch": 31,
        "train/pairwise_acc": 0.70, "val/pairwise_acc": 0.63, "test/pairwise_acc": 0.7356}))
    rows = pd.DataFrame([dict(image_id=f"i{k}", file_name=f"images/i{k}.png", tier="SABC"[k % 4],
                              artist=f"artist{k // 10}", path=f"images/i{k}.png", row=k + 2, sha256=f"{k:064x}",
                              split=("train", "val", "test")[min(2, k // 80)]) for k in range(100)])
    write_record(out, config=config, table=to_dataset(rows), stage="train")
    (out / "calibration.json").write_text(json.dumps({"slope": 2.5, "pairs": 1347, "tier_cuts": [
        {"above": "S", "below": "A", "threshold": 2.0}, {"above": "A", "below": "B", "threshold": 1.5},
        {"above": "B", "below": "C", "threshold": 1.2}]}))
    if with_eval:
        (out / "eval_test.json").write_text(json.dumps({
            "split": "test", "pairwise_accuracy": 0.7356, "n_pairs": 1339, "n_images": 60, "n_artists": 6,
            "kendall_tau": 0.41, "spearman": 0.52, "ci95": [0.60, 0.85], "ensemble": False,
            "pairwise_accuracy_by_split": {"train": 0.70, "val": 0.63, "test": 0.7356},
            "per_tier_pair": {"S-A": 0.69, "B-C": 0.76}, "per_tier_pair_n_pairs": {"S-A": 272, "B-C": 176}}))
    return out


def test_model_card_has_the_hugging_face_layout_and_the_runs_figures(tmp_path):
    out = fake_run(tmp_path / "run")
    path = write_model_card(out)
    text = path.read_text()
    assert path == out / "README.md" and text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["library_name"] == "artrank"
    metrics = {(m["type"], m["name"]): m["value"] for r in header["model-index"][0]["results"] for m in r["metrics"]}
    assert metrics[("pairwise_accuracy", "test pairwise accuracy")] == 0.7356
    assert metrics[("kendall_tau", "test Kendall tau-b")] == 0.41
    assert "| test (60 images, 6 artists, 1,339 pairs), 95% CI [0.600, 0.850] | **0.7356** | >= 0.60 | PASS |" in text
    assert "| val | **0.6300** | >= 0.62 | PASS |" in text and "| train | **0.7000** | <= 0.80 | PASS |" in text
    assert "| S-A | 0.690 | 272 |" in text and "| B-C | 0.760 | 176 |" in text
    assert "| train | 20 | 20 | 20 | 20 | 80 | 8 |" in text  # the data summary from the run's rows
    assert "best validation epoch was 31" in text and "artrank.load(" in text and "predict.py" in text
    assert "backbone is random" not in text
    assert (path.stat().st_mode & 0o777) == 0o666 & ~UMASK


def test_model_card_says_a_random_backbone_is_random(tmp_path):
    text = model_card(fake_run(tmp_path / "run", random_backbone="tiny"))
    assert "**Note:** the backbone is random: its figures show that the pipeline works" in text


def test_model_card_of_a_run_not_yet_evaluated_uses_the_final_metrics(tmp_path):
    text = results_section(fake_run(tmp_path / "run", with_eval=False))
    assert "| test | **0.7356** | >= 0.60 | PASS |" in text and "tier pair" not in text


def test_train_writes_the_model_card_with_its_figures(exported):
    text = (exported["out"] / "README.md").read_text()
    final = json.loads((exported["out"] / "final_metrics.json").read_text())
    header = yaml.safe_load(text.split("---\n")[1])
    test_result = next(r for r in header["model-index"][0]["results"] if r["dataset"]["split"] == "test")
    assert test_result["metrics"][0]["value"] == round(final["test/pairwise_acc"], 4)
    assert f"| test | **{final['test/pairwise_acc']:.4f}** | >= 0.60 |" in text
    # The card travels with the folder: its usage names the folder, not the machine's path to it.
    assert f'artrank.load("{exported["out"].name}")' in text and str(exported["out"].parent) not in text
