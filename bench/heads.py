"""Compare the score heads (spec -||emb|| vs linear) and the input features (CLS vs CLS + mean patch).

    python -m bench.heads --config configs/demo.json --seeds 42 43 44 45 46

Runs train.py for every combination on the same data, once per seed (the seed also draws the artist split,
so the spread covers different held-out artists), and prints the mean and sample standard deviation of the val
and test pairwise accuracy that each run wrote into its final_metrics.json. The runs go to
OUTPUT_DIR/heads/ (a rerun replaces them); features come from the feature cache, so only the first run
pays for extraction.
"""

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
COMBINATIONS = list(itertools.product(("cls", "cls_mean"), ("norm", "linear")))


def train(config: str, run: Path, *overrides: str) -> dict:
    """train.py with `overrides` into `run`; its final metrics."""
    command = [sys.executable, str(ROOT / "train.py"), "--config", config, "--output_dir", str(run),
               "--wandb_mode", "offline", "--overwrite_output_dir", *overrides]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return json.loads((run / "final_metrics.json").read_text())


def spread(values: np.ndarray) -> str:
    """The sample standard deviation over seeds, as cross-validation reports it over folds; one seed has none."""
    return f"{values.std(ddof=1):.3f}" if len(values) > 1 else "  -  "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46])
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    args = parser.parse_args()
    try:
        base = load_config(args.config)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    results = {}
    for (feature, head), seed in itertools.product(COMBINATIONS, args.seeds):
        run = Path(base.output_dir) / "heads" / f"{feature}-{head}-seed{seed}"
        epochs = ["--epochs", str(args.epochs)] if args.epochs else []
        metrics = train(args.config, run, "--feature", feature, "--score_head", head, "--seed", str(seed), *epochs)
        results.setdefault((feature, head), []).append((metrics["val/pairwise_acc"], metrics["test/pairwise_acc"]))
        print(f"feature={feature} score_head={head} seed={seed}: val {metrics['val/pairwise_acc']:.3f}, test "
              f"{metrics['test/pairwise_acc']:.3f}", flush=True)

    print(f"\n{base.backbone} at {base.image_size}px, data {base.data_dir}, seeds {args.seeds}")
    print(f"{'feature':<10} {'score head':<12} {'val acc':>16} {'test acc':>16}")
    for (feature, head), values in results.items():
        val, test = np.asarray(values).T
        print(f"{feature:<10} {head:<12} {val.mean():>8.3f} ± {spread(val)} {test.mean():>8.3f} ± {spread(test)}")
    best = max(results, key=lambda k: np.mean([v for v, _ in results[k]]))
    print(f"best by mean val accuracy: feature={best[0]} score_head={best[1]}")


if __name__ == "__main__":
    main()
