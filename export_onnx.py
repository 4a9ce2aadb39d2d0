"""Export the trained ranker as one ONNX graph, preprocessed pixels -> score, and check it (REQ-O-004).

    python export_onnx.py --config configs/demo.json [--fp16] [--parity_images 4] [--bench_seconds 10]

Reads the best checkpoint (OUTPUT_DIR/checkpoints/best, or --checkpoint), the backbone, OUTPUT_DIR/splits.csv
and a few validation images from DATA_DIR (the parity check), and OUTPUT_DIR/calibration.json.
Writes OUTPUT_DIR/model.onnx (fp32), with --fp16 also model_fp16.onnx (for GPUs), and model.json: the
preprocessing, the score head, the checkpoint and the calibration, so that a consumer holding only the ONNX
file and model.json feeds it correctly.

The graph takes float32 (batch, 3, S, S), S = image_size rounded up to whole patches (768 becomes 770 with
DINOv2's patch 14 and stays 768 with DINOv3's 16), and returns score (batch,), higher is better. Opset 23
through the dynamo exporter, so attention is one ONNX `Attention` op (3x faster on GPU than the legacy
exporter's MatMul + Softmax, docs/design.md 10).

Every file is verified before it is put in place: onnx.checker, then onnxruntime against PyTorch fp32 on real
images at batch 1 and batch N. It passes when max |score difference| <= tolerance, where
    fp32: 0.1% of the images' score range + 1e-5 x the largest |score|   (summation order only)
    fp16: 2% of the score range + 2e-3 x the largest |score|   (fp16 keeps ~3 digits; docs/design.md 10
          measured 0.7% of the range on ViT-L at 768)
so every pair of images more than two tolerances apart keeps its order. On failure nothing is written,
the exported files are deleted and the exit status is 1.
"""

import copy
import dataclasses
import json
import logging
import shutil
import statistics
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir
import onnxruntime
import pandas as pd
import torch

from config import parse_config, print_config
from data import image_path
from images import input_size, load_pixels, preprocessing_description
from model import ArtRanker
from runfolder import atomic_write_text, check_reader
from workflow import load_ranker, locked_run_folder, make_accelerator, script_errors

MODEL_FORMAT = 1  # of model.json; bumped when its meaning changes, so old readers refuse instead of misreading
OPSET = 23
INPUT_NAME, OUTPUT_NAME = "pixel_values", "score"
TOLERANCE = {"fp32": (1e-3, 1e-5), "fp16": (2e-2, 2e-3)}  # (of the score range, of the largest |score|)
FILE_NAMES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx"}
EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf stops at 2 GB; the weights go to NAME.data above this


def export_ranker(ranker: ArtRanker, path: str | Path, *, side: int, fp16: bool = False,
                  metadata: dict[str, str] | None = None) -> Path:
    """Write `ranker` as ONNX for inputs (batch, 3, side, side); converted to fp16 inside when asked.

    The ranker itself is left as it was: the export works on a copy with its position embeddings baked.
    """
    path = Path(path)
    model = copy.deepcopy(ranker).eval()
    model.extractor.bake_position_embeddings(side)
    dummy = torch.zeros(2, 3, side, side, device=next(model.parameters()).device)
    program = torch.onnx.export(model, (dummy,), dynamo=True, opset_version=OPSET, verbose=False,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
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


def onnx_session(path: str | Path) -> onnxruntime.InferenceSession:
    """An onnxruntime session on CUDA when a GPU is present, else on the CPU."""
    providers = ["CPUExecutionProvider"]
    gpu = torch.cuda.is_available() or Path("/dev/nvidiactl").exists()
    if gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        if hasattr(onnxruntime, "preload_dlls"):  # CUDA and cuDNN from the pip wheels PyTorch brought
            onnxruntime.preload_dlls()
        # TF32 would round fp32 matmuls to fp16's 10-bit mantissa: the fp32 model is the exact one.
        providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": "0"}))
    return onnxruntime.InferenceSession(str(path), providers=providers)


def parity_images(cfg, count: int, *, patch_size: int) -> tuple[list[str], torch.Tensor]:
    """`count` validation images of the run, spread over the tiers, preprocessed the one way."""
    splits_csv = Path(cfg.output_dir) / "splits.csv"
    if not splits_csv.is_file():
        raise SystemExit(f"error: {splits_csv} not found: run train.py with this config first")
    rows = pd.read_csv(splits_csv, dtype=str, keep_default_na=False)
    rows = rows[rows.split == "val"].sort_values(["tier", "image_id"])
    rows = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, count).round().astype(int))]
    paths, pixels = [], []
    for name in rows.file_name:
        path = image_path(cfg.data_dir, name)
        try:
            pixels.append(load_pixels(path, cfg.image_size, patch_size))
        except Exception as err:
            raise SystemExit(f"error: parity image {path}: {type(err).__name__}: {err}") from None
        paths.append(path)
    return paths, torch.stack(pixels)


