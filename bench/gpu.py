"""GPU benchmark: ViT-L/14 (random weights, the real architecture) at 768: extraction, ONNX, eager, torch.compile.

    python -m bench.gpu                                   # on a CUDA machine: ViT-L/14 at 768, all parts
    python -m bench.gpu --parts extract eager onnx        # without torch.compile (about 140 s of compiling)
    python -m bench.gpu --backbone tiny --size 56 --parts extract eager onnx --out /tmp/gpu.json   # CPU check

Parts, in fp16 on CUDA (fp32 on a CPU, where this is only a check that the script runs):
- extract: DinoFeatureExtractor as features.py runs it (fp16 autocast, SDPA attention,
  inference_mode) on a batch already on the device, at each of `--batches`: time per batch, images/s,
  achieved TFLOP/s against the architecture's FLOP count at this input size (docs/design.md counts 2.6
  TFLOPs at 756 px; our 770 px input has 3,026 tokens), peak GPU memory allocated at each batch.
- eager, compile, onnx: batch-1 latency of the whole ranker (backbone + head, position embeddings
  baked as the export bakes them), from a preprocessed float32 image in host memory to its score in
  host memory. eager: PyTorch with fp16 weights, and with fp16 autocast as extraction runs; compile:
  torch.compile(mode=--compile_mode) of the fp16 model, compile time reported; onnx: export_onnx's
  export_ranker (opset 23, fp16) run by onnxruntime through onnx_session (CUDA execution provider
  when there is one), with its scores against PyTorch fp32 on the same images.
Writes the figures as JSON to --out (a part not run is listed under "not_measured"); prints two
tables and a one-line summary. Imports neither datasets nor wandb outside the onnx part.
"""

import argparse
import copy
import datetime
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import transformers

from bench.common import (
    add_model_arguments,
    autocast,
    median_seconds,
    pick_device,
    print_table,
    random_extractor,
    timed,
)
from model import ArtRanker, RankingHead
from pipeline.backbones import RANDOM_BACKBONES
from pipeline.files import atomic_write_text
from pipeline.images import input_size

PARTS = ("extract", "eager", "compile", "onnx")


