"""crossval.py: the test split kept out, finished cells reused, the chosen setting trained; one sweep per folder."""

import copy
import itertools
import json
import math
import os
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from conftest import SPLIT, artists_of_one_main_tier, image_frame, run_script, tiny_args, write_dataset

import model
from data import DataError, image_table, split_rows
from model import HeadTraining
from pipeline import selection
from pipeline.config import Config
from pipeline.runs import RunLock, manifest_digest
from pipeline.tables import TIER_RANK as RANK
from pipeline.tables import frame, to_dataset


def test_req_n_001_a_test_row_never_reaches_a_fold(dataset):
    import crossval

    table, _ = image_table(dataset, **SPLIT)
    rows = table  # test rows included: the guard must stop them
    fold_of = selection.crossval_folds(frame(rows), folds=3, seed=0)
    with pytest.raises(DataError, match="test data would reach training or validation"):
        crossval.run_cell(Config(epochs=1), rows=rows, table=table, features=torch.zeros(len(rows), 8),
                          fold_of=fold_of, fold=0, folds=3)


def crossval_run(base: Path, data: Path, backbone: Path, grid: Path, name: str):
    args = tiny_args(base, data, backbone, output_dir=base / name, cache_dir=base / "cache", epochs=4, patience=2)
    return run_script("crossval.py", *args, "--grid", grid, "--folds", "3"), base / name / "crossval"


