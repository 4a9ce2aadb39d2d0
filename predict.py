"""Score drawings with a trained model: rank images, or say which of two is better.

    python predict.py --config configs/demo.json IMAGE... [--dir DIR] [--out scores.csv]
    python predict.py --config configs/demo.json --compare A.png B.png
    python predict.py --model runs/demo/model.onnx IMAGE...   (or model_fp16.onnx, or the folder)
    python predict.py --config configs/demo.json --torch IMAGE...

Reads OUTPUT_DIR/model.onnx and model.json (export_onnx.py) and runs them with onnxruntime; with --torch,
the checkpoint (OUTPUT_DIR/checkpoints/best or --checkpoint), its backbone and OUTPUT_DIR/calibration.json,
in PyTorch. Both give the same scores up to float rounding, so the same ranking.
Prints the images ranked by score (higher is better); --out writes file_name,score and, when the run has a
calibration, tier_hint: the tier whose band holds the score, bands cut halfway between the median
validation scores of adjacent tiers. A hint, not a grade.
--compare prints which image is better and P(A better) = sigmoid(slope * (score_A - score_B)), the slope
fitted by train.py: a logistic regression without intercept of tier order on score difference over the
validation cross-tier pairs, each pair in both orders, so P(A better) + P(B better) = 1.
An unreadable image is reported on one line and the others are still scored; the exit status is then 1.
"""

import json
import math
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from config import parse_config, print_config
from export_onnx import FILE_NAMES, MODEL_FORMAT, onnx_session
from images import IMAGENET_MEAN, IMAGENET_STD, PREPROCESSING_VERSION, load_pixels
from runfolder import atomic_write_text
from workflow import load_ranker, make_accelerator

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class Scorer:
    score: Callable[[np.ndarray], np.ndarray]  # preprocessed (batch, 3, S, S) float32 -> (batch,)
    image_size: int
    patch_size: int
    calibration: dict | None
    description: str


