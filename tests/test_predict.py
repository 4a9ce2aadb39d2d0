"""predict.py: a trained model used the way a person uses it: rank images, compare two, one line per problem."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import copy_run, edit_json, run_script, val_images

import predict
from pipeline.calibration import p_first_better

pytestmark = pytest.mark.slow


def test_predict_ranks_the_same_on_onnx_and_on_pytorch(exported, tmp_path):
    tables = {}
    for name, flags in (("onnx", []), ("torch", ["--torch"])):
        predict.main([*exported["args"], "--dir", str(exported["data"] / "images"), "--out",
                      str(tmp_path / f"{name}.csv"), *flags])
        tables[name] = pd.read_csv(tmp_path / f"{name}.csv")
    onnx_table, torch_table = tables["onnx"], tables["torch"]
    # the spread over the run's top-k heads and the novelty, from the checkpoint and from the export's graph alike
    columns = ["file_name", "score", "score_sd", "novelty", "unfamiliar", "tier_hint", "tier_set"]
    assert len(onnx_table) == 96 and list(onnx_table.columns) == columns == list(torch_table.columns)
    assert list(onnx_table.file_name) == list(torch_table.file_name)
    for column in ("score", "score_sd", "novelty"):
        np.testing.assert_allclose(onnx_table[column], torch_table[column], atol=1e-5)
    assert list(onnx_table.unfamiliar) == list(torch_table.unfamiliar)
    assert onnx_table.score.is_monotonic_decreasing
    assert set(onnx_table.tier_hint) <= set("SABC")
    assert list(onnx_table.tier_set) == list(torch_table.tier_set) and (torch_table.score_sd > 0).all()


def test_predict_on_fp16_model_file_uses_the_same_model_json(exported, tmp_path, capsys):
    image = val_images(exported)[0]
    predict.main([*exported["args"], "--model", str(exported["out"] / "model_fp16.onnx"), image])
    assert "model_fp16.onnx (onnxruntime" in capsys.readouterr().out


def p_of(output: str) -> float:
    return float(re.search(r"P\(A better than B\) = ([\d.]+)", output).group(1))


def test_compare_says_which_is_better_and_is_symmetric(exported, capsys):
    first, second = val_images(exported)[:2]
    forward = run_script("predict.py", *exported["args"], "--compare", first, second).stdout
    predict.main([*exported["args"], "--compare", second, first])
    backward = capsys.readouterr().out
    assert p_of(forward) + p_of(backward) == pytest.approx(1.0, abs=2e-4)
    assert ("A is better" in forward) == ("B is better" in backward) == (p_of(forward) > 0.5)
    assert "logistic regression without intercept" in forward
    calibration = json.loads((exported["out"] / "calibration.json").read_text())
    for a, b in ((0.3, -0.1), (0.01, 0.0), (-0.52, -0.5), (-40.0, 40.0)):
        forward_p, backward_p = p_first_better(a, b, calibration), p_first_better(b, a, calibration)
        assert forward_p + backward_p == pytest.approx(1.0, abs=1e-12) and (forward_p > 0.5) == (a > b)
    assert p_first_better(0.2, 0.2, calibration) == 0.5


def test_unreadable_image_is_one_line_and_the_others_are_still_scored(exported, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = val_images(exported)[:2]
    result = run_script("predict.py", *exported["args"], good[0], str(bad), good[1], "--out", tmp_path / "scores.csv",
                        check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith((" ", "{", "}"))]  # less config
    assert errors == [f"error: {bad}: not a readable image: UnidentifiedImageError: cannot identify image file "
                      f"'{bad}'"]
    assert sorted(pd.read_csv(tmp_path / "scores.csv").file_name) == sorted(good)


@pytest.mark.parametrize("damage, message", [
    (lambda out: (out / "model.onnx").unlink(), "no ONNX model at"),
    (lambda out: (out / "model.json").unlink(), "cannot read the model description"),
    (lambda out: edit_json(out / "model.json", format=99), "model.json format 99, this code reads format 1"),
    (lambda out: edit_json(out / "model.json", export_id="another"), "come from different exports"),
    (lambda out: (out / "model.onnx").write_bytes(b"truncated"), "cannot load"),
    (lambda out: edit_preprocessing(out, version="center-crop-224"), "preprocessing center-crop-224"),
    (lambda out: edit_preprocessing(out, mean=[0.5, 0.5, 0.5]), "mean [0.5, 0.5, 0.5]"),
    (lambda out: edit_preprocessing(out, std=[1.0, 1.0, 1.0]), "std [1.0, 1.0, 1.0]"),
    (lambda out: drop_key(out, "input"), "model.json: not a model description this code can use (1 problem(s); "
                                         "input: Field required)"),
    (lambda out: edit_json(out / "model.json", calibration={"slope": "steep"}), "calibration.slope: Input should be"),
    (lambda out: edit_preprocessing(out, image_size=128), "describes 'pixel_values' [3, 140, 140] (image_size 128"),
])
def test_bad_model_is_a_one_line_error(exported, tmp_path, damage, message):
    out = copy_run(exported, tmp_path, with_export=True)
    damage(out)
    with pytest.raises(SystemExit) as exit_info:
        predict.main([*exported["args"], "--output_dir", str(out), val_images(exported)[0]])
    assert str(exit_info.value).startswith("error: ") and message in str(exit_info.value)
    assert "\n" not in str(exit_info.value)


def drop_key(out: Path, key: str) -> None:
    meta = json.loads((out / "model.json").read_text())
    (out / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != key}))


def edit_preprocessing(out: Path, **changes) -> None:
    """model.json describing another preprocessing than predict.py does: scores would be silently wrong."""
    meta = json.loads((out / "model.json").read_text())
    edit_json(out / "model.json", preprocessing=meta["preprocessing"] | changes)


def test_no_calibration_means_no_tier_hint_and_no_probability(exported, tmp_path, capsys):
    out = copy_run(exported, tmp_path, with_export=True)
    edit_json(out / "model.json", calibration=None)
    first, second = val_images(exported)[:2]
    predict.main([*exported["args"], "--output_dir", str(out), first, second, "--out", str(tmp_path / "s.csv")])
    # no threshold, so no unfamiliar column; the graph's spread and novelty are still shown
    assert list(pd.read_csv(tmp_path / "s.csv").columns) == ["file_name", "score", "score_sd", "novelty"]
    predict.main([*exported["args"], "--output_dir", str(out), "--compare", first, second])
    output = capsys.readouterr().out
    assert "P(A better) unavailable" in output and "P(A better than B)" not in output


def test_the_resolved_config_is_printed_by_train_once_and_by_predict_only_with_verbose(exported, capsys):
    image = val_images(exported)[0]
    predict.main([*exported["args"], image])
    quiet = capsys.readouterr()
    predict.main([*exported["args"], image, "--verbose"])
    verbose = capsys.readouterr()
    recorded = json.loads((exported["out"] / "config.json").read_text())
    assert '"backbone":' not in quiet.out + quiet.err and verbose.err.count('"backbone":') == 1
    shown = json.loads(verbose.err[:verbose.err.index("}") + 1])
    assert {k: shown[k] for k in ("image_size", "feature", "score_head")} == {
        k: recorded[k] for k in ("image_size", "feature", "score_head")}


def test_the_execution_provider_and_the_fp16_file_are_chosen_and_a_missing_provider_is_one_line(exported, capsys):
    import onnxruntime

    import artrank

    image = val_images(exported)[0]
    predict.main([*exported["args"], "--fp16", "--provider", "cpu", image])
    assert "model_fp16.onnx (onnxruntime, CPUExecutionProvider" in capsys.readouterr().out
    model = artrank.load(exported["out"], fp16=True, provider="cpu")
    assert "model_fp16.onnx (onnxruntime, CPUExecutionProvider" in repr(model)
    assert artrank.load(exported["out"], provider="cpu").score(image) != model.score(image)  # another graph
    if not Path("/dev/nvidiactl").exists():  # no GPU: cuda is refused, listed by onnxruntime or not
        with pytest.raises(SystemExit) as refusal:
            predict.main([*exported["args"], "--provider", "cuda", image])
        listed = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        assert re.match(r"error: .*execution provider cuda did not start here" if listed else
                        r"error: execution provider cuda: this onnxruntime has ", str(refusal.value))
        with pytest.raises(artrank.ArtrankError, match="execution provider cuda"):
            artrank.load(exported["out"], provider="cuda")