@pytest.mark.slow
def test_crossval_end_to_end_resumes_repeats_and_its_choice_trains(tmp_path, tiny_backbone):
    from pipeline.features import read_cache

    data = write_dataset(tmp_path / "data", artists=15, per_artist=6)
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"loss": ["margin", "logistic"]}))
    first, out = crossval_run(tmp_path, data, tiny_backbone, grid, "first")
    assert "0 cell(s) already done" in first.stdout and first.stdout.count("| fold ") == 6
    results = pd.read_csv(out / "results.csv")
    assert list(results.setting) == ["loss=margin", "loss=logistic"]
    assert results.folds.eq(3).all() and results.accuracy_mean.between(0, 1).all()
    assert results.accuracy_sd.gt(0).all() and np.isfinite(results.kendall_tau_mean).all()
    assert (out / "accuracy_by_setting.png").stat().st_size > 1000
    assert json.loads((out / "config.json").read_text())["epochs"] == 4
    assert len(list((out / "wandb").glob("offline-run-*"))) == 2

    # REQ-N-001: the feature cache holds exactly the train+val images; no test image went through the backbone.
    table, _ = image_frame(data, val_fraction=0.1, test_fraction=0.1, seed=42)
    (cache,) = (tmp_path / "cache").glob("features-*")
    index, _, _, problem = read_cache(cache, json.loads((cache / "cache.json").read_text())["key"])
    cached = set(index)
    assert problem is None
    assert cached == set(table.sha256[table.split != "test"])
    assert not cached & set(table.sha256[table.split == "test"])

    beside = RunLock(tmp_path / "first", command="train.py")  # a train.py of the same OUTPUT_DIR does not block it
    beside.acquire()
    try:
        again, _ = crossval_run(tmp_path, data, tiny_backbone, grid, "first")  # finished cells are not rerun
    finally:
        beside.release()
    assert "6 cell(s) already done" in again.stdout and "| fold " not in again.stdout
    columns = ["setting", "accuracy_mean", "accuracy_sd", "kendall_tau_mean", "kendall_tau_sd"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv")[columns], results[columns])
    _, other = crossval_run(tmp_path, data, tiny_backbone, grid, "second")  # same seed, fresh folder
    pd.testing.assert_frame_equal(pd.read_csv(other / "results.csv")[columns], results[columns])

    best = json.loads((out / "best.json").read_text())
    chosen = results.loc[results.accuracy_mean.idxmax()]
    assert best["loss"] == chosen.loss and best["output_dir"] == str(tmp_path / "first" / "selected")
    run_script("train.py", "--config", out / "best.json")
    trained = Path(best["output_dir"])
    assert json.loads((trained / "config.json").read_text())["loss"] == chosen.loss
    assert json.loads((trained / "final_metrics.json").read_text())["test/pairs"] > 0


def test_a_second_crossval_of_the_same_folder_is_refused_naming_the_holder_and_writes_nothing(tmp_path,
                                                                                               tiny_backbone):
    data = write_dataset(tmp_path / "data", artists=15, per_artist=6)
    lock = RunLock(tmp_path / "run" / "crossval", command="crossval.py --grid grid.json")
    lock.acquire()
    try:
        result = run_script("crossval.py", *tiny_args(tmp_path, data, tiny_backbone), check=False)
    finally:
        lock.release()
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert last.startswith("error: ") and "in use by crossval.py --grid grid.json" in last
    assert f"pid {os.getpid()}" in last
    assert [p.name for p in (tmp_path / "run" / "crossval").iterdir()] == [".lock"]
    assert not (tmp_path / "cache").exists()  # refused before any image was read


# ---------------------------------------------------------------- a cell, the sweep and the report, by hand

def crossval_table(artists: int = 24) -> tuple:
    """An image table of `artists` artists (the last two in the test split) and its train+val rows, with no
    image files: a cell reads only features, tiers and artists."""
    records = artists_of_one_main_tier()
    records = records[records.artist.isin(records.artist.unique()[:artists])].reset_index(drop=True)
    test_artists = set(records.artist.unique()[-2:])
    records = records.assign(file_name=records.image_id + ".png", path=records.image_id + ".png",
                             row=np.arange(len(records)) + 2, sha256=records.image_id.map(lambda s: s * 4),
                             split=np.where(records.artist.isin(test_artists), "test", "train"))
    table = to_dataset(records)
    return table, split_rows(table, "train", "val")


class RowScorer(torch.nn.Module):
    """A 'head' that scores each row by its feature column 1 (column 0 is the row's index)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1]

    def thresholds(self) -> None:  # not a tier model, as RankingHead(tier_model=False)
        return None


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b by counting every pair: (concordant - discordant) / sqrt(untied in x * untied in y)."""
    concordant = discordant = untied_x = untied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        concordant, discordant = concordant + (dx * dy > 0), discordant + (dx * dy < 0)
        untied_x, untied_y = untied_x + (dx != 0), untied_y + (dy != 0)
    return (concordant - discordant) / math.sqrt(untied_x * untied_y)


def test_a_cell_trains_on_the_other_folds_stops_on_the_next_fold_and_scores_only_the_held_out_one(monkeypatch):
    import crossval

    table, rows = crossval_table()
    folds, fold = 4, 3  # the last fold: its stopping fold wraps round to fold 0
    fold_of = selection.crossval_folds(frame(rows), folds=folds, seed=0)
    tiers = frame(rows).tier.to_numpy()
    rng = np.random.default_rng(0)
    signal = np.array([RANK[t] for t in tiers]) + rng.normal(0, 1.5, len(tiers))
    features = torch.tensor(np.stack([np.arange(len(tiers)), signal], axis=1), dtype=torch.float32)
    seen = {}

    def recording_fit_head(cfg, fit_x, fit_tiers, stop_x, stop_tiers, **_):
        seen.update(fit=set(fit_x[:, 0].int().tolist()), stop=set(stop_x[:, 0].int().tolist()))
        assert list(fit_tiers) == list(tiers[fit_x[:, 0].int().numpy()])
        assert list(stop_tiers) == list(tiers[stop_x[:, 0].int().numpy()])
        return RowScorer(), 2, 5

    monkeypatch.setattr(model, "fit_head", recording_fit_head)
    result = crossval.run_cell(Config(), rows=rows, table=table, features=features, fold_of=fold_of, fold=fold,
                               folds=folds)
    held, stop = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of == 0)
    assert seen["stop"] == set(stop.tolist())
    assert seen["fit"] == set(range(len(tiers))) - set(held.tolist()) - set(stop.tolist())
    ranks = np.array([RANK[t] for t in tiers[held]])
    higher = ranks[:, None] > ranks[None, :]
    assert result["accuracy"] == float((signal[held][:, None] > signal[held][None, :])[higher].mean())
    assert result["pairs"] == int(higher.sum())
    assert result["kendall_tau"] == pytest.approx(kendall_tau_b(signal[held], ranks), abs=1e-12)
    assert result["images"] == {"fit": len(seen["fit"]), "stop": len(stop), "held": len(held)}
    assert result["artists_held_out"] == len(set(frame(rows).artist[held]))
    assert (result["best_epoch"], result["epochs_run"]) == (2, 5)


def test_a_cell_s_head_is_the_best_epoch_of_train_py_s_own_procedure():
    cfg = Config(epochs=30, patience=4, min_lr=0.0, batch_size=16, lr=0.05, hidden_dim=8, proj_dim=4, dropout=0.0)
    rng = np.random.default_rng(1)
    tiers = rng.choice(np.array(list("SABC")), 120)
    x = torch.from_numpy((np.array([RANK[t] for t in tiers])[:, None] + rng.normal(0, 2.0, (120, 8)))
                         .astype(np.float32))
    head, best_epoch, epochs_run = model.fit_head(cfg, x[:80], tiers[:80], x[80:], tiers[80:])

    # The same procedure run here, every epoch's head kept: the best is the first of the highest accuracy.
    training, records, states = HeadTraining(cfg, Accelerator(cpu=True), input_dim=8), [], []
    training.run(x[:80], tiers[:80], x[80:], tiers[80:], after_epoch=lambda record, _: (
        records.append(record), states.append(copy.deepcopy(training.unwrapped_head().state_dict()))))
    accuracies = [r["val/pairwise_acc"] for r in records]
    expected = accuracies.index(max(accuracies))
    assert epochs_run == len(records) < cfg.epochs and best_epoch == expected < len(records) - 1
    for name, value in head.state_dict().items():
        assert torch.equal(value, states[expected][name]), name


