"""pipeline/selection.py: folds for cross-validation, the grid over the searchable keys, the cells' keys."""

import json
from dataclasses import replace

import pytest
from conftest import artists_of_one_main_tier

from pipeline import selection
from pipeline.config import Config


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
        selection.crossval_folds(rows, folds=folds, seed=0)


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
    ({"loss": ["hinge"]}, "'loss' must be one of"),
    ({"epochs": [2.5]}, "'epochs' must be int"),
    ({"dropout": [True]}, "'dropout' must be float"),
    ({"lr": [0.0]}, "'lr' must be > 0"),  # a grid value passes a config file's checks
    ({"dropout": [1.0]}, "'dropout' must be >= 0 and < 1"),
    ({"lr": 0.001}, "list of distinct values"),
    ({"lr": []}, "list of distinct values"),
    ({"lr": [0.1, 0.1]}, "list of distinct values"),
])
def test_bad_grids_are_refused_naming_the_key(grid, message):
    with pytest.raises(ValueError, match=message):
        selection.expand_grid(grid)


def key(cfg, **where) -> str:
    return selection.cell_key(selection.cell_origin(cfg, **where))


def test_cell_key_changes_with_the_setting_fold_and_data_and_not_with_run_folders():
    cfg, features = Config(), dict(backbone="b", image_size=224)
    first = key(cfg, fold=0, folds=5, data="d1", features=features)
    assert first == key(replace(cfg, output_dir="elsewhere", wandb_mode="offline"), fold=0, folds=5, data="d1",
                        features=features)
    others = [key(replace(cfg, lr=0.1), fold=0, folds=5, data="d1", features=features),
              key(replace(cfg, seed=1), fold=0, folds=5, data="d1", features=features),
              key(cfg, fold=1, folds=5, data="d1", features=features),
              key(cfg, fold=0, folds=4, data="d1", features=features),
              key(cfg, fold=0, folds=5, data="d2", features=features),
              key(cfg, fold=0, folds=5, data="d1", features=dict(features, backbone="c"))]
    assert len({first, *others}) == 1 + len(others)


def test_cell_key_changes_with_the_preprocessing_version(monkeypatch):
    cfg, features = Config(), dict(backbone="b", image_size=224)
    before = key(cfg, fold=0, folds=5, data="d1", features=features)
    monkeypatch.setattr(selection, "PREPROCESSING_VERSION", selection.PREPROCESSING_VERSION + "-next")
    assert key(cfg, fold=0, folds=5, data="d1", features=features) != before


def test_a_cell_is_reused_only_when_it_records_the_data_preprocessing_and_setting_asked_for(tmp_path):
    cfg, features = Config(), dict(backbone="b", image_size=224)
    origin = selection.cell_origin(cfg, fold=0, folds=5, data="d1", features=features)
    result = dict(setting={}, fold=0, accuracy=0.75, kendall_tau=0.5)
    selection.save_cell(tmp_path, origin, result)
    (saved,) = tmp_path.iterdir()
    assert json.loads(saved.read_text())["made_from"] == json.loads(json.dumps(origin))
    assert selection.load_cell(tmp_path, origin) == {**result, "made_from": origin}
    # A file under this cell's name that records other data, preprocessing or setting (a copy from another
    # folder, an older version's cell) is computed again, never reused.
    for changed in (dict(origin, manifest_sha256="d2"), dict(origin, preprocessing="center-crop-224"),
                    dict(origin, setting=dict(origin["setting"], lr=0.5)), {}):
        saved.write_text(json.dumps({**result, "made_from": changed}))
        assert selection.load_cell(tmp_path, origin) is None, changed
    saved.write_text("{not json")
    assert selection.load_cell(tmp_path, origin) is None
