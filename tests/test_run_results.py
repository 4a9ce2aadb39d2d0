"""The real scripts' numbers against independent computations.

One train.py run at learning rate 0 keeps the head at its seeded start, so every figure it and
evaluate.py write can be recomputed here from the images: features from transformers' own Dinov2Model,
the head from the configured seed, the loss from torch's MarginRankingLoss over the spec's pairs.
A recording AdamW (swapped in before train.py is imported) keeps the optimizer's settings, the starting
weights and the gradient of every step.
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, read_head, run_script, tiny_args, write_dataset
from datasets import load_from_disk
from transformers import Dinov2Config, Dinov2Model

from data import split_by_artist
from model import RankingHead
from pipeline.images import open_image, preprocess
from pipeline.metrics import artist_bootstrap_ci
from pipeline.tables import MANIFEST_COLUMNS, cross_tier_pairs, frame, to_dataset

pytestmark = pytest.mark.slow

SEED, MARGIN, WEIGHT_DECAY = 7, 2.5, 0.03  # not the defaults: the run must use what it is given
STILL_LR = 1e-30  # lr * an Adam step of about 1 is far below the float32 spacing of any non-zero weight
RANK = {"S": 3, "A": 2, "B": 1, "C": 0}

RECORDING_TRAIN = """
import sys, torch
sys.argv = ["train.py", *{args!r}]
sys.path.insert(0, {root!r})
made, steps = [], []
class RecordingAdamW(torch.optim.AdamW):
    def __init__(self, params, *args, **kwargs):
        params = list(params)
        super().__init__(params, *args, **kwargs)
        made.append(dict(self.defaults, start=[p.detach().clone() for p in params]))
    def step(self, *args, **kwargs):
        steps.append([p.grad.detach().clone() for group in self.param_groups for p in group["params"]])
        return super().step(*args, **kwargs)
torch.optim.AdamW = RecordingAdamW
import train
try:
    train.main()
finally:
    torch.save(dict(made=made, steps=steps), {record!r})
"""

# The validation accuracies are scripted (the first call per epoch), to see which checkpoints top-k keeps.
SCRIPTED_VAL_ACCURACY = """
import sys
sys.argv = ["train.py", *{args!r}]
sys.path.insert(0, {root!r})
import model, train
pairwise_accuracy, scripted = model.pairwise_accuracy, {accuracies!r}
def scripted_accuracy(scores, tiers):
    accuracy, pairs = pairwise_accuracy(scores, tiers)
    return (scripted.pop(0) if scripted else accuracy), pairs
model.pairwise_accuracy = scripted_accuracy
train.main()
"""

def recorded_train(args: list[str], record: Path) -> dict:
    code = RECORDING_TRAIN.format(args=[str(a) for a in args], root=str(ROOT), record=str(record))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(record, weights_only=True)


def start_args(root: Path, data: Path, backbone: Path, **overrides) -> list[str]:
    """A learning rate too small to move a float32 weight (the config refuses 0) and no dropout: the head
    stays where the seed put it."""
    values = dict(epochs=1, lr=STILL_LR, dropout=0.0, batch_size=1000, margin=MARGIN, seed=SEED,
                  weight_decay=WEIGHT_DECAY, top_k=1, bootstrap=200) | overrides
    return tiny_args(root, data, backbone, **values)


def seeded_head() -> RankingHead:
    torch.manual_seed(SEED)  # REQ-U-004: what the configured seed alone gives
    return RankingHead(input_dim=32, hidden_dim=32, proj_dim=16, dropout=0.0).eval()


def cls_features(backbone: Path, paths: list[str]) -> torch.Tensor:
    """The CLS token straight from transformers (REQ-E-001), not through the project's extractor or cache."""
    model = Dinov2Model.from_pretrained(str(backbone)).eval()
    with torch.no_grad():
        pixels = torch.stack([preprocess(open_image(p), 56, 14) for p in paths])
        return model(pixel_values=pixels).last_hidden_state[:, 0]


def spec_loss(scores: torch.Tensor, tiers: np.ndarray, margin: float) -> torch.Tensor:
    a, b, label = cross_tier_pairs(tiers)
    return torch.nn.MarginRankingLoss(margin=margin)(scores[torch.from_numpy(a)], scores[torch.from_numpy(b)],
                                                     torch.from_numpy(label).float())


