"""artrank.py: the Python API scores paths and PIL images from an export or a run, and raises one-line errors."""

import json
import re

import numpy as np
import pytest
from conftest import copy_run, edit_json, val_images
from PIL import Image

import artrank
from pipeline.calibration import tier_hint

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
