"""Does the label audit rank planted label errors high? The demo data with a share of its train+val tiers flipped.

    python -m bench.label_audit --config configs/demo.json [--share 0.05] [--seeds 1 2 3] [--flip random]

Copies DATA_DIR's metadata.csv and comparisons.csv into a temporary folder (the images are linked, so the
feature cache of DATA_DIR serves the copy), moves --share of the train and val works to another tier (random: a
tier drawn uniformly from the three others; mirrored: S<->C, A<->B), builds the audit's fold heads exactly as
`review.py audit` does (model.fold_heads with the config's settings) and prints where the flipped works rank:
their median rank as a percentile of the audit (1% = the top), and how many lie in the top decile. The split
is the one of the copy (the split follows artists, not tiers, so it is the original's except where flipping
changes the tier mix the stratification sees).
"""

import argparse
import csv
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

OTHERS = {"random": None, "mirrored": {"S": "C", "C": "S", "A": "B", "B": "A"}}


def flipped_copy(data_dir: Path, out: Path, *, share: float, seed: int, flip: str, held: set[str]) -> set[str]:
    """A copy of data_dir with `share` of its works outside `held` (the test split's file names) given another
    tier; returns the file names flipped."""
    out.mkdir(parents=True)
    os.symlink((data_dir / "images").resolve(), out / "images")
    shutil.copy(data_dir / "comparisons.csv", out / "comparisons.csv")
    with open(data_dir / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    candidates = [i for i, row in enumerate(rows) if row["file_name"] not in held]
    chosen = rng.choice(candidates, size=round(share * len(candidates)), replace=False)
    for i in chosen:
        tier = rows[i]["tier"]
        rows[i]["tier"] = OTHERS[flip][tier] if OTHERS[flip] else rng.choice([t for t in "SABC" if t != tier])
    with open(out / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return {rows[i]["file_name"] for i in chosen}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.json")
    parser.add_argument("--share", type=float, default=0.05, help="share of train+val tiers flipped")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--flip", choices=list(OTHERS), default="random")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)

    import torch

    from data import load_images, split_rows, train_val_features
    from model import fold_heads
    from pipeline import cli
    from pipeline.config import load_config
    from pipeline.label_audit import audit_table
    from pipeline.tables import frame

    torch.set_num_threads(1)
    base = load_config(args.config)
    accelerator = cli.make_accelerator(base)
    test_names = set(frame(split_rows(load_images(base, accelerator), "test"))["file_name"])
    print("| seed | flipped | median rank of the flipped (percentile) | flipped in the top decile |\n|---|---|---|---|")
    medians = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            data = Path(tmp) / f"flipped-{seed}"
            flipped = flipped_copy(Path(base.data_dir), data, share=args.share, seed=seed, flip=args.flip,
                                   held=test_names)
            cfg = replace(base, data_dir=str(data), demo_data=False)
            rows, _, features, _, comparisons = train_val_features(cfg, [cfg.feature], accelerator)
            rows = frame(rows)
            table = audit_table(rows, fold_heads(cfg, features[cfg.feature], rows, comparisons, folds=args.folds),
                                comparisons)
            ranks = table.loc[table["file_name"].isin(flipped), "rank"].to_numpy()
            median = float(np.median(ranks)) / len(table)
            medians.append(median)
            print(f"| {seed} | {len(ranks)} of {len(table)} | {median:.1%} | "
                  f"{int((ranks <= 0.1 * len(table)).sum())} of {len(ranks)} |", flush=True)
    print(f"label_audit: {args.share:.0%} of train+val tiers flipped ({args.flip}), {len(args.seeds)} seed(s): median "
          f"rank of the flipped works at the {np.mean(medians):.1%} percentile on average "
          f"(target: top decile, <= 10%)")


if __name__ == "__main__":
    main()
