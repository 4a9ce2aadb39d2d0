"""pipeline/card.py: the run's model card in the Hugging Face layout, with the run's own figures."""

import json
from pathlib import Path

import pandas as pd
import yaml

from pipeline.card import model_card, results_section, write_model_card
from pipeline.config import Config
from pipeline.files import UMASK
from pipeline.provenance import MADE_FROM, made_from
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
    (out / "checkpoints" / "best").mkdir(parents=True)
    (out / "checkpoints" / "best" / "head.safetensors").write_bytes(b"the best head's weights")
    best = {MADE_FROM: made_from(out, out / "checkpoints" / "best")}
    (out / "calibration.json").write_text(json.dumps(best | {"slope": 2.5, "pairs": 1347, "tier_cuts": [
        {"above": "S", "below": "A", "threshold": 2.0}, {"above": "A", "below": "B", "threshold": 1.5},
        {"above": "B", "below": "C", "threshold": 1.2}]}))
    if with_eval:
        (out / "eval_test.json").write_text(json.dumps(best | {
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


def test_the_details_row_is_the_evaluated_split_s(tmp_path):
    out = fake_run(tmp_path / "run", with_eval=False)
    best = {MADE_FROM: made_from(out, out / "checkpoints" / "best")}
    (out / "eval_val.json").write_text(json.dumps(best | {
        "split": "val", "pairwise_accuracy": 0.63, "n_pairs": 212, "n_images": 20, "n_artists": 2,
        "kendall_tau": 0.3, "spearman": 0.4, "ci95": [0.51, 0.72], "ensemble": False,
        "pairwise_accuracy_by_split": {"train": 0.70, "val": 0.63, "test": 0.7356},
        "per_tier_pair": {"S-A": 0.5}, "per_tier_pair_n_pairs": {"S-A": 20}}))
    text = results_section(out)
    assert "| val (20 images, 2 artists, 212 pairs), 95% CI [0.510, 0.720] | **0.6300** | >= 0.62 | PASS |" in text
    assert "| test | **0.7356** | >= 0.60 | PASS |" in text
    assert "Val split, best checkpoint: Kendall tau-b 0.300, Spearman 0.400." in text


def test_the_card_shows_the_best_checkpoint_s_figures_and_names_the_ensemble_and_the_export(tmp_path):
    out = fake_run(tmp_path / "run")
    members = [out / "checkpoints" / "top" / f"epoch000{k}" for k in (1, 2)]
    for k, member in enumerate(members):
        member.mkdir(parents=True)
        (member / "head.safetensors").write_bytes(f"epoch {k + 1} weights".encode())
    (out / "eval_test.json").unlink()  # only evaluate.py --ensemble ran
    (out / "eval_test_ensemble.json").write_text(json.dumps({MADE_FROM: made_from(out, *members)} | {
        "split": "test", "pairwise_accuracy": 0.91, "ci95": [0.88, 0.94], "ensemble": True, "kendall_tau": 0.7,
        "spearman": 0.8, "n_pairs": 1339, "n_images": 60, "n_artists": 6, "per_tier_pair": {},
        "per_tier_pair_n_pairs": {}, "pairwise_accuracy_by_split": {"train": 0.95, "val": 0.9, "test": 0.91}}))
    (out / "eval_val.json").write_text(json.dumps({MADE_FROM: made_from(out, members[1])} | {  # not the best
        "split": "val", "pairwise_accuracy": 0.99, "ci95": [0.9, 1.0], "ensemble": False, "kendall_tau": 0.9,
        "spearman": 0.9, "n_pairs": 1, "n_images": 2, "n_artists": 1, "per_tier_pair": {}, "per_tier_pair_n_pairs": {},
        "pairwise_accuracy_by_split": {"train": 0.99, "val": 0.99, "test": 0.99}}))
    (out / "model.json").write_text(json.dumps({MADE_FROM: made_from(out, members[0]), "checkpoint": {
        "path": str(members[0]), "epoch": 1}}))
    text = model_card(out)
    header = yaml.safe_load(text.split("---\n")[1])
    metrics = {(m["type"], m["name"]): m["value"] for r in header["model-index"][0]["results"] for m in r["metrics"]}
    assert metrics[("pairwise_accuracy", "test pairwise accuracy")] == 0.7356  # the best checkpoint's final figure
    assert "0.91" not in yaml.dump(header) and "0.99" not in text
    assert "| test | **0.7356** | >= 0.60 | PASS |" in text
    assert ("An ensemble of the 2 top checkpoints (`evaluate.py --ensemble`, not the exported model) reaches test "
            "pairwise accuracy 0.9100, 95% CI [0.880, 0.940].") in text
    assert "`model.onnx` is another checkpoint (`epoch0001`, epoch 1), not the one the figures above describe." in text
    assert "The figures above are the best checkpoint's (`checkpoints/best`, epoch 31)." in text
    assert "P(A better than B) = sigmoid(2.5" in text  # the best's calibration
    (out / "checkpoints" / "best" / "head.safetensors").write_bytes(b"other weights")
    assert "## Calibration" not in model_card(out)  # fitted on weights the run no longer holds