def accuracy_by_pairs(scores: np.ndarray, tiers: np.ndarray) -> float:
    ranks = np.array([RANK[t] for t in tiers])
    higher = ranks[:, None] > ranks[None, :]
    return float((scores[:, None] > scores[None, :])[higher].mean())  # a tie is wrong


def split_rows(run: Path, data: Path, split: str) -> tuple[pd.DataFrame, list[str]]:
    splits = pd.read_csv(run / "splits.csv", dtype=str, keep_default_na=False)
    rows = splits[splits.split == split].reset_index(drop=True)
    return rows, [str(data / name) for name in rows.file_name]


def train_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def start(tmp_path_factory, tiny_backbone) -> dict:
    """train.py at learning rate 0, and the oracle's scores of every split."""
    root = tmp_path_factory.mktemp("start")
    data = write_dataset(root / "data", artists=50, per_artist=2)  # about 5 artists per split: intervals vary
    args = start_args(root, data, tiny_backbone)
    record = recorded_train(args, root / "record.pt")
    run = root / "run"
    head, rows, scores = seeded_head(), {}, {}
    for split in ("train", "val", "test"):
        rows[split], paths = split_rows(run, data, split)
        with torch.no_grad():
            scores[split] = head(cls_features(tiny_backbone, paths)).numpy()
    return dict(root=root, data=data, args=args, run=run, record=record, rows=rows, scores=scores)


@pytest.fixture(scope="module")
def evaluated(start) -> dict:
    """evaluate.py --split val on the run at its start."""
    run_script("evaluate.py", *start["args"], "--split", "val")
    return start


def start_backbone(start: dict) -> Path:
    return Path(json.loads((start["run"] / "config.json").read_text())["backbone"])


def test_req_u_004_the_head_starts_from_the_configured_seed_and_adamw_has_the_configured_settings(start):
    (made,) = start["record"]["made"]
    expected = list(seeded_head().parameters())
    assert len(made["start"]) == len(expected)
    assert all(torch.equal(p, q) for p, q in zip(made["start"], expected))
    assert (made["lr"], made["weight_decay"]) == (STILL_LR, WEIGHT_DECAY)


def test_the_split_is_the_configured_seed_s(start):
    rows = pd.concat(start["rows"].values())
    again = split_by_artist(rows.reset_index(drop=True), seed=SEED)
    assert list(again) == list(rows.split)


def test_spec_4_4_3_training_loss_and_gradient_are_margin_ranking_loss_over_the_cross_tier_pairs(start):
    rows, paths = split_rows(start["run"], start["data"], "train")
    head = seeded_head()
    loss = spec_loss(head(cls_features(start_backbone(start), paths)), rows.tier.to_numpy(), MARGIN)
    (logged,) = train_log(start["run"])
    assert logged["train/loss"] == pytest.approx(loss.item(), rel=1e-4)
    loss.backward()
    (step,) = start["record"]["steps"]  # one batch of every training image: one optimizer step
    for got, p in zip(step, head.parameters()):
        torch.testing.assert_close(got, p.grad, atol=1e-5, rtol=1e-4)


def test_req_s_002_validation_loss_and_accuracy_are_the_spec_s_over_the_validation_pairs(start):
    tiers = start["rows"]["val"].tier.to_numpy()
    scores = start["scores"]["val"]
    (logged,) = train_log(start["run"])
    assert logged["val/loss"] == pytest.approx(spec_loss(torch.from_numpy(scores), tiers, MARGIN).item(), rel=1e-4)
    assert logged["val/pairwise_acc"] == accuracy_by_pairs(scores, tiers)
    final = json.loads((start["run"] / "final_metrics.json").read_text())
    for split in ("train", "val", "test"):
        assert final[f"{split}/pairwise_acc"] == accuracy_by_pairs(start["scores"][split],
                                                                   start["rows"][split].tier.to_numpy())


def test_calibration_is_fitted_on_validation_scores(start):
    from pipeline.calibration import fit_tier_cuts

    calibration = json.loads((start["run"] / "calibration.json").read_text())
    tiers, scores = start["rows"]["val"].tier.to_numpy(), start["scores"]["val"]
    medians = {t: float(np.median(scores[tiers == t])) for t in "SABC"}
    assert calibration["tier_medians"] == pytest.approx(medians, abs=1e-5)
    # the cut rule itself is checked against brute force in test_calibration.py; here: on these scores
    assert [c["threshold"] for c in calibration["tier_cuts"]] == pytest.approx(
        [c["threshold"] for c in fit_tier_cuts(scores, tiers)[0]], abs=1e-5)