def onnx_scorer(path: Path) -> Scorer:
    """model.onnx (or model_fp16.onnx) and the model.json beside it; refuses a pair it cannot trust."""
    path = path / FILE_NAMES["fp32"] if path.is_dir() else path
    if not path.is_file():
        raise SystemExit(f"error: no ONNX model at {path}: run export_onnx.py with this config first, "
                         "or pass --model PATH/model.onnx, or --torch")
    meta_path = path.with_name("model.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"error: {meta_path}: cannot read the model description beside {path.name}: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise SystemExit(f"error: {meta_path}: model.json format {found!r}, this predict.py reads format "
                         f"{MODEL_FORMAT}; export again with this version's export_onnx.py")
    prep = meta["preprocessing"]
    if (prep["version"], tuple(prep["mean"]), tuple(prep["std"])) != (PREPROCESSING_VERSION, IMAGENET_MEAN,
                                                                      IMAGENET_STD):
        raise SystemExit(f"error: {meta_path}: preprocessing {prep['version']} with mean {prep['mean']} and std "
                         f"{prep['std']}, this code does {PREPROCESSING_VERSION} with ImageNet mean and std")
    try:
        session = onnx_session(path)
    except Exception as err:  # onnxruntime raises its own types for a corrupt or truncated file
        raise SystemExit(f"error: {path}: cannot load: {str(err).splitlines()[0]}") from None
    if session.get_modelmeta().custom_metadata_map.get("artrank.export_id") != meta["export_id"]:
        raise SystemExit(f"error: {path} and {meta_path} come from different exports; export again")
    input_name, output_name = meta["input"]["name"], meta["output"]["name"]
    return Scorer(score=lambda pixels: session.run([output_name], {input_name: pixels})[0],
                  image_size=prep["image_size"], patch_size=prep["patch_size"], calibration=meta["calibration"],
                  description=f"{path} (onnxruntime, {session.get_providers()[0]}; "
                              f"checkpoint epoch {meta['checkpoint']['epoch']})")


def torch_scorer(cfg) -> Scorer:
    """The run's checkpoint and backbone in PyTorch, fp32."""
    accelerator = make_accelerator(cfg)
    ranker, meta, checkpoint = load_ranker(cfg, accelerator)
    ranker = ranker.to(accelerator.device)
    calibration_json = Path(cfg.output_dir) / "calibration.json"

    @torch.inference_mode()
    def score(pixels: np.ndarray) -> np.ndarray:
        return ranker(torch.from_numpy(pixels).to(accelerator.device)).float().cpu().numpy()

    return Scorer(score=score, image_size=meta["image_size"], patch_size=meta["patch_size"],
                  calibration=json.loads(calibration_json.read_text()) if calibration_json.is_file() else None,
                  description=f"{checkpoint} (PyTorch, {accelerator.device}; epoch {meta.get('epoch')})")


def score_images(scorer: Scorer, paths: list[str], *, batch_size: int) -> tuple[dict[str, float], list[str]]:
    """Scores of the readable images, and one message per unreadable one."""
    def pixels_of(path: str) -> np.ndarray | str:
        try:
            return load_pixels(path, scorer.image_size, scorer.patch_size).numpy()
        except Exception as err:  # Pillow raises many types for corrupt data
            reason = str(err).splitlines()[0] if str(err) else ""
            return f"{path}: not a readable image: {type(err).__name__}: {reason}"

    scores, errors = {}, []
    with ThreadPoolExecutor(max_workers=4) as pool, tqdm(total=len(paths), desc="scoring", leave=False,
                                                         disable=len(paths) < 2 * batch_size) as progress:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            loaded = list(pool.map(pixels_of, chunk))
            good = [(path, pixels) for path, pixels in zip(chunk, loaded) if not isinstance(pixels, str)]
            errors += [message for message in loaded if isinstance(message, str)]
            if good:
                batch_scores = scorer.score(np.stack([pixels for _, pixels in good]))
                scores.update({path: float(s) for (path, _), s in zip(good, batch_scores)})
            progress.update(len(chunk))
    return scores, errors


def tier_hint(score: float, calibration: dict | None) -> str | None:
    cuts = (calibration or {}).get("tier_cuts") or []
    if not cuts:
        return None
    return next((cut["above"] for cut in cuts if score >= cut["threshold"]), cuts[-1]["below"])


def p_first_better(score_a: float, score_b: float, calibration: dict) -> float:
    """sigmoid(slope * (score_a - score_b)), as tanh: no overflow far out, and odd, so P(A) + P(B) = 1."""
    return 0.5 * (1.0 + math.tanh(0.5 * calibration["slope"] * (score_a - score_b)))


def compare(scorer: Scorer, path_a: str, path_b: str) -> None:
    scores, errors = score_images(scorer, [path_a, path_b], batch_size=2)
    if errors:
        raise SystemExit("error: " + "; ".join(errors))
    a, b = scores[path_a], scores[path_b]
    calibration = scorer.calibration
    for letter, path in (("A", path_a), ("B", path_b)):
        hint = tier_hint(scores[path], calibration)
        print(f"{letter} {scores[path]:+.4f}{f'  tier hint {hint}' if hint else ''}  {path}")
    print("A and B score the same" if a == b else f"{'A' if a > b else 'B'} is better")
    if calibration is None:
        print("P(A better) unavailable: this run has no calibration (train.py writes calibration.json)")
        return
    print(f"P(A better than B) = {p_first_better(a, b, calibration):.4f}  (sigmoid({calibration['slope']:.4g} x "
          f"(score_A - score_B)); slope from a logistic regression without intercept of tier order on score "
          f"difference, {calibration['pairs']} {calibration.get('fitted_on', 'val')} cross-tier pairs in both orders)")


def image_paths(images: list[str], directory: str | None) -> list[tuple[str, str]]:
    """(path, name shown) of the images given and those under DIR (named relative to it)."""
    found = [(path, path) for path in images]
    if directory is not None:
        root = Path(directory)
        if not root.is_dir():
            raise SystemExit(f"error: --dir {root}: not a directory")
        found += [(str(p), str(p.relative_to(root))) for p in sorted(root.rglob("*"))
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")]
        if len(found) == len(images):
            raise SystemExit(f"error: --dir {root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def add_arguments(parser) -> None:
    parser.add_argument("images", nargs="*", help="image files to score")
    parser.add_argument("--dir", help="also score every image under this folder")
    parser.add_argument("--out", help="write the scores to this CSV (file_name,score[,tier_hint])")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="say which of two images is better")
    parser.add_argument("--model", help="an ONNX model with its model.json (default: OUTPUT_DIR/model.onnx)")
    parser.add_argument("--torch", action="store_true", help="run the PyTorch checkpoint instead of ONNX")
    parser.add_argument("--top", type=int, default=0, help="print only the N best and N worst (default: all)")


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_config(__doc__, argv, add_arguments=add_arguments)
    print_config(cfg, file=sys.stderr)  # stdout is the ranked table people read and pipe
    if args.compare and (args.images or args.dir):
        raise SystemExit("error: --compare takes exactly two images and no others")
    if not (args.compare or args.images or args.dir):
        raise SystemExit("error: nothing to score: give IMAGE..., --dir DIR or --compare A B")
    if args.torch and args.model:
        raise SystemExit("error: --model is an ONNX file; --torch runs the checkpoint of --config instead")
    scorer = torch_scorer(cfg) if args.torch else onnx_scorer(Path(args.model or Path(cfg.output_dir)
                                                                   / FILE_NAMES["fp32"]))
    print(f"model: {scorer.description}")
    if args.compare:
        compare(scorer, *args.compare)
        return

    named = image_paths(args.images, args.dir)
    scores, errors = score_images(scorer, [path for path, _ in named], batch_size=cfg.extract_batch_size)
    table = pd.DataFrame([(name, scores[path]) for path, name in named if path in scores],
                         columns=["file_name", "score"]).sort_values("score", ascending=False, kind="stable")
    if scorer.calibration is not None and table.size:
        table["tier_hint"] = [tier_hint(s, scorer.calibration) for s in table.score]
    if table.size:
        ranked = table.assign(rank=range(1, len(table) + 1))[["rank", *table.columns]]
        shown = ranked if args.top <= 0 or len(ranked) <= 2 * args.top else pd.concat([ranked.head(args.top),
                                                                                        ranked.tail(args.top)])
        print(shown.to_string(index=False, formatters={"score": "{:+.4f}".format}))
        if len(shown) < len(ranked):
            print(f"(the {args.top} best and {args.top} worst of {len(ranked)}; --top 0 shows all)")
    if args.out and table.size:
        atomic_write_text(args.out, table.to_csv(index=False, float_format="%.6f"))
        print(f"wrote {args.out} ({len(table)} images)")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
