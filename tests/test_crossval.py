"""Model selection: artist folds, the grid, the pair losses, the test split kept out, resume, the selected config."""

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import run_script, tiny_args, write_dataset

import selection
from config import Config, parse_config
from data import DataError, cross_tier_pairs, load_table
from metrics import in_batch_pair_loss, pair_margin_loss, tier_ranks
from runfolder import RunLock


def artists_of_one_main_tier(seed: int = 0) -> pd.DataFrame:
    """40 artists, each with 6 works of one main tier and 2 of any tier: folds cut without regard to
    tier would give some folds far more S than others."""
    rng = np.random.default_rng(seed)
    records = []
    for a in range(40):
        main = "SABC"[a % 4]
        for k in range(8):
            tier = main if k < 6 else "SABC"[rng.integers(4)]
            records.append(dict(image_id=f"{main}{a:02d}_{k}", tier=tier, artist=f"{main}-artist{a:02d}"))
    return pd.DataFrame(records)


def test_folds_are_artist_disjoint_and_tier_stratified():
    rows = artists_of_one_main_tier()
    fold_of = selection.artist_folds(rows, folds=5, seed=42)
    assert sorted(set(fold_of)) == [0, 1, 2, 3, 4]
    assert rows.assign(fold=fold_of).groupby("artist").fold.nunique().max() == 1  # an artist in one fold only
    assert np.bincount(fold_of).min() >= 0.8 * len(rows) / 5
    overall = rows.tier.value_counts(normalize=True)
    for fold in range(5):
        share = rows.tier[fold_of == fold].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (share - overall).abs().max() < 0.04, (fold, share.to_dict())  # unstratified folds: 0.06 to 0.36


def test_folds_follow_the_content_not_the_row_order():
    rows = artists_of_one_main_tier()
    shuffled = rows.sample(frac=1, random_state=1).reset_index(drop=True)
    first = dict(zip(rows.image_id, selection.artist_folds(rows, folds=5, seed=7)))
    second = dict(zip(shuffled.image_id, selection.artist_folds(shuffled, folds=5, seed=7)))
    assert first == second
    assert first != dict(zip(rows.image_id, selection.artist_folds(rows, folds=5, seed=8)))


@pytest.mark.parametrize("folds, keep, message", [
    (2, None, "at least 3"),
    (5, 4, "at least 5 artists"),
    (3, 3, "no cross-tier pair"),
])
def test_folds_that_cannot_be_scored_are_refused(folds, keep, message):
    rows = artists_of_one_main_tier()
    if keep:  # the first `keep` artists, each of one tier only: with 3 folds, a fold is one artist, one tier
        rows = rows[rows.artist.isin(rows.artist.unique()[:keep])]
        rows = rows.assign(tier=rows.artist.str[0])
    with pytest.raises(ValueError, match=message):
        selection.artist_folds(rows, folds=folds, seed=0)


def test_grid_expands_to_every_combination_in_order():
    settings = selection.expand_grid({"loss": ["margin", "logistic"], "lr": [1, 0.001], "feature": ["cls"]})
    assert settings == [{"loss": "margin", "lr": 1.0, "feature": "cls"},
                        {"loss": "margin", "lr": 0.001, "feature": "cls"},
                        {"loss": "logistic", "lr": 1.0, "feature": "cls"},
                        {"loss": "logistic", "lr": 0.001, "feature": "cls"}]
    assert isinstance(settings[0]["lr"], float)  # JSON's 1 is the float the Config expects


@pytest.mark.parametrize("grid, message", [
    ({"seed": [1, 2]}, "'seed' cannot be swept"),
    ({"image_size": [224]}, "'image_size' cannot be swept"),
    ({"loss": ["hinge"]}, "'loss' takes"),
    ({"epochs": [2.5]}, "'epochs' takes"),
    ({"dropout": [True]}, "'dropout' takes"),
    ({"lr": 0.001}, "list of distinct values"),
    ({"lr": []}, "list of distinct values"),
    ({"lr": [0.1, 0.1]}, "list of distinct values"),
])
def test_bad_grids_are_refused_naming_the_key(grid, message):
    with pytest.raises(ValueError, match=message):
        selection.expand_grid(grid)