def test_every_cell_of_a_sweep_trains_its_own_setting_on_its_own_feature_kind(monkeypatch, tmp_path):
    import crossval

    table, rows = crossval_table()
    features = {"cls": torch.zeros(len(rows), 4), "cls_mean": torch.zeros(len(rows), 8)}
    cells = []

    def recording_cell(cfg, *, features, fold, **_):
        cells.append((cfg, features.shape[1], fold))
        return dict(fold=fold, accuracy=0.5 + 0.1 * fold + cfg.lr, kendall_tau=0.1, pairs=1, best_epoch=0,
                    epochs_run=1, images={}, artists_held_out=1, seconds=0.0)

    class Run:
        summary = {}
        log = finish = staticmethod(lambda *a, **k: None)

    monkeypatch.setattr(crossval, "run_cell", recording_cell)
    monkeypatch.setattr(crossval, "track_setting", lambda *a, **k: Run())
    cfg = Config(feature="cls", seed=0)
    settings = selection.expand_grid({"feature": ["cls", "cls_mean"], "lr": [0.001, 0.01]})
    results = crossval.sweep(cfg, settings, folds=3, rows=rows, table=table, features=features,
                             source=dict(data="d"), out=tmp_path)
    assert [(c.feature, c.lr, dim, fold) for c, dim, fold in cells] == [
        (s["feature"], s["lr"], 4 if s["feature"] == "cls" else 8, fold) for s in settings for fold in range(3)]
    assert all(replace(c, feature="cls", lr=cfg.lr) == cfg for c, _, _ in cells)  # nothing else changed
    assert [[r["accuracy"] for r in row] for row in results] == [
        [0.5 + 0.1 * fold + s["lr"] for fold in range(3)] for s in settings]


def fold_results(accuracy: list[float], tau: list[float]) -> list[dict]:
    return [dict(accuracy=a, kendall_tau=t, seconds=1.0) for a, t in zip(accuracy, tau)]


def test_the_report_is_the_mean_and_sample_sd_over_folds_and_the_best_is_chosen_by_accuracy():
    settings = [{"lr": 0.1}, {"lr": 0.01}, {"lr": 0.001}]
    accuracy = [[0.60, 0.70, 0.65, 0.71], [0.70, 0.74, 0.66, 0.72], [0.50, 0.90, 0.50, 0.90]]
    tau = [[0.9, 0.8, 0.9, 0.8], [0.1, 0.2, 0.1, 0.3], [0.2, 0.2, 0.2, 0.2]]  # the best tau is not the best accuracy
    table = selection.summarize(settings, [fold_results(a, t) for a, t in zip(accuracy, tau)])
    for i in range(3):
        assert table.accuracy_mean[i] == pytest.approx(statistics.mean(accuracy[i]))
        assert table.accuracy_sd[i] == pytest.approx(statistics.stdev(accuracy[i]))  # n - 1: 4 folds are a sample
        assert table.kendall_tau_mean[i] == pytest.approx(statistics.mean(tau[i]))
        assert table.kendall_tau_sd[i] == pytest.approx(statistics.stdev(tau[i]))
    # means 0.665, 0.705, 0.70; setting 1 is the best
    assert list(table.best) == [False, True, False]


def test_within_one_standard_error_is_sd_over_the_square_root_of_the_folds():
    # best: 9 folds of mean 0.70 and sd 0.09, so SE = 0.03; 0.675 is within it, 0.66 is not;
    # with SE = sd (no root) 0.66 would be within, with SE = sd / 9 (no root) 0.675 would not.
    best = [0.70 + 0.09 * z for z in np.array([-1, 1, -1, 1, -1, 1, -1, 1, 0])]
    assert statistics.stdev(best) == pytest.approx(0.09)
    near, far = [0.675] * 8 + [0.676], [0.66] * 8 + [0.661]
    table = selection.summarize([{"lr": 1.0}, {"lr": 2.0}, {"lr": 3.0}],
                                [fold_results(r, [0.0] * 9) for r in (near, best, far)])
    assert list(table.best) == [False, True, False]
    assert list(table.within_1se) == [True, True, False]


def test_a_cell_s_data_manifest_changes_with_a_tier_an_artist_or_an_image_and_not_with_row_order():
    rows = artists_of_one_main_tier().assign(sha256=lambda d: d.image_id.map(lambda s: s * 4), file_name="",
                                            split="train")
    manifest = manifest_digest(rows)
    assert manifest_digest(rows.iloc[::-1]) == manifest
    changed = [rows.assign(tier=np.where(rows.index == 5, "S" if rows.tier[5] != "S" else "A", rows.tier)),
               rows.assign(artist=np.where(rows.index == 5, "someone else", rows.artist)),
               rows.assign(sha256=np.where(rows.index == 5, "f" * 64, rows.sha256)),
               rows.drop(index=5)]
    assert len({manifest, *map(manifest_digest, changed)}) == 1 + len(changed)
