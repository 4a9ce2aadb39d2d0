"""The ONNX export of a ranker, preprocessed pixels -> score, verified before it is put in place.

The graph takes float32 (batch, 3, S, S), S = image_size rounded up to whole patches (768 becomes 770 with
DINOv2's patch 14 and stays 768 with DINOv3's 16), and returns score (batch,), higher is better, and where the
run has them score_sd (its spread over the top-k checkpoints' heads, which the graph holds) and novelty (the
distance to the nearest training feature, which the graph holds too): pipeline/ranker.py's readout. Opset 23
through the dynamo exporter, so attention is one ONNX `Attention` op (about 3 times faster on a GPU than the
legacy exporter's MatMul + Softmax).

Every file is verified before it is put in place: onnx.checker, then onnxruntime against PyTorch fp32 on real
images at batch 1 and batch N. It passes when, for each output, max |difference| <= tolerance, where
    fp32: 0.1% of the images' score range + 1e-5 x the largest |score|   (summation order only)
    fp16: 2% of the score range + 2e-3 x the largest |score|   (fp16 keeps about 3 digits; ViT-L at 768
          measured 0.7% of the range)
so every pair of images more than two tolerances apart keeps its order (the range and largest value are
each output's own; the novelty's tolerance is absolute, 1e-5 in fp32 and 2e-3 in fp16, since it is one minus a
cosine near 1 whatever the images' range). On failure nothing is put in place and the previous export stays as it was.
"""

import copy
import shutil
import statistics
import time
import uuid
from pathlib import Path

import numpy as np
import onnx
import onnx_ir
import torch

from .errors import ArtrankError
from .files import atomic_write_json, atomic_write_text
from .images import preprocessing_description
from .ordinal import tier_model_description
from .provenance import MADE_FROM, made_from
from .ranker import ReadoutGraph
from .scoring import FILE_NAMES, INPUT_NAME, MODEL_FORMAT, OUTPUT_NAME, onnx_session

OPSET = 23
TOLERANCE = {"fp32": (1e-3, 1e-5), "fp16": (2e-2, 2e-3)}  # (of the score range, of the largest |score|)
# novelty is 1 - a cosine near 1: its error is absolute, about 1e-3 in fp16 (3 digits), whatever the images' range
NOVELTY_TOLERANCE = {"fp32": 1e-5, "fp16": 2e-3}
EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf stops at 2 GB; the weights go to NAME.data above this


