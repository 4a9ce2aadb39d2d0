"""crossval.py: the test split kept out, finished cells reused, the chosen setting trained; one sweep per folder."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SPLIT, image_frame, run_script, tiny_args, write_dataset

from data import DataError, image_table
from pipeline import selection
from pipeline.config import Config
from pipeline.runs import RunLock
from pipeline.tables import frame


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
