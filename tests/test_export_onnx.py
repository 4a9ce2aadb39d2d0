"""export_onnx.py (REQ-O-004): the ONNX graph users ship, verified against PyTorch before it is put in place."""

import json
import re

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from conftest import copy_run, pixels_of, read_head, val_images

import export_onnx
import predict
from model import ArtRanker
from pipeline import export
from pipeline.backbones import DinoFeatureExtractor
from pipeline.scoring import MODEL_FORMAT, onnx_session

pytestmark = pytest.mark.slow


def test_req_o_004_one_graph_from_pixels_to_score_with_dynamic_batch(exported):
    graph = onnx.load(str(exported["out"] / "model.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert "Attention" in ops and "LayerNormalization" in ops  # SDPA and native LayerNorm, not decomposed
    assert "Resize" not in ops  # position embeddings baked for the fixed input size
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 70, 70]
    assert not list(exported["out"].glob(".export-*")) and not (exported["out"] / "model.onnx.data").exists()


def test_model_json_is_enough_to_preprocess_and_read_the_score(exported):
    meta = json.loads((exported["out"] / "model.json").read_text())
    assert meta["format"] == MODEL_FORMAT
    assert meta["files"] == {"fp32": "model.onnx", "fp16": "model_fp16.onnx"}
    assert meta["input"] == {"name": "pixel_values", "shape": ["batch", 3, 70, 70], "dtype": "float32"}
    prep = meta["preprocessing"]
    assert (prep["image_size"], prep["patch_size"], prep["input_size"]) == (64, 14, 70)
    assert prep["mean"] == [0.485, 0.456, 0.406] and prep["std"] == [0.229, 0.224, 0.225]
    head = json.loads((exported["out"] / "checkpoints" / "best" / "head.json").read_text())
    assert meta["backbone_id"] == head["backbone_id"] and meta["score_head"] == head["score_head"]
    assert meta["checkpoint"]["epoch"] == head["epoch"]
    assert meta["calibration"] == json.loads((exported["out"] / "calibration.json").read_text())
    session = onnx_session(exported["out"] / "model.onnx")
    assert session.get_modelmeta().custom_metadata_map["artrank.export_id"] == meta["export_id"]


def test_onnx_matches_pytorch_at_batch_1_and_3(exported):
    head, meta = read_head(exported["out"] / "checkpoints" / "best")
    ranker = ArtRanker(DinoFeatureExtractor.from_pretrained(str(exported["backbone"])), head, meta["feature"])
    pixels = pixels_of(val_images(exported)[:3])
    with torch.inference_mode():
        reference = ranker(torch.from_numpy(pixels)).numpy()
    session = onnx_session(exported["out"] / "model.onnx")
    together = session.run(None, {"pixel_values": pixels})[0]
    one_by_one = np.concatenate([session.run(None, {"pixel_values": pixels[i:i + 1]})[0] for i in range(3)])
    assert together.shape == (3,)
    np.testing.assert_allclose(together, reference, atol=1e-5)
    np.testing.assert_allclose(one_by_one, reference, atol=1e-5)
    # the script's own check, as printed and recorded
    parity = json.loads((exported["out"] / "model.json").read_text())["parity"]
    for precision in ("fp32", "fp16"):
        assert set(parity[precision]["batches"]) == {"1", "3"} and parity[precision]["ok"]
        for batch in parity[precision]["batches"].values():
            assert batch["max_abs_diff"] <= parity[precision]["tolerance"]
            assert batch["pairs_in_order"] == batch["pairs"] == 3
    assert re.search(r"parity fp32 .* at batch 1, .* at batch 3 .*-> ok", exported["stdout"])
    assert re.search(r"latency fp32 \(CPUExecutionProvider\): [\d.]+ ms/image at batch 1", exported["stdout"])


def test_fp16_variant_takes_and_returns_float32_and_stays_within_its_tolerance(exported):
    pixels = pixels_of(val_images(exported))
    fp32 = onnx_session(exported["out"] / "model.onnx").run(None, {"pixel_values": pixels})[0]
    fp16 = onnx_session(exported["out"] / "model_fp16.onnx").run(None, {"pixel_values": pixels})[0]
    assert fp16.dtype == np.float32
    of_range, of_scale = export.TOLERANCE["fp16"]
    assert np.abs(fp16 - fp32).max() <= of_range * np.ptp(fp32) + of_scale * np.abs(fp32).max()
    assert np.abs(fp16 - fp32).max() > 0  # really converted


def flip_head(export):
    """An export whose score head is negated: a valid graph that ranks every pair backwards."""
    def broken(ranker, path, **kwargs):
        path = export(ranker, path, **kwargs)
        graph = onnx.load(str(path))
        weight = next(t for t in graph.graph.initializer if t.name == "ranker.head.linear.weight")
        weight.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(weight), weight.name))
        onnx.save(graph, str(path))
        return path
    return broken


