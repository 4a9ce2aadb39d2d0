"""The unfamiliar-image flag: novelty against the training features, its threshold fitted on validation."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import copy_run, run_script, val_images
from PIL import Image

import artrank
import predict
from pipeline.errors import ArtrankError
from pipeline.novelty import (
    NOVELTY_REFERENCE,
    fit_novelty,
    novelty_of,
    novelty_report,
    read_reference,
    unfamiliar,
    write_reference,
)
from pipeline.ranker import NearestTraining
from pipeline.tier_sets import conformal_threshold


def clusters(n: int, rng: np.random.Generator, *, dims: int = 16) -> torch.Tensor:
    """Features around four directions: what the training, validation and test drawings look like."""
    centres = np.eye(dims)[:4] * 3
    return torch.tensor(centres[rng.integers(4, size=n)] + rng.normal(0, 0.5, (n, dims)), dtype=torch.float32)


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_images_like_the_validation_ones_are_flagged_at_most_alpha_of_the_time_and_unlike_ones_always(alpha):
    rng = np.random.default_rng(0)
    reference, flagged = NearestTraining.fit(clusters(300, rng)), []
    for _ in range(40):
        fitted = fit_novelty(reference, clusters(200, rng), alpha=alpha, reference_sha256="")
        flagged.append(novelty_report(novelty_of(reference, clusters(500, rng)), fitted)["flagged_share"])
    # split conformal: the flag rate over draws of validation and test sets is at most alpha (and close to it)
    assert alpha - 0.02 <= np.mean(flagged) <= alpha + 0.01
    unlike = torch.tensor(np.eye(16)[10] * 6 + rng.normal(0, 0.3, (50, 16)), dtype=torch.float32)  # a fifth direction
    assert all(unfamiliar(v, fitted) for v in novelty_of(reference, unlike))
    train = clusters(20, rng)
    assert novelty_of(NearestTraining.fit(train), train) == pytest.approx(np.zeros(20), abs=1e-6)  # training images


def test_the_threshold_is_the_conformal_rank_of_the_validation_novelty_and_none_when_too_few():
    rng = np.random.default_rng(1)
    reference, val = NearestTraining.fit(clusters(50, rng)), clusters(19, rng)
    fitted = fit_novelty(reference, val, alpha=0.1, reference_sha256="x")
    assert (fitted["rank"], fitted["n"]) == (18, 19)  # ceil(20 x 0.9)
    assert fitted["threshold"] == pytest.approx(np.sort(novelty_of(reference, val))[17])
    few = fit_novelty(reference, val[:5], alpha=0.1, reference_sha256="x")
    assert few["threshold"] is None and unfamiliar(5.0, few) is None
    assert novelty_report(np.array([0.1, 9.0]), few)["flagged_share"] is None
    assert conformal_threshold([3.0, 1.0, 2.0], 0.5) == (2.0, 2)


def test_a_reference_that_is_not_the_thresholds_is_refused_naming_the_file(tmp_path):
    features = clusters(10, np.random.default_rng(2))
    digest = write_reference(tmp_path, NearestTraining.fit(features))
    assert digest == hashlib.sha256((tmp_path / NOVELTY_REFERENCE).read_bytes()).hexdigest()
    fitted = {"reference_sha256": digest}
    np.testing.assert_allclose(novelty_of(read_reference(tmp_path, fitted), features), 0, atol=1e-6)
    assert read_reference(tmp_path, None) is None
    with pytest.raises(ArtrankError, match=f"{tmp_path / NOVELTY_REFERENCE}: not the training features"):
        read_reference(tmp_path, {"reference_sha256": "0" * 64})
    (tmp_path / NOVELTY_REFERENCE).unlink()
    with pytest.raises(ArtrankError, match=f"{tmp_path / NOVELTY_REFERENCE}: unreadable"):
        read_reference(tmp_path, fitted)


def unlike_drawing(path) -> str:
    """Nothing like the test data's grey noise: a smooth gradient of saturated colours."""
    colours = np.zeros((40, 48, 3), np.uint8)
    colours[..., 0], colours[..., 1], colours[..., 2] = np.linspace(0, 255, 48)[None, :], np.linspace(255, 0, 40)[
        :, None], 128
    Image.fromarray(colours).save(path)
    return str(path)


@pytest.mark.slow
def test_an_unlike_drawing_is_flagged_by_the_checkpoint_and_the_export_and_predict_warns(exported, tmp_path,
                                                                                          capsys):
    from data import load_images, split_rows
    from model import features_of, load_backbone
    from pipeline.cli import make_accelerator
    from pipeline.config import load_config

    out, odd = exported["out"], unlike_drawing(tmp_path / "colours.png")
    fitted = json.loads((out / "calibration.json").read_text())["novelty"]
    # the threshold is the conformal rank of the validation images' novelty, never of the test or training ones
    cfg = load_config(out / "config.json", output_dir=str(out), random_backbone="")
    accelerator = make_accelerator(cfg)
    table = load_images(cfg, accelerator)
    train, val, test = features_of(cfg, [split_rows(table, s) for s in ("train", "val", "test")], accelerator,
                                   backbone=load_backbone(cfg, accelerator))
    nearest = NearestTraining.fit(train)
    assert fitted["threshold"] == pytest.approx(conformal_threshold(novelty_of(nearest, val), 0.2)[0], abs=1e-6)
    assert (fitted["n"], fitted["training_images"]) == (len(val), len(train))

    images = val_images(exported)
    torch_model, onnx_model = artrank.load(out, backend="torch"), artrank.load(out, backend="onnx")
    from_torch, from_onnx = torch_model.novelty(images + [odd]), onnx_model.novelty(images + [odd])
    np.testing.assert_allclose([n for n, _ in from_onnx], [n for n, _ in from_torch], atol=1e-5)
    np.testing.assert_allclose([n for n, _ in from_torch[:-1]], novelty_of(nearest, val), atol=1e-5)
    assert from_torch[-1][1] and from_onnx[-1][1]  # the unlike drawing is flagged by both
    assert not any(flag for _, flag in from_torch[:-1])  # the threshold is the largest validation novelty here
    comparison = onnx_model.compare(images[0], odd)
    assert (comparison.unfamiliar_a, comparison.unfamiliar_b) == (False, True)
    assert comparison.novelty_b == pytest.approx(from_onnx[-1][0], abs=1e-6)

    predict.main([*exported["args"], images[0], odd, "--out", str(tmp_path / "scores.csv")])
    printed = capsys.readouterr()
    assert "warning: 1 image(s) unlike every training drawing" in printed.err and odd in printed.err
    scores = pd.read_csv(tmp_path / "scores.csv").set_index("file_name")
    assert list(scores.columns) == ["score", "score_sd", "novelty", "unfamiliar", "tier_hint", "tier_set"]
    assert (scores.loc[odd, "unfamiliar"], scores.loc[images[0], "unfamiliar"]) == ("yes", "no")
    assert scores.loc[odd, "novelty"] == pytest.approx(from_onnx[-1][0], abs=1e-5)
    # evaluate.py reports the share of its split flagged, from the cached features and the same threshold
    evaluated = run_script("evaluate.py", *exported["args"], "--output_dir", str(copy_run(exported, tmp_path,
                                                                                        with_export=False)))
    flagged = int((novelty_of(nearest, test) > fitted["threshold"]).sum())
    assert f"unfamiliar images (alpha 0.2): {flagged} of {len(test)} flagged" in evaluated.stdout
