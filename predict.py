"""Score drawings with a trained model: rank images, or say which of two is better.

    python predict.py --config configs/demo.json IMAGE... [--dir DIR] [--out scores.csv]
    python predict.py --config configs/demo.json --compare A.png B.png
    python predict.py --model runs/demo/model.onnx IMAGE...   (or model_fp16.onnx, or the folder)
    python predict.py --output_dir runs/demo --fp16 --provider cuda IMAGE...
    python predict.py --config configs/demo.json --torch IMAGE...

Reads OUTPUT_DIR/model.onnx and model.json (export_onnx.py) and runs them with onnxruntime; with --torch,
the checkpoint (OUTPUT_DIR/checkpoints/best or --checkpoint), its backbone and OUTPUT_DIR/calibration.json,
in PyTorch. Both give the same scores up to float rounding, so the same ranking.
Prints the images ranked by score (higher is better); --out writes file_name,score and, when the run has a
calibration, tier_hint: the tier whose band holds the score, the bands being the ordered cut points that
hint the most validation images their own tier (train.py fits them; every tier can be hinted). A hint,
not a grade. A tier model (loss ordinal, or ordinal_weight > 0) also gives P(S), P(A), P(B), P(C) per image
(columns P(S)..P(C), and on --compare), from its score and the three thresholds in model.json or its checkpoint;
its tier hint is then its most likely tier, and calibration.json's bands are not used for hints.
With the run's tier sets, column tier_set: the adjacent tiers that hold the true tier with probability at
least 1 - alpha (split conformal on validation; marginal, not per image: docs/uncertainty.md). With a run
keeping two or more checkpoints (top_k), column score_sd: the standard deviation of the score over the top-k
checkpoints' heads, from the same backbone pass. With the run's novelty threshold, column novelty (the cosine
distance of the image's feature to the nearest training image's) and unfamiliar ("yes" above the threshold,
which an image like the validation ones passes with probability <= novelty_alpha); a warning line names them.
The same functions are a Python API in artrank.py.
--compare prints which image is better and P(A better) = sigmoid(slope * (score_A - score_B)), the slope
fitted by train.py: a logistic regression without intercept of tier order on score difference over the
validation cross-tier pairs, each pair in both orders, so P(A better) + P(B better) = 1.
An unreadable image is reported on one line and the others are still scored; the exit status is then 1.
"""

import csv
import io
import sys
from pathlib import Path

from tqdm.auto import tqdm

from artrank import Ranker, run_scorer
from pipeline import cli
from pipeline.arguments import parse_config
from pipeline.config import PREDICT, print_config
from pipeline.errors import ArtrankError
from pipeline.files import atomic_write_text
from pipeline.ordinal import TIERS_WORST_FIRST
from pipeline.scoring import FILE_NAMES, PROVIDERS, Scorer, onnx_scorer, score_images
from pipeline.tier_sets import shown_set

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def compare(scorer: Scorer, path_a: str, path_b: str) -> None:
    result = Ranker(scorer, batch_size=2).compare(path_a, path_b)
    for letter, path, score, hint, tiers in (("A", path_a, result.score_a, result.tier_hint_a, result.tier_set_a),
                                             ("B", path_b, result.score_b, result.tier_hint_b, result.tier_set_b)):
        p_tier = result.p_tier_a if letter == "A" else result.p_tier_b
        shown = "  " + " ".join(f"P({tier}) {p:.3f}" for tier, p in p_tier.items()) if p_tier else ""
        held = f"  tier set {shown_set(tiers)}" if tiers else ""
        sd = result.score_sd_a if letter == "A" else result.score_sd_b
        spread = "" if sd is None else f" (sd {sd:.4f} over {scorer.members} checkpoints)"
        flagged = result.unfamiliar_a if letter == "A" else result.unfamiliar_b
        novelty = result.novelty_a if letter == "A" else result.novelty_b
        odd = f"  UNFAMILIAR (novelty {novelty:.4f}: unlike every training drawing)" if flagged else ""
        print(f"{letter} {score:+.4f}{spread}{f'  tier hint {hint}' if hint else ''}{held}{shown}{odd}  {path}")
    print("A and B score the same" if result.better is None else f"{result.better} is better")
    if result.p_a_better is None:
        print("P(A better) unavailable: this run has no calibration (train.py writes calibration.json)")
        return
    calibration = scorer.calibration
    print(f"P(A better than B) = {result.p_a_better:.4f}  (sigmoid({calibration['slope']:.4g} x "
          f"(score_A - score_B)); slope from a logistic regression without intercept of tier order on score "
          f"difference, {calibration['pairs']} {calibration.get('fitted_on', 'val')} cross-tier pairs in both orders)")


