"""Compare the score heads (spec -||emb|| vs linear) and the input features (CLS vs CLS + mean patch).

    python -m bench.heads --config configs/demo.json --seeds 42 43 44 45 46

Trains every combination with train.py's own training function on the same data, once per seed (the
seed also draws the artist split, so the spread covers different held-out artists), and prints mean
and standard deviation of the val and test pairwise accuracy. Runs go to OUTPUT_DIR/heads/.
Features come from the feature cache, so only the first run pays for extraction.
"""

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import ConfigError, load_config  # noqa: E402
from train import training_function  # noqa: E402

COMBINATIONS = list(itertools.product(("cls", "cls_mean"), ("norm", "linear")))


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
    if args.epochs:
        base = replace(base, epochs=args.epochs)
    results = {}
    for (feature, head), seed in itertools.product(COMBINATIONS, args.seeds):
        run = Path(base.output_dir) / "heads" / f"{feature}-{head}-seed{seed}"
        cfg = replace(base, feature=feature, score_head=head, seed=seed, output_dir=str(run), wandb_mode="offline")
        metrics = training_function(cfg)
        results.setdefault((feature, head), []).append((metrics["val/pairwise_acc"], metrics["test/pairwise_acc"]))

    print(f"\n{base.backbone} at {base.image_size}px, data {base.data_dir}, seeds {args.seeds}")
    print(f"{'feature':<10} {'score head':<12} {'val acc':>16} {'test acc':>16}")
    for (feature, head), values in results.items():
        val, test = np.asarray(values).T
        print(f"{feature:<10} {head:<12} {val.mean():>8.3f} ± {val.std():.3f} {test.mean():>8.3f} ± {test.std():.3f}")
    best = max(results, key=lambda k: np.mean([v for v, _ in results[k]]))
    print(f"best by mean val accuracy: feature={best[0]} score_head={best[1]}")


if __name__ == "__main__":
    main()