def wrong_input_size(export):
    """An export for another input size than the one the images are preprocessed to."""
    return lambda ranker, path, *, side, **kwargs: export(ranker, path, side=side + 14, **kwargs)


@pytest.mark.parametrize("breakage", [flip_head, wrong_input_size])
def test_broken_export_exits_nonzero_and_leaves_no_model(exported, tmp_path, monkeypatch, breakage):
    out = copy_run(exported, tmp_path, with_export=False)
    monkeypatch.setattr(export, "export_ranker", breakage(export.export_ranker))
    with pytest.raises(SystemExit) as exit_info:
        export_onnx.main([*exported["args"], "--output_dir", str(out), "--parity_images", "3", "--bench_seconds", "0"])
    assert "parity check failed" in str(exit_info.value) and "\n" not in str(exit_info.value)
    assert not (out / "model.onnx").exists() and not (out / "model.json").exists()
    assert not list(out.glob(".export-*"))


def test_failed_export_keeps_the_previous_verified_one(exported, tmp_path, monkeypatch):
    out = copy_run(exported, tmp_path, with_export=True)
    before = (out / "model.onnx").read_bytes(), (out / "model.json").read_text()
    monkeypatch.setattr(export, "export_ranker", flip_head(export.export_ranker))
    with pytest.raises(SystemExit, match="previous export in OUTPUT_DIR is left as it was"):
        export_onnx.main([*exported["args"], "--output_dir", str(out), "--parity_images", "3", "--bench_seconds", "0"])
    assert ((out / "model.onnx").read_bytes(), (out / "model.json").read_text()) == before


def test_weights_above_the_protobuf_limit_go_to_an_external_file_that_travels_with_the_model(exported, tmp_path,
                                                                                              monkeypatch, capsys):
    out = copy_run(exported, tmp_path, with_export=True)
    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 0)  # as if the model were over 1.5 GB
    export_onnx.main([*exported["args"], "--output_dir", str(out), "--parity_images", "3", "--bench_seconds", "0"])
    inline = (exported["out"] / "model.onnx").stat().st_size
    assert (out / "model.onnx.data").stat().st_size > 100_000 and (out / "model.onnx").stat().st_size < inline - 100_000
    assert not (out / "model_fp16.onnx").exists()  # not asked for this time: the old one is not left behind
    for output_dir, csv in ((out, "external.csv"), (exported["out"], "inline.csv")):
        predict.main([*exported["args"], "--output_dir", str(output_dir), "--out", str(tmp_path / csv),
                      *val_images(exported)[:3]])
    external, inline = pd.read_csv(tmp_path / "external.csv"), pd.read_csv(tmp_path / "inline.csv")
    assert list(external.file_name) == list(inline.file_name)
    np.testing.assert_allclose(external.score, inline.score, atol=1e-6)
    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 1_500_000_000)
    export_onnx.main([*exported["args"], "--output_dir", str(out), "--parity_images", "3", "--bench_seconds", "0"])
    assert (out / "model.onnx").exists() and not (out / "model.onnx.data").exists()
    assert "parity fp32" in capsys.readouterr().out


class ShiftedSession:
    """An onnxruntime stand-in: the reference scores of the rows it is given, one of them shifted by `shift`
    when the batch size is one of `at`."""

    def __init__(self, reference: np.ndarray, shift: float, at: tuple[int, ...]):
        self.reference, self.shift, self.at = reference, shift, at

    def run(self, _, feed):
        rows = feed[export.INPUT_NAME][:, 0, 0, 0].astype(int)  # each image carries its index
        scores = self.reference[rows].copy()
        if len(rows) in self.at:
            scores[rows == 2] += self.shift
        return [scores]