def image_paths(images: list[str], directory: str | None) -> list[tuple[str, str]]:
    """(path, name shown) of the images given and those under DIR (named relative to it)."""
    found = [(path, path) for path in images]
    if directory is not None:
        root = Path(directory)
        if not root.is_dir():
            raise ArtrankError(f"--dir {root}: not a directory")
        found += [(str(p), str(p.relative_to(root))) for p in sorted(root.rglob("*"))
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")]
        if len(found) == len(images):
            raise ArtrankError(f"--dir {root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def add_arguments(parser) -> None:
    parser.add_argument("images", nargs="*", help="image files to score")
    parser.add_argument("--dir", help="also score every image under this folder")
    parser.add_argument("--out", help="write the scores to this CSV "
                        "(file_name,score[,score_sd][,novelty,unfamiliar][,tier_hint][,tier_set][,P(S)..P(C)])")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="say which of two images is better")
    parser.add_argument("--model", help="an ONNX model with its model.json (default: OUTPUT_DIR/model.onnx)")
    parser.add_argument("--torch", action="store_true", help="run the PyTorch checkpoint instead of ONNX")
    parser.add_argument("--provider", default="auto", choices=["auto", *PROVIDERS],
                        help="onnxruntime execution provider (default: CUDA when a GPU is present, else CPU)")
    parser.add_argument("--fp16", action="store_true", help="run model_fp16.onnx beside model.onnx (GPUs)")
    parser.add_argument("--top", type=int, default=0, help="print only the N best and N worst (default: all)")


def main(argv: list[str] | None = None) -> None:
    with cli.one_line_errors():
        cfg, args = parse_config(__doc__, argv, script=PREDICT, add_arguments=add_arguments)
        if cfg.verbose:  # train.py prints it, once per run; stdout is the ranked table people read and pipe
            print_config(cfg, file=sys.stderr)
        if args.compare and (args.images or args.dir):
            raise ArtrankError("--compare takes exactly two images and no others")
        if not (args.compare or args.images or args.dir):
            raise ArtrankError("nothing to score: give IMAGE..., --dir DIR or --compare A B")
        if args.torch and args.model:
            raise ArtrankError("--model is an ONNX file; --torch runs the checkpoint of --config instead")
        if args.torch and (args.fp16 or args.provider != "auto"):
            raise ArtrankError("--fp16 and --provider choose how the ONNX export runs; --torch runs the checkpoint")
        scorer = run_scorer(cfg) if args.torch else onnx_scorer(args.model or Path(cfg.output_dir) / FILE_NAMES["fp32"],
                                                                provider=args.provider, fp16=args.fp16)
        print(f"model: {scorer.description}")
        if args.compare:
            compare(scorer, *args.compare)
            return
        named = image_paths(args.images, args.dir)
        errors = rank(scorer, named, batch_size=cfg.extract_batch_size, top=args.top, out=args.out)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if errors:
        raise SystemExit(1)


def rank(scorer: Scorer, named: list[tuple[str, str]], *, batch_size: int, top: int, out: str | None) -> list[str]:
    """Print the images ranked by score (the `top` best and worst, or all), write --out; returns the images
    that could not be scored."""
    with tqdm(total=len(named), desc="scoring", leave=False, disable=len(named) < 2 * batch_size) as bar:
        # Everything the model gives an image (its spread, its novelty) comes from the same backbone pass.
        values, errors = score_images(scorer, [path for path, _ in named], batch_size=batch_size, track=bar.update,
                                      model=scorer.readout)
    # Plain Python, not pandas: a table of names and numbers is not worth a third of a second of start-up.
    ranked = sorted(((name, dict(zip(scorer.columns, value))) for (_, name), value in zip(named, values)
                     if value is not None), key=lambda row: -row[1]["score"])  # stable: ties keep order
    ranker = Ranker(scorer)
    extra = [c for c in ("score_sd", "novelty") if c in scorer.columns]
    if "novelty" in extra and ranker.unfamiliar(0.0) is not None:
        extra.append("unfamiliar")
    hints = [ranker.tier_hint(r["score"]) for _, r in ranked] if scorer.calibration or scorer.tier_thresholds else None
    tiers = ([list(ranker.tier_probabilities(r["score"]).values()) for _, r in ranked]
             if scorer.tier_thresholds is not None else None)
    sets = ([shown_set(ranker.tier_set(r["score"])) for _, r in ranked]
            if (scorer.calibration or {}).get("tier_sets") else None)
    tier_columns = [f"P({tier})" for tier in reversed(TIERS_WORST_FIRST)] if tiers else []
    columns = ["rank", "file_name", "score"] + extra + (["tier_hint"] if hints else []) + (["tier_set"] if sets else [])
    columns += tier_columns

    def cells(i: int, name: str, read: dict, *, precise: bool) -> list[str]:
        """One image's row: rounded for the console, 6 digits for the CSV."""
        digits, p_digits = (6, 6) if precise else (4, 3)
        values = {name: f"{read[name]:.{digits}f}" for name in ("score_sd", "novelty") if name in read}
        values["unfamiliar"] = "yes" if ranker.unfamiliar(read.get("novelty", 0.0)) else "no"
        score = f"{read['score']:.6f}" if precise else f"{read['score']:+.4f}"
        return ([str(i + 1), name, score] + [values[c] for c in extra] + ([hints[i]] if hints else [])
                + ([sets[i]] if sets else []) + ([f"{p:.{p_digits}f}" for p in tiers[i]] if tiers else []))

    rows = [cells(i, name, read, precise=False) for i, (name, read) in enumerate(ranked)]
    if rows:
        shown_rows = rows if top <= 0 or len(rows) <= 2 * top else rows[:top] + rows[-top:]
        widths = [max(len(cell) for cell in column) for column in zip(columns, *shown_rows)]
        for line in [columns, *shown_rows]:
            print(" ".join(cell.rjust(width) for cell, width in zip(line, widths)))
        if len(shown_rows) < len(rows):
            print(f"(the {top} best and {top} worst of {len(rows)}; --top 0 shows all)")
    if "unfamiliar" in extra and (odd := [row[1] for row in rows if row[columns.index("unfamiliar")] == "yes"]):
        print(f"warning: {len(odd)} image(s) unlike every training drawing (novelty above "
              f"{scorer.calibration['novelty']['threshold']:.4f}); their scores are extrapolations: "
              + ", ".join(odd[:5]) + (" ..." if len(odd) > 5 else ""), file=sys.stderr)
    if out and rows:
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(columns[1:])
        writer.writerows(cells(i, name, read, precise=True)[1:] for i, (name, read) in enumerate(ranked))
        atomic_write_text(out, table.getvalue())
        print(f"wrote {out} ({len(rows)} images)")
    return errors


if __name__ == "__main__":
    main()