def test_loss_key_is_a_config_choice(tmp_path):
    config = tmp_path / "c.json"
    config.write_text("{}")
    cfg, _ = parse_config("", ["--config", str(config), "--loss", "logistic"])
    assert cfg.loss == "logistic" and Config().loss == "margin"
    with pytest.raises(SystemExit):
        parse_config("", ["--config", str(config), "--loss", "hinge"])


def test_logistic_loss_is_ranknet_over_every_cross_tier_pair():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(40, generator=generator, dtype=torch.float64) * 3
    tiers = np.array(list("SABC"))[torch.randint(0, 4, (40,), generator=generator).numpy()]
    a, b, label = cross_tier_pairs(tiers)
    better = torch.from_numpy(np.where(label > 0, a, b))
    worse = torch.from_numpy(np.where(label > 0, b, a))
    # RankNet: -log P(better above worse), P = sigmoid(score gap)
    expected = -torch.log(torch.sigmoid(scores[better] - scores[worse])).mean()
    ranks = torch.from_numpy(tier_ranks(tiers))
    assert torch.allclose(in_batch_pair_loss(scores, ranks, 1.0, "logistic"), expected)
    assert pair_margin_loss(scores, ranks, 1.0, block=7, loss="logistic") == pytest.approx(float(expected))
    margin = F.margin_ranking_loss(scores[better], scores[worse], torch.ones(len(better), dtype=torch.float64),
                                   margin=0.5)
    assert torch.allclose(in_batch_pair_loss(scores, ranks, 0.5), margin)
    assert pair_margin_loss(scores, ranks, 0.5, block=7) == pytest.approx(float(margin))


def test_cell_key_changes_with_the_setting_fold_and_data_and_not_with_run_folders():
    cfg, features = Config(), dict(backbone="b", image_size=224)
    key = selection.cell_key(cfg, fold=0, folds=5, data="d1", features=features)
    assert key == selection.cell_key(replace(cfg, output_dir="elsewhere", wandb_mode="offline"), fold=0, folds=5,
                                     data="d1", features=features)
    others = [selection.cell_key(replace(cfg, lr=0.1), fold=0, folds=5, data="d1", features=features),
              selection.cell_key(replace(cfg, seed=1), fold=0, folds=5, data="d1", features=features),
              selection.cell_key(cfg, fold=1, folds=5, data="d1", features=features),
              selection.cell_key(cfg, fold=0, folds=4, data="d1", features=features),
              selection.cell_key(cfg, fold=0, folds=5, data="d2", features=features),
              selection.cell_key(cfg, fold=0, folds=5, data="d1", features=dict(features, backbone="c"))]
    assert len({key, *others}) == 1 + len(others)


def test_req_n_001_a_test_row_never_reaches_a_fold(dataset):
    import crossval

    table, _ = load_table(dataset, val_fraction=0.1, test_fraction=0.1, seed=42)
    rows = table.reset_index(drop=True)  # test rows included: the guard must stop them
    fold_of = selection.artist_folds(rows, folds=3, seed=0)
    with pytest.raises(DataError, match="REQ-N-001"):
        crossval.run_cell(Config(epochs=1), rows=rows, table=table, features=torch.zeros(len(rows), 8),
                          fold_of=fold_of, fold=0, folds=3)


def crossval_run(base: Path, data: Path, backbone: Path, grid: Path, name: str):
    args = tiny_args(base, data, backbone, output_dir=base / name, cache_dir=base / "cache", epochs=4, patience=2)
    return run_script("crossval.py", *args, "--grid", grid, "--folds", "3"), base / name / "crossval"


@pytest.mark.slow
def test_crossval_end_to_end_resumes_repeats_and_its_choice_trains(tmp_path, tiny_backbone):
    from features import read_cache

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
    table, _ = load_table(data, val_fraction=0.1, test_fraction=0.1, seed=42)
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