@pytest.mark.parametrize("precision, of_range, of_scale", [("fp32", 1e-3, 1e-5), ("fp16", 2e-2, 2e-3)])
def test_parity_passes_within_the_documented_tolerance_at_batch_1_and_at_batch_n_and_fails_above_it(
        precision, of_range, of_scale):
    reference = np.array([-1.0, 0.5, 3.0, 2.0, 0.25])  # range 4, largest |score| 3
    tolerance = of_range * 4 + of_scale * 3
    pixels = np.broadcast_to(np.arange(5, dtype=np.float32)[:, None, None, None], (5, 3, 2, 2)).copy()
    for shift, at, ok in ((0.9 * tolerance, (1, 5), True), (1.1 * tolerance, (1, 5), False),
                          (1.1 * tolerance, (5,), False), (1.1 * tolerance, (1,), False)):
        result = export.check_parity(ShiftedSession(reference, shift, at), pixels, reference, precision)
        assert result["tolerance"] == pytest.approx(tolerance, rel=1e-6)
        assert result["ok"] is ok, (shift / tolerance, at)
        for batch in (1, 5):
            assert result["batches"][batch]["max_abs_diff"] == pytest.approx(shift if batch in at else 0, rel=1e-5)


def test_an_export_of_another_checkpoint_ships_no_calibration_of_the_best_and_clears_a_killed_staging(exported,
                                                                                                    tmp_path):
    from pipeline.provenance import checkpoint_sha256

    out = copy_run(exported, tmp_path, with_export=False)
    (out / ".export-0badf00d").mkdir()  # what a killed export left
    (out / ".export-0badf00d" / "model.onnx").write_bytes(b"half a model")
    best = checkpoint_sha256(out / "checkpoints" / "best")
    other = next(p for p in sorted((out / "checkpoints" / "top").iterdir()) if checkpoint_sha256(p) != best)
    export_onnx.main([*exported["args"], "--output_dir", str(out), "--checkpoint", str(other), "--parity_images", "3",
                      "--bench_seconds", "0"])
    description = json.loads((out / "model.json").read_text())
    assert description["calibration"] is None  # calibration.json was fitted on the best checkpoint's scores
    # the exported checkpoint, then the top-k heads whose spread the graph gives
    members = sorted((out / "checkpoints" / "top").glob("epoch*"))
    assert description["made_from"]["checkpoints"] == [checkpoint_sha256(p) for p in [other, *members]]
    assert description["checkpoint"]["epoch"] == json.loads((other / "head.json").read_text())["epoch"]
    assert not list(out.glob(".export-*"))


class TwoOutputSession:
    """An onnxruntime stand-in giving the reference's score and novelty, the novelty shifted by `shift`."""

    def __init__(self, reference: np.ndarray, shift: float):
        self.reference, self.shift = reference, shift

    def run(self, names, feed):
        rows = feed[export.INPUT_NAME][:, 0, 0, 0].astype(int)
        values = {"score": self.reference[rows, 0], "novelty": self.reference[rows, 1] + self.shift}
        return [values[name] for name in names]


def test_parity_of_every_output_is_checked():
    reference = np.array([[-1.0, 0.01], [0.5, 0.02], [3.0, 0.5]])
    pixels = np.broadcast_to(np.arange(3, dtype=np.float32)[:, None, None, None], (3, 3, 2, 2)).copy()
    for precision, tolerance in export.NOVELTY_TOLERANCE.items():  # absolute: the novelty is 1 - a cosine
        for shift, ok in ((0.9 * tolerance, True), (1.1 * tolerance, False)):
            result = export.check_parity(TwoOutputSession(reference, shift), pixels, reference, precision,
                                         ("score", "novelty"))
            assert result["outputs"]["novelty"]["tolerance"] == tolerance
            assert (result["ok"], result["failed"]) == (ok, [] if ok else ["novelty"])
            assert result["batches"][3]["max_abs_diff"] == 0  # the score's own check is untouched