def test_tier_sets_take_their_bands_from_training_and_their_threshold_from_validation_alone(start):
    from pipeline.tier_sets import fit_tier_sets, tier_set_rule

    fitted = json.loads((start["run"] / "calibration.json").read_text())["tier_sets"]
    tiers, scores = {s: start["rows"][s].tier.to_numpy() for s in start["rows"]}, start["scores"]
    rule = tier_set_rule(scores["train"], tiers["train"])
    for name, band in rule["bands"].items():
        assert fitted["bands"][name] == pytest.approx(band, abs=1e-5)
    expected = fit_tier_sets(scores["val"], tiers["val"], rule, alpha=0.1)
    on_test = fit_tier_sets(scores["test"], tiers["test"], rule, alpha=0.1)
    assert on_test["threshold"] != pytest.approx(expected["threshold"], abs=1e-3)  # the splits tell them apart
    assert fitted["threshold"] == pytest.approx(expected["threshold"], abs=1e-5)
    assert (fitted["alpha"], fitted["n"], fitted["fitted_on"]) == (0.1, len(tiers["val"]), "val")


def test_evaluate_measures_calibration_and_coverage_from_the_split_s_scores(evaluated):
    from pipeline.tier_sets import tier_sets

    report = json.loads((evaluated["run"] / "eval_val.json").read_text())["reliability"]
    calibration = json.loads((evaluated["run"] / "calibration.json").read_text())
    scores, tiers = evaluated["scores"]["val"], evaluated["rows"]["val"].tier.to_numpy()
    p, won = [], []  # every cross-tier pair, both ways round, written out
    for i in range(len(scores)):
        for j in range(len(scores)):
            if RANK[tiers[i]] != RANK[tiers[j]]:
                p.append(1 / (1 + math.exp(-calibration["slope"] * (scores[i] - scores[j]))))
                won.append(float(RANK[tiers[i]] > RANK[tiers[j]]))
    p, won = np.array(p), np.array(won)
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(won[bins == k].sum() - p[bins == k].sum()) for k in range(10)) / len(p)
    measured = report["cross_tier"]
    assert measured["ece"] == pytest.approx(ece, abs=1e-4)
    assert measured["brier"] == pytest.approx(np.mean((p - won) ** 2), abs=1e-4)
    assert measured["n_pairs"] == len(p) // 2 and measured["bins"] == 10
    sets = tier_sets(scores, calibration["tier_sets"])
    assert report["tier_sets"]["coverage"] == pytest.approx(np.mean([t in s for t, s in zip(tiers, sets)]))
    assert report["tier_sets"]["mean_set_size"] == pytest.approx(np.mean([len(s) for s in sets]))
    assert (evaluated["run"] / "figures" / "reliability_val.png").is_file()


def test_evaluate_reports_the_split_it_is_asked_for_from_that_split_s_images(evaluated):
    run, val = evaluated["run"], evaluated["rows"]["val"]
    report = json.loads((run / "eval_val.json").read_text())
    csv = pd.read_csv(run / "scores_val.csv", dtype={"image_id": str, "tier": str, "artist": str},
                      keep_default_na=False)
    assert report["split"] == "val"
    assert list(csv.image_id) == list(val.image_id) and list(csv.tier) == list(val.tier)  # ids from splits.csv
    np.testing.assert_allclose(csv.score, evaluated["scores"]["val"], atol=1e-4)
    tiers = csv.tier.to_numpy()
    accuracy = accuracy_by_pairs(csv.score.to_numpy(), tiers)
    assert report["pairwise_accuracy"] == accuracy == report["pairwise_accuracy_by_split"]["val"]
    assert (report["n_images"], report["n_artists"]) == (len(val), val.artist.nunique())
    assert report["n_pairs"] == len(cross_tier_pairs(tiers)[0])
    for split in ("train", "test"):
        assert report["pairwise_accuracy_by_split"][split] == accuracy_by_pairs(evaluated["scores"][split],
                                                                                evaluated["rows"][split].tier.to_numpy())
    figures = sorted(p.name for p in (run / "figures").iterdir())
    assert figures == ["extremes_val.png", "reliability_val.png", "score_by_tier_val.png", "tier_pair_accuracy_val.png"]