def reference_scores(ranker: ArtRanker, pixels: torch.Tensor, device: torch.device) -> np.ndarray:
    """PyTorch's scores in exact fp32: no TF32 in matmuls and convolutions on the GPU either."""
    flags = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = [flag.fp32_precision for flag in flags]
    try:
        for flag in flags:
            flag.fp32_precision = "ieee"
        with torch.inference_mode():
            return ranker.to(device)(pixels.to(device)).float().cpu().numpy()
    finally:  # restored: torch.export refuses to trace with the legacy and new TF32 flags disagreeing
        for flag, value in zip(flags, before):
            flag.fp32_precision = value
        ranker.cpu()


def check_parity(session: onnxruntime.InferenceSession, pixels: np.ndarray, reference: np.ndarray,
                 precision: str) -> dict:
    """onnxruntime at batch 1 and at batch N against the PyTorch scores of the same images."""
    one_by_one = np.concatenate([session.run(None, {INPUT_NAME: pixels[i:i + 1]})[0] for i in range(len(pixels))])
    together = session.run(None, {INPUT_NAME: pixels})[0]
    of_range, of_scale = TOLERANCE[precision]
    tolerance = of_range * float(np.ptp(reference)) + of_scale * float(np.abs(reference).max())
    a, b = np.triu_indices(len(reference), k=1)
    batches = {}
    for batch, scores in ((1, one_by_one), (len(pixels), together)):
        kept = np.sign(scores[a] - scores[b]) == np.sign(reference[a] - reference[b])
        batches[batch] = {"max_abs_diff": float(np.abs(scores - reference).max()),
                          "pairs_in_order": int(kept.sum()), "pairs": len(a)}
    return {"images": len(pixels), "tolerance": tolerance, "batches": batches,
            "ok": all(batch["max_abs_diff"] <= tolerance for batch in batches.values())}