def flops_per_image(config, side: int) -> dict:
    """Multiply-adds x 2 of one forward pass: patch embedding, linear layers and attention."""
    grid = (side // config.patch_size) ** 2
    tokens, width, layers = grid + 1, config.hidden_size, config.num_hidden_layers
    patch = 2 * grid * 3 * config.patch_size ** 2 * width
    linear = 2 * tokens * layers * (4 + 2 * config.mlp_ratio) * width ** 2  # q, k, v, output; MLP up and down
    attention = 2 * 2 * tokens ** 2 * width * layers  # Q K^T and attention x V
    return dict(tokens=tokens, linear=patch + linear, attention=attention, total=patch + linear + attention)


def measure_extraction(extractor, *, side: int, batches: list[int], repeats: int, flops: float,
                       device: torch.device) -> list[dict]:
    rows = []
    for batch in batches:
        pixels = torch.randn(batch, 3, side, side, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def run(pixels: torch.Tensor = pixels) -> None:
            with torch.inference_mode(), autocast(device):
                extractor(pixels)

        seconds = median_seconds(run, device, repeats=repeats, warmup=3)
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
        rows.append(dict(batch=batch, ms_per_batch=1e3 * seconds, images_per_s=batch / seconds,
                         tflops=flops * batch / seconds / 1e12, peak_gib=peak))
    return rows


def host_latency_ms(score, pixels: torch.Tensor, *, repeats: int, device: torch.device) -> float:
    """Median ms from a float32 image in host memory to its score in host memory."""
    return 1e3 * median_seconds(lambda: score(pixels), device, repeats=repeats, warmup=3)


def torch_scorer(model, device: torch.device, dtype: torch.dtype, *, use_autocast: bool = False):
    @torch.inference_mode()
    def score(pixels: torch.Tensor) -> np.ndarray:
        with autocast(device) if use_autocast else torch.autocast(device.type, enabled=False):
            return model(pixels.to(device).to(dtype)).float().cpu().numpy()
    return score


def torch_latencies(ranker: ArtRanker, *, side: int, pixels: torch.Tensor, args, device: torch.device) -> dict:
    """Batch-1 ms of the eager and compile parts, on a copy with its position embeddings baked; compile_s too."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    baked = copy.deepcopy(ranker).cpu()
    baked.extractor.bake_position_embeddings(side)
    baked = baked.to(device, dtype)
    latency = {}
    if "eager" in args.parts:
        latency["eager"] = host_latency_ms(torch_scorer(baked, device, dtype), pixels, repeats=args.repeats,
                                           device=device)
        fp32_baked = copy.deepcopy(baked).float()
        latency["eager_autocast"] = host_latency_ms(torch_scorer(fp32_baked, device, torch.float32,
                                                                 use_autocast=True), pixels,
                                                    repeats=args.repeats, device=device)
    if "compile" in args.parts:
        compiled = torch.compile(baked, mode=args.compile_mode)
        _, latency["compile_s"] = timed(lambda: torch_scorer(compiled, device, dtype)(pixels), device)
        latency["compile"] = host_latency_ms(torch_scorer(compiled, device, dtype), pixels, repeats=args.repeats,
                                             device=device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return latency


def onnx_part(ranker: ArtRanker, *, side: int, fp16: bool, pixels: torch.Tensor, reference: np.ndarray,
              repeats: int, device: torch.device) -> dict:
    # Imported here: the other parts do without onnx and onnxruntime.
    import onnxruntime

    from pipeline.export import export_ranker
    from pipeline.scoring import INPUT_NAME, onnx_session

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_ranker(ranker.cpu(), Path(tmp) / "ranker.onnx", side=side, fp16=fp16)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        session = onnx_session(path)
        session_s = time.perf_counter() - start

        def score(batch: torch.Tensor) -> np.ndarray:
            return session.run(None, {INPUT_NAME: batch.numpy()})[0]

        latency = host_latency_ms(score, pixels[:1], repeats=repeats, device=device)
        scores = score(pixels)
    return dict(latency_ms=latency, provider=session.get_providers()[0], onnxruntime=onnxruntime.__version__,
                precision="fp16" if fp16 else "fp32", export_s=export_s, session_s=session_s,
                max_abs_diff_vs_fp32=float(np.abs(scores - reference).max()), score_range=float(np.ptp(reference)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, backbone="large", size=768)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="extraction batch sizes")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to measure")
    parser.add_argument("--compile_mode", default="max-autotune-no-cudagraphs", help="torch.compile mode")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per figure, median reported")
    parser.add_argument("--out", default="bench/gpu_results.json", help="JSON results (default: %(default)s)")
    args = parser.parse_args()

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    if args.backbone == "large" and not cuda:
        raise SystemExit("ViT-L/14 needs a GPU (about 25 s per image at 768 on a 2-core CPU); "
                         "to check this script on a CPU: --backbone tiny --size 56 --device cpu --out /tmp/gpu.json")
    extractor = random_extractor(args.backbone).to(device)
    side = input_size(args.size, extractor.patch_size)
    flops = flops_per_image(extractor.backbone.config, side)
    name = torch.cuda.get_device_name(device) if cuda else "CPU (check run only: no GPU figures)"
    results = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), device=name,
                   torch=torch.__version__, transformers=transformers.__version__, backbone=args.backbone,
                   architecture=RANDOM_BACKBONES[args.backbone], weights="random", image_size=args.size,
                   input_side=side, attention=extractor.backbone.config._attn_implementation,
                   precision="fp16" if cuda else "fp32", flops_per_image=flops, not_measured=[])
    print(f"{args.backbone} DINOv2 (random weights) at {args.size} ({side} px input, {flops['tokens']:,} tokens, "
          f"{flops['total'] / 1e12:.3g} TFLOPs per image) on {name}, torch {torch.__version__}", flush=True)

    if "extract" in args.parts:
        results["extraction"] = measure_extraction(extractor, side=side, batches=args.batches, repeats=args.repeats,
                                                   flops=flops["total"], device=device)
        print_table(["batch", "ms per batch", "images/s", "TFLOP/s", "peak GPU memory allocated"],
                    [[r["batch"], f"{r['ms_per_batch']:.1f}", f"{r['images_per_s']:.1f}", f"{r['tflops']:.3g}",
                      f"{r['peak_gib']:.2f} GiB" if r["peak_gib"] is not None else "not measured (no GPU)"]
                     for r in results["extraction"]])

    torch.manual_seed(0)
    ranker = ArtRanker(extractor, RankingHead(input_dim=extractor.hidden_size), "cls").to(device).eval()
    pixels = torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(0))
    reference = torch_scorer(ranker, device, torch.float32)(pixels)
    latency = results["latency_batch1_ms"] = torch_latencies(ranker, side=side, pixels=pixels[:1], args=args,
                                                             device=device)
    if "compile" in latency:
        results["compile"] = dict(mode=args.compile_mode, compile_s=latency.pop("compile_s"))
    if "onnx" in args.parts:
        results["onnx"] = onnx_part(ranker, side=side, fp16=cuda, pixels=pixels, reference=reference,
                                    repeats=args.repeats, device=device)
        latency["onnx"] = results["onnx"]["latency_ms"]
    results["not_measured"] = [part for part in PARTS if part not in args.parts]

    label = "fp16" if cuda else "fp32"
    provider = results["onnx"]["provider"] if "onnx" in results else "CUDA EP" if cuda else "CPU EP"
    rows = [("onnx", f"ONNX, onnxruntime {provider}, {label}"),
            ("eager", f"PyTorch eager, {label} weights"),
            ("eager_autocast", "PyTorch eager, fp32 weights under fp16 autocast (as extraction runs)" if cuda else
             "PyTorch eager, autocast (off on CPU)"),
            ("compile", f"torch.compile({args.compile_mode}), {label} weights")]
    print_table(["batch-1 latency, host image to host score", "ms"],
                [[what, f"{latency[key]:.2f}" if key in latency else "not measured"] for key, what in rows])
    if "onnx" in results:
        print(f"ONNX: exported in {results['onnx']['export_s']:.0f} s, session in {results['onnx']['session_s']:.0f} "
              f"s; max |score - PyTorch fp32| {results['onnx']['max_abs_diff_vs_fp32']:.2e} on a score range of "
              f"{results['onnx']['score_range']:.2e} (4 random images)")
    if "compile" in results:
        print(f"torch.compile: {results['compile']['compile_s']:.0f} s to compile")
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    best = max(results.get("extraction", []), key=lambda r: r["images_per_s"], default=None)
    figures = [f"{key} {latency[key]:.2f} ms" for key, _ in rows if key in latency]
    if cuda and args.backbone == "large" and args.size == 768 and "onnx" in latency:
        figures[0] += f" (target under 15 ms: {'met' if latency['onnx'] < 15 else 'NOT met'})"
    print(f"gpu: {args.backbone} at {args.size} on {name}: "
          + (f"extraction {best['images_per_s']:.0f} images/s at batch {best['batch']} "
             f"({best['tflops']:.3g} TFLOP/s); " if best else "")
          + "batch-1 latency " + (", ".join(figures) or "not measured") + f"; JSON in {args.out}")


if __name__ == "__main__":
    main()