def test_evaluate_interval_resamples_artists_with_the_configured_seed(evaluated):
    report = json.loads((evaluated["run"] / "eval_val.json").read_text())
    csv = pd.read_csv(evaluated["run"] / "scores_val.csv", dtype=str, keep_default_na=False)
    expected = artist_bootstrap_ci(csv.score.astype(float).to_numpy(), csv.tier.to_numpy(), csv.artist.to_numpy(),
                                   resamples=200, seed=SEED)
    assert report["ci95"] == pytest.approx(list(expected), abs=1e-6)
    other_seed = artist_bootstrap_ci(csv.score.astype(float).to_numpy(), csv.tier.to_numpy(), csv.artist.to_numpy(),
                                     resamples=200, seed=SEED + 1)
    assert other_seed != expected  # so the seed is visible in the interval
    assert report["bootstrap"]["resamples"] == 200 and report["bootstrap"]["seed"] == SEED


def test_req_u_003_n_004_evaluate_is_tracked_in_its_own_offline_wandb_run(evaluated):
    runs = sorted((evaluated["run"] / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # train.py's and evaluate.py's
    payloads = [b"".join(p.read_bytes() for p in run.glob("run-*.wandb")) for run in runs]
    evaluation = [p for p in payloads if b"evaluate" in p and b"val/pairwise_acc" in p and b"ci95" in p]
    assert len(evaluation) == 1


def test_evaluate_refuses_a_split_other_than_the_trained_one_and_writes_nothing(start, tmp_path):
    out = Path(shutil.copytree(start["run"], tmp_path / "run", ignore=shutil.ignore_patterns("wandb", "eval_*",
                                                                                            "scores_*", "figures")))
    recorded = frame(load_from_disk(str(out / "image_table")))
    moved = recorded.index[recorded.split == "test"][0]
    recorded.loc[moved, "split"] = "train"  # as if the head had trained on this image
    shutil.rmtree(out / "image_table")
    to_dataset(recorded, MANIFEST_COLUMNS).save_to_disk(str(out / "image_table"))
    import evaluate  # a refusal, in this process: it comes before any tracking or writing

    with pytest.raises(SystemExit) as refused:
        evaluate.main([*start["args"], "--output_dir", str(out)])
    last = str(refused.value)
    assert last.startswith("error: ") and "\n" not in last
    assert "image_table" in last and recorded.image_id[moved] in last
    assert not list(out.glob("eval_*")) and not list(out.glob("scores_*")) and not (out / "figures").exists()


def hint_of(score: float, cuts: list[float]) -> str:
    return next((tier for tier, cut in zip("SAB", cuts) if score >= cut), "C")


def test_predict_tier_hint_and_probability_come_from_the_run_s_calibration(start, tmp_path):
    out = Path(shutil.copytree(start["run"], tmp_path / "run", ignore=shutil.ignore_patterns("wandb")))
    _, paths = split_rows(start["run"], start["data"], "val")
    cuts = [float(q) for q in np.quantile(start["scores"]["val"], [0.75, 0.5, 0.25])]
    calibration = json.loads((out / "calibration.json").read_text())
    calibration |= dict(slope=3.0, tier_cuts=[dict(above=upper, below=lower, threshold=cut)
                                              for (upper, lower), cut in zip(("SA", "AB", "BC"), cuts)])
    (out / "calibration.json").write_text(json.dumps(calibration))
    args = [*start["args"], "--output_dir", out, "--torch"]
    run_script("predict.py", *args, *paths, "--out", tmp_path / "scores.csv")
    table = pd.read_csv(tmp_path / "scores.csv")
    assert sorted(table.file_name) == sorted(paths)
    assert list(table.tier_hint) == [hint_of(s, cuts) for s in table.score]
    assert set(table.tier_hint) == set("SABC")
    first, second = table.iloc[0], table.iloc[-1]
    compared = run_script("predict.py", *args, "--compare", first.file_name, second.file_name).stdout
    expected = 1 / (1 + math.exp(-3.0 * (first.score - second.score)))
    assert f"P(A better than B) = {expected:.4f}" in compared


def test_req_o_001_accumulated_gradient_is_the_mean_of_the_micro_batch_gradients(tmp_path, dataset, tiny_backbone):
    """Two micro-batches of 40 accumulated: one step with the mean of the two gradients that steps of
    one batch each see (same seed, same batches; learning rate 0, so both are taken at the start)."""
    records = {}
    for k in (1, 2):
        args = start_args(tmp_path, dataset, tiny_backbone, batch_size=40, grad_accum_steps=k,
                          output_dir=tmp_path / f"accumulate{k}")
        records[k] = recorded_train(args, tmp_path / f"accumulate{k}.pt")["steps"]
    assert len(records[1]) == 2 and len(records[2]) == 1  # 96 images, about 77 in training: 2 batches of 40
    for first, second, accumulated in zip(*records[1], records[2][0]):
        torch.testing.assert_close(accumulated, (first + second) / 2, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("target", ["train", "val"])
def test_req_n_001_train_py_refuses_a_split_that_leaks_test_images(tmp_path, dataset, tiny_backbone, target,
                                                                   monkeypatch):
    """One test image's split is turned into `target` as the split is made: the guards must stop training.
    (In this process: the refusal comes before any tracking, and a script's start costs seconds of imports.)"""
    import data
    import train

    def leaking_split(*args, **kwargs):
        split = split_by_artist(*args, **kwargs).copy()
        split[split.index[split == "test"][0]] = target
        return split

    monkeypatch.setattr(data, "split_by_artist", leaking_split)
    with pytest.raises(SystemExit) as refused:
        train.main(start_args(tmp_path, dataset, tiny_backbone))
    assert str(refused.value).startswith("error: test data would reach training or validation")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_feature_cache_is_not_reused_after_new_backbone_weights_of_the_same_shape(tmp_path, dataset, tiny_backbone):
    backbone = tmp_path / "backbone"
    config = Dinov2Config.from_pretrained(str(tiny_backbone))
    for seed, name in ((1, "before"), (2, "after")):
        torch.manual_seed(seed)
        Dinov2Model(config).save_pretrained(backbone)  # same folder, same shapes, other weights
        run_script("train.py", *start_args(tmp_path, dataset, backbone, output_dir=tmp_path / name))
    rows, paths = split_rows(tmp_path / "after", dataset, "val")
    tiers = rows.tier.to_numpy()
    with torch.no_grad():
        expected = spec_loss(seeded_head()(cls_features(backbone, paths)), tiers, MARGIN).item()
    ((before,), (after,)) = train_log(tmp_path / "before"), train_log(tmp_path / "after")
    assert after["val/loss"] == pytest.approx(expected, rel=1e-4) and before["val/loss"] != after["val/loss"]


def test_req_o_005_top_k_keeps_the_best_checkpoints_and_the_best_is_the_first_of_equals(tmp_path, dataset,
                                                                                      tiny_backbone):
    accuracies = [0.9, 0.5, 0.9, 0.6, 0.8, 0.7]
    args = tiny_args(tmp_path, dataset, tiny_backbone, epochs=6, top_k=3, patience=100)
    code = SCRIPTED_VAL_ACCURACY.format(args=[str(a) for a in args], root=str(ROOT), accuracies=accuracies)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert [r["val/pairwise_acc"] for r in train_log(run)] == accuracies
    assert sorted(p.name for p in (run / "checkpoints" / "top").iterdir()) == ["epoch0000", "epoch0002", "epoch0004"]
    assert json.loads((run / "checkpoints" / "best" / "head.json").read_text())["epoch"] == 0
    # The final figures and the calibration come from that best checkpoint, not from the last epoch's head.
    head, _ = read_head(run / "checkpoints" / "best")
    rows, paths = split_rows(run, dataset, "val")
    with torch.no_grad():
        scores = head(cls_features(tiny_backbone, paths)).numpy()
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["best_epoch"] == 0 and final["val/pairwise_acc"] == accuracy_by_pairs(scores, rows.tier.to_numpy())
    medians = json.loads((run / "calibration.json").read_text())["tier_medians"]
    assert medians == pytest.approx({t: float(np.median(scores[rows.tier == t])) for t in "SABC"}, abs=1e-5)