def verify_export(path: Path, *, pixels: np.ndarray, reference: np.ndarray,
                  precision: str) -> tuple[dict, onnxruntime.InferenceSession | None]:
    """onnx.checker, then parity against PyTorch; prints the outcome. result["ok"] is False on any failure."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        session = onnx_session(path)
        result = check_parity(session, pixels, reference, precision) | {"provider": session.get_providers()[0]}
    except Exception as err:  # a broken graph fails in the checker or in onnxruntime, with many types
        failure = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        print(f"parity {precision}: {path.name} does not load or run: {failure} -> FAILED")
        return {"ok": False, "failure": failure}, None
    batches = result["batches"].items()
    print(f"parity {precision} ({result['provider']} vs PyTorch, {len(pixels)} images): max |diff| "
          + ", ".join(f"{r['max_abs_diff']:.2e} at batch {size}" for size, r in batches)
          + f" (tolerance {result['tolerance']:.2e}); pairs in the same order: "
          + ", ".join(f"{r['pairs_in_order']}/{r['pairs']}" for _, r in batches)
          + (" -> ok" if result["ok"] else " -> FAILED"))
    if not result["ok"]:
        return {"ok": False, "failure": f"max |diff| above the tolerance {result['tolerance']:.2e}"}, session
    return result, session


def measure_latency(session: onnxruntime.InferenceSession, side: int, *, batch: int, seconds: float) -> str:
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


def model_json(cfg, *, meta: dict, checkpoint: Path, export_id: str, side: int, parity: dict) -> dict:
    calibration_json = Path(cfg.output_dir) / "calibration.json"
    return {
        "format": MODEL_FORMAT, "export_id": export_id,
        "files": {precision: FILE_NAMES[precision] for precision in parity},
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, side, side], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch"], "meaning": "score, higher is better"},
        "preprocessing": preprocessing_description(cfg.image_size, meta["patch_size"]),
        "backbone": meta["backbone"], "backbone_id": meta["backbone_id"], "feature": meta["feature"],
        "score_head": meta["score_head"],
        "checkpoint": {"path": str(checkpoint), "epoch": meta.get("epoch"),
                       "val_pairwise_acc": meta.get("val_pairwise_acc")},
        "calibration": json.loads(calibration_json.read_text()) if calibration_json.is_file() else None,
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


def add_arguments(parser) -> None:
    parser.add_argument("--fp16", action="store_true", help="also write model_fp16.onnx, for GPUs")
    parser.add_argument("--parity_images", type=int, default=4, help="validation images for the parity check")
    parser.add_argument("--latency_batch", type=int, default=32, help="batch size of the throughput figure")
    parser.add_argument("--bench_seconds", type=float, default=10.0, help="time for the latency figures; 0: none")


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_config(__doc__, argv, add_arguments=add_arguments, keys=(
        "run", "data_dir", "backbone", "random_backbone", "image_size", "checkpoint", "mixed_precision"))
    print_config(cfg)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # a warning per optional torchvision op it lacks
    warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)  # torch.export's own
    with script_errors() as phase, locked_run_folder(cfg, accelerator := make_accelerator(cfg), "export_onnx.py"):
        check_reader(cfg.output_dir, dataclasses.asdict(cfg), what="export it")  # before the backbone: cheap first
        phase.kept = "the previous export, if any, as it was"
        export(cfg, args, accelerator)


def export(cfg, args, accelerator) -> None:
    ranker, meta, checkpoint = load_ranker(cfg, accelerator)
    side = input_size(cfg.image_size, meta["patch_size"])
    paths, pixels = parity_images(cfg, max(2, args.parity_images), patch_size=meta["patch_size"])
    print(f"parity images: {', '.join(paths)}")

    reference = reference_scores(ranker, pixels, accelerator.device)
    out = Path(cfg.output_dir)
    staging = out / f".export-{uuid.uuid4().hex[:8]}"
    export_id = uuid.uuid4().hex
    parity, failures = {}, []
    try:
        for precision in ("fp32", "fp16") if args.fp16 else ("fp32",):
            start = time.perf_counter()
            path = export_ranker(ranker, staging / FILE_NAMES[precision], side=side, fp16=precision == "fp16",
                                 metadata={"artrank.format": str(MODEL_FORMAT), "artrank.export_id": export_id})
            megabytes = sum(p.stat().st_size for p in staging.glob(path.name + "*")) / 1e6
            print(f"exported {path.name} ({precision}, opset {OPSET}, {megabytes:.1f} MB) "
                  f"in {time.perf_counter() - start:.1f} s")
            result, session = verify_export(path, pixels=pixels.numpy(), reference=reference, precision=precision)
            if not result["ok"]:
                failures.append(f"{path.name}: {result['failure']}")
                continue
            parity[precision] = result
            if args.bench_seconds > 0:
                print(f"latency {precision} ({result['provider']}): "
                      + measure_latency(session, side, batch=args.latency_batch, seconds=args.bench_seconds))
        if failures:
            kept = " (the previous export in OUTPUT_DIR is left as it was)" if (out / "model.json").exists() else ""
            raise SystemExit(f"error: parity check failed, exported files deleted{kept}: " + "; ".join(failures))
        description = model_json(cfg, meta=meta, checkpoint=checkpoint, export_id=export_id, side=side,
                                 parity=parity)
        (staging / "model.json").write_text(json.dumps(description, indent=2) + "\n")
        install(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {', '.join(str(out / FILE_NAMES[p]) for p in parity)} and {out / 'model.json'}"
          + ("" if description["calibration"] else " (no calibration.json: predictions get no tier hint)"))


if __name__ == "__main__":
    main()