def export_ranker(ranker: torch.nn.Module, path: str | Path, *, side: int, fp16: bool = False,
                  metadata: dict[str, str] | None = None) -> Path:
    """Write `ranker` (a pipeline.ranker.ArtRanker) as ONNX for inputs (batch, 3, side, side), one output per
    readout name; converted to fp16 inside when asked.

    The ranker itself is left as it was: the export works on a copy with its position embeddings baked.
    """
    path = Path(path)
    model = copy.deepcopy(ranker).eval()
    model.extractor.bake_position_embeddings(side)
    dummy = torch.zeros(2, 3, side, side, device=next(model.parameters()).device)
    program = torch.onnx.export(ReadoutGraph(model).eval(), (dummy,), dynamo=True, opset_version=OPSET, verbose=False,
                                input_names=[INPUT_NAME], output_names=list(model.readout_names),
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    proto = program.model_proto
    if fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        fp16_model = onnx_ir.from_proto(convert_float_to_float16(proto, keep_io_types=True))  # float32 in and out
        fp16_model.graph.sort()  # the converter appends its input Cast after the nodes that read it
        proto = onnx_ir.to_proto(fp16_model)
    onnx.helper.set_model_props(proto, metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    onnx.save(proto, str(path), save_as_external_data=weight_bytes > EXTERNAL_DATA_BYTES,
              location=path.name + ".data")
    return path


def reference_readout(ranker: torch.nn.Module, pixels: torch.Tensor, device: torch.device) -> np.ndarray:
    """PyTorch's readout (B, outputs) in exact fp32: no TF32 in matmuls and convolutions on the GPU either."""
    flags = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = [flag.fp32_precision for flag in flags]
    try:
        for flag in flags:
            flag.fp32_precision = "ieee"
        with torch.inference_mode():
            return ranker.to(device).readout(pixels.to(device)).float().cpu().numpy()
    finally:  # restored: torch.export refuses to trace with the legacy and new TF32 flags disagreeing
        for flag, value in zip(flags, before):
            flag.fp32_precision = value
        ranker.cpu()


def check_parity(session, pixels: np.ndarray, reference: np.ndarray, precision: str,
                 names: tuple[str, ...] = (OUTPUT_NAME,)) -> dict:
    """onnxruntime at batch 1 and at batch N against PyTorch's values of the same images: `reference` (N,) or
    (N, outputs) in the order of `names`. The score's check is at the top level, the others' under "outputs"."""
    def run(batch: np.ndarray) -> np.ndarray:
        return np.stack(session.run(list(names), {INPUT_NAME: batch}), axis=1)

    reference = reference.reshape(len(pixels), -1)
    one_by_one = np.concatenate([run(pixels[i:i + 1]) for i in range(len(pixels))])
    together = run(pixels)
    of_range, of_scale = TOLERANCE[precision]
    a, b = np.triu_indices(len(reference), k=1)
    checks = {}
    for column, name in enumerate(names):
        expected = reference[:, column]
        tolerance = (NOVELTY_TOLERANCE[precision] if name == "novelty"
                     else of_range * float(np.ptp(expected)) + of_scale * float(np.abs(expected).max()))
        batches = {}
        for batch, values in ((1, one_by_one[:, column]), (len(pixels), together[:, column])):
            kept = np.sign(values[a] - values[b]) == np.sign(expected[a] - expected[b])
            batches[batch] = {"max_abs_diff": float(np.abs(values - expected).max()),
                              "pairs_in_order": int(kept.sum()), "pairs": len(a)}
        checks[name] = {"tolerance": tolerance, "batches": batches,
                        "ok": all(r["max_abs_diff"] <= tolerance for r in batches.values())}
    failed = [name for name, check in checks.items() if not check.pop("ok")]
    score = checks.pop(names[0])
    return {"images": len(pixels), **score, "outputs": checks, "failed": failed, "ok": not failed}


def verify_export(path: Path, *, pixels: np.ndarray, reference: np.ndarray, precision: str,
                  names: tuple[str, ...] = (OUTPUT_NAME,), log=print) -> tuple[dict, object]:
    """onnx.checker, then parity against PyTorch; logs the outcome. result["ok"] is False on any failure."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        session = onnx_session(path)
        result = check_parity(session, pixels, reference, precision, names) | {"provider": session.get_providers()[0]}
    except Exception as err:  # a broken graph fails in the checker or in onnxruntime, with many types
        failure = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        log(f"parity {precision}: {path.name} does not load or run: {failure} -> FAILED")
        return {"ok": False, "failure": failure}, None
    batches = result["batches"].items()
    others = "".join(f"; {name} max |diff| {max(r['max_abs_diff'] for r in check['batches'].values()):.2e} "
                     f"(tolerance {check['tolerance']:.2e})" for name, check in result["outputs"].items())
    log(f"parity {precision} ({result['provider']} vs PyTorch, {len(pixels)} images): max |diff| "
        + ", ".join(f"{r['max_abs_diff']:.2e} at batch {size}" for size, r in batches)
        + f" (tolerance {result['tolerance']:.2e}); pairs in the same order: "
        + ", ".join(f"{r['pairs_in_order']}/{r['pairs']}" for _, r in batches) + others
        + (" -> ok" if result["ok"] else " -> FAILED"))
    if not result["ok"]:
        return {"ok": False, "failure": f"max |diff| of {', '.join(result['failed'])} above its tolerance"}, session
    return result, session


def measure_latency(session, side: int, *, batch: int, seconds: float) -> str:
    """Median ms per image at batch 1 and images/s at `batch`, each within about seconds / 2."""
    def timed_runs(size: int, budget: float, least: int) -> list[float]:
        pixels = np.random.default_rng(0).standard_normal((size, 3, side, side), dtype=np.float32)
        session.run(None, {INPUT_NAME: pixels})  # warm-up: allocations, kernel choice
        times, start = [], time.perf_counter()
        while len(times) < least or (time.perf_counter() - start < budget and len(times) < 200):
            tick = time.perf_counter()
            session.run(None, {INPUT_NAME: pixels})
            times.append(time.perf_counter() - tick)
        return times

    single = timed_runs(1, seconds / 2, 3)
    line = f"{1000 * statistics.median(single):.2f} ms/image at batch 1 (median of {len(single)})"
    if statistics.median(single) * batch * 3 > seconds / 2:
        return line + f"; batch {batch} skipped: it would take over {seconds / 2:.0f} s (--bench_seconds)"
    many = timed_runs(batch, seconds / 2, 2)
    return line + f", {batch / statistics.median(many):.0f} images/s at batch {batch}"


OUTPUT_MEANINGS = {"score": "score, higher is better",
                   "score_sd": "standard deviation of the score over the run's top-k checkpoints' heads",
                   "novelty": "cosine distance of the image's feature to the nearest training image's "
                              "(flagged above calibration.novelty.threshold)"}


def model_description(*, meta: dict, checkpoint: Path, calibration: dict | None, export_id: str, side: int,
                      parity: dict, out: Path, outputs: tuple[str, ...] = (OUTPUT_NAME,), members: list[Path] = (),
                      tier_thresholds: list[float] | None = None) -> dict:
    """model.json: what a consumer holding only the ONNX file needs to feed it and read its output."""
    return {
        "format": MODEL_FORMAT, "export_id": export_id,
        "files": {precision: FILE_NAMES[precision] for precision in parity},
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, side, side], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch"], "meaning": OUTPUT_MEANINGS[OUTPUT_NAME]},
        "outputs": [{"name": name, "shape": ["batch"], "meaning": OUTPUT_MEANINGS[name]}
                    | ({"members": len(members)} if name == "score_sd" else {}) for name in outputs],
        "preprocessing": preprocessing_description(meta["image_size"], meta["patch_size"]),
        "backbone": meta["backbone"], "backbone_id": meta["backbone_id"], "feature": meta["feature"],
        "score_head": meta["score_head"],
        "checkpoint": {"path": str(checkpoint), "epoch": meta.get("epoch"),
                       "val_pairwise_acc": meta.get("val_pairwise_acc")},
        "calibration": calibration,
        "tier_model": tier_model_description(tier_thresholds),
        MADE_FROM: made_from(out, checkpoint, *members),
        "export": {"opset": OPSET, "exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__},
        "parity": parity,
    }


def install(staging: Path, out: Path) -> None:
    """Move the verified files into OUTPUT_DIR, model.json last; drop any file the new export does not have."""
    for precision in ("fp32", "fp16"):
        for name in (FILE_NAMES[precision], FILE_NAMES[precision] + ".data"):
            if (staging / name).exists():
                (staging / name).replace(out / name)
            else:
                (out / name).unlink(missing_ok=True)
    atomic_write_text(out / "model.json", (staging / "model.json").read_text())


def export_run(ranker, *, meta: dict, checkpoint: Path, members: list[Path], calibration: dict | None, out: Path,
               side: int,
               pixels: torch.Tensor, device: torch.device, fp16: bool, bench_seconds: float, latency_batch: int,
               log=print) -> dict:
    """Export `ranker` (its readout; `members` the folders of its top-k heads) into OUTPUT_DIR (model.onnx, with
    fp16 also model_fp16.onnx, and model.json), each file verified against PyTorch on `pixels` first. Returns
    model.json's content; ArtrankError when a file fails its check, with nothing put in place."""
    reference, names = reference_readout(ranker, pixels, device), ranker.readout_names
    for killed in out.glob(".export-*"):  # a killed export's staging (gigabytes for ViT-L); the run lock is ours
        shutil.rmtree(killed, ignore_errors=True)
    staging = out / f".export-{uuid.uuid4().hex[:8]}"
    export_id = uuid.uuid4().hex
    parity, failures = {}, []
    try:
        for precision in ("fp32", "fp16") if fp16 else ("fp32",):
            start = time.perf_counter()
            path = export_ranker(ranker, staging / FILE_NAMES[precision], side=side, fp16=precision == "fp16",
                                 metadata={"artrank.format": str(MODEL_FORMAT), "artrank.export_id": export_id})
            megabytes = sum(p.stat().st_size for p in staging.glob(path.name + "*")) / 1e6
            log(f"exported {path.name} ({precision}, opset {OPSET}, {megabytes:.1f} MB) "
                f"in {time.perf_counter() - start:.1f} s")
            result, session = verify_export(path, pixels=pixels.numpy(), reference=reference, precision=precision,
                                            names=names, log=log)
            if not result["ok"]:
                failures.append(f"{path.name}: {result['failure']}")
                continue
            parity[precision] = result
            if bench_seconds > 0:
                log(f"latency {precision} ({result['provider']}): "
                    + measure_latency(session, side, batch=latency_batch, seconds=bench_seconds))
        if failures:
            kept = " (the previous export in OUTPUT_DIR is left as it was)" if (out / "model.json").exists() else ""
            raise ArtrankError(f"parity check failed, exported files deleted{kept}: " + "; ".join(failures))
        thresholds = ranker.head.thresholds()
        description = model_description(meta=meta, checkpoint=checkpoint, calibration=calibration,
                                        export_id=export_id, side=side, parity=parity, out=out, outputs=names,
                                        members=members if "score_sd" in names else [],
                                        tier_thresholds=None if thresholds is None else thresholds.tolist())
        atomic_write_json(staging / "model.json", description)
        install(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return description
