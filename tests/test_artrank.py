"""artrank.py: the Python API scores paths and PIL images from an export or a run, and raises one-line errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, copy_run, edit_json, val_images
from PIL import Image

import artrank
from pipeline.calibration import tier_hint
from pipeline.config import load_config
from pipeline.tier_sets import tier_sets

pytestmark = pytest.mark.slow


def test_python_api_scores_paths_and_pil_images_from_an_export_or_a_run(exported, tmp_path):
    images = val_images(exported)[:3]
    onnx_model = artrank.load(exported["out"])
    assert "onnxruntime" in repr(onnx_model)
    scores = onnx_model.score(images)
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    with Image.open(images[0]) as image:
        assert onnx_model.score(image) == pytest.approx(scores[0], abs=1e-6)
    checkpoint = artrank.load(exported["out"], backend="torch")
    assert "PyTorch" in repr(checkpoint)
    np.testing.assert_allclose(checkpoint.score(images), scores, atol=1e-5)
    assert "PyTorch" in repr(artrank.load(copy_run(exported, tmp_path, with_export=False)))  # no export: the checkpoint

    forward, backward = onnx_model.compare(images[0], images[1]), onnx_model.compare(images[1], images[0])
    assert (forward.score_a, forward.score_b) == pytest.approx((scores[0], scores[1]), abs=1e-6)
    assert forward.better == ("A" if scores[0] > scores[1] else "B") and backward.better != forward.better
    assert forward.p_a_better + backward.p_a_better == pytest.approx(1.0, abs=1e-9)
    calibration = json.loads((exported["out"] / "calibration.json").read_text())
    assert forward.tier_hint_a == tier_hint(scores[0], calibration) in set("SABC")
    # the tier sets of calibration.json, carried by model.json to the export: the same from either backend
    expected = tier_sets(scores, calibration["tier_sets"])
    assert [onnx_model.tier_set(s) for s in scores] == expected == [checkpoint.tier_set(s) for s in scores]
    assert (forward.tier_set_a, forward.tier_set_b) == (expected[0], expected[1])
    # the spread over the top-k checkpoints: each member scored alone, in its own process-free Ranker
    members = sorted((exported["out"] / "checkpoints" / "top").glob("epoch*"))
    assert checkpoint.scorer.members == len(members) >= 2
    alone = np.array([artrank.Ranker(artrank.run_scorer(load_config(
        exported["out"] / "config.json", output_dir=str(exported["out"]), random_backbone="",
        checkpoint=str(member)))).score(images) for member in members])
    spread = checkpoint.score_spread(images)
    np.testing.assert_allclose([score for score, _ in spread], scores, atol=1e-5)
    np.testing.assert_allclose([sd for _, sd in spread], alone.std(axis=0), atol=1e-5)
    assert alone.std(axis=0).min() > 0  # the members differ: a spread of one head repeated would be 0
    assert checkpoint.compare(images[0], images[1]).score_sd_a == pytest.approx(spread[0][1], abs=1e-6)
    # the export holds the same top-k heads in its graph: the same spread, from onnxruntime
    np.testing.assert_allclose([sd for _, sd in onnx_model.score_spread(images)], alone.std(axis=0), atol=1e-5)
    assert forward.score_sd_a == pytest.approx(spread[0][1], abs=1e-5) and onnx_model.scorer.members == len(members)
    older = copy_run(exported, tmp_path / "older", with_export=True)
    edit_json(older / "model.json", outputs=None)  # an export made before the graph carried the heads
    with pytest.raises(artrank.ArtrankError, match="no score_sd: it needs the run's top-k checkpoints"):
        artrank.load(older).score_spread(images)


def test_python_api_raises_one_line_errors(exported, tmp_path):
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    wrong_size = copy_run(exported, tmp_path, with_export=False)
    edit_json(wrong_size / "config.json", image_size=128)
    for call, message in ((lambda: artrank.load(tmp_path / "nothing"), "no such run folder or model file"),
                          (lambda: artrank.load(tmp_path / "empty"), "neither a trained run"),
                          (lambda: artrank.load(exported["out"], backend="tf"), "backend must be auto, onnx or torch"),
                          (lambda: artrank.load(wrong_size), "checkpoint made with image_size=64"),
                          (lambda: artrank.load(exported["out"]).score([val_images(exported)[0], bad]),
                           f"{bad}: not a readable image")):
        with pytest.raises(artrank.ArtrankError, match=re.escape(message)) as error:
            call()
        assert isinstance(error.value, ValueError) and "\n" not in str(error.value)


def test_loading_a_run_from_another_folder_never_builds_a_backbone_there(exported, tmp_path, monkeypatch):
    run = copy_run(exported, tmp_path, with_export=False)
    edit_json(run / "config.json", backbone="models/dinov2-tiny-random", random_backbone="tiny")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(artrank.ArtrankError, match="models/dinov2-tiny-random"):
        artrank.load(run, backend="torch")
    assert list(elsewhere.iterdir()) == []


def python_in(folder: Path, code: str) -> subprocess.CompletedProcess:
    """`python -c code` in another folder, with nothing on PYTHONPATH: artrank as installed (pip install -e .)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, env=env,
                          timeout=300)


def test_artrank_imports_from_any_folder_and_refuses_a_stranger_s_file_of_its_own_names(exported, tmp_path):
    found = python_in(tmp_path, "import artrank; print(artrank.__file__)")
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip() == str(ROOT / "artrank.py")
    (tmp_path / "pipeline.py").write_text("raise SystemExit('a stranger ran')\n")
    shadowed = python_in(tmp_path, "import artrank")
    assert "a stranger ran" not in shadowed.stderr  # refused before it could run
    assert f"ImportError: {tmp_path / 'pipeline.py'} comes first on sys.path as 'pipeline'" in shadowed.stderr
    (tmp_path / "pipeline.py").unlink()
    (tmp_path / "model.py").write_text("raise SystemExit('a stranger ran')\n")
    code = (f"import artrank\ntry:\n    artrank.load({str(exported['out'])!r}, backend='torch')\n"
            "except artrank.ArtrankError as e:\n    print(e)")
    refused = python_in(tmp_path, code)
    assert refused.returncode == 0 and "a stranger ran" not in refused.stderr + refused.stdout
    assert f"{tmp_path / 'model.py'} comes first on sys.path as 'model'" in refused.stdout
