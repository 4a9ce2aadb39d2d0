"""Scale: time and memory of the split, of pair generation and of one training epoch at 2k, 20k and 200k images.

    python -m bench.scale                          # 2,000, 20,000 and 200,000 images
    python -m bench.scale --sizes 200 2000         # CI-sized

No images: a synthetic table (random tiers, `--per_artist` works per artist) and random features of
ViT-L's width (1024), made before anything is measured. For each size:
- split_by_artist, as every script runs it;
- pair generation as training uses it: one epoch's batches of 32 training images, with every
  cross-tier pair among each batch's images enumerated by data.cross_tier_pairs;
- one training epoch: train.py's own procedure (bench.train_speed.train_on_features) on the features,
  validation included;
- the full cross-tier pair table of the training images, what the spec's 4.4.2 builds for every
  epoch: materialised by data.cross_tier_pairs up to `--materialise_max` pairs; above that only its
  count (by formula) and its size at 17 bytes a pair (two int64 indices and an int8 label), said so.
The memory method is printed (bench.common.MEMORY_METHOD). Reads nothing, writes nothing; prints a
table whose last line is a one-line summary.
"""

import argparse

import numpy as np
import pandas as pd
import torch

from bench.common import MEMORY_METHOD, duration, machine, measure, print_table, size
from bench.train_speed import VIT_L_WIDTH, train_on_features
from data import split_by_artist
from pipeline.tables import TIERS, cross_tier_pairs

PAIR_BYTES = 8 + 8 + 1


def synthetic_table(n: int, *, per_artist: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    artists = rng.permutation(n) // per_artist
    return pd.DataFrame({"image_id": [f"img{i:07d}" for i in range(n)], "tier": rng.choice(list(TIERS), size=n),
                         "artist": [f"artist{a:06d}" for a in artists]})


def in_batch_pairs(tiers: np.ndarray, *, batch_size: int, seed: int) -> int:
    """One epoch's pairs as training compares them: every cross-tier pair within each batch."""
    order = np.random.default_rng(seed).permutation(len(tiers))
    return sum(len(cross_tier_pairs(tiers[order[i:i + batch_size]])[0]) for i in range(0, len(tiers), batch_size))


def full_pair_count(tiers: np.ndarray) -> int:
    counts = np.unique(tiers, return_counts=True)[1].astype(object)  # Python ints: no overflow
    return int((sum(counts) ** 2 - sum(c * c for c in counts)) // 2)


def cell(seconds: float, peak: int) -> str:
    return f"{duration(seconds)} / {size(peak)}"


def measure_size(n: int, args) -> dict:
    table = synthetic_table(n, per_artist=args.per_artist, seed=args.seed)
    split, split_s, split_mem = measure(lambda: split_by_artist(table, seed=args.seed))
    train_tiers = table.tier[split == "train"].to_numpy()
    val_tiers = table.tier[split == "val"].to_numpy()
    generator = torch.Generator().manual_seed(args.seed)
    train_x = torch.randn(len(train_tiers), VIT_L_WIDTH, generator=generator)
    val_x = torch.randn(len(val_tiers), VIT_L_WIDTH, generator=generator)
    used, pairs_s, pairs_mem = measure(lambda: in_batch_pairs(train_tiers, batch_size=args.batch_size,
                                                              seed=args.seed))
    epoch_args = argparse.Namespace(epochs=1, batch_size=args.batch_size, lr=1e-4, weight_decay=0.01, margin=1.0,
                                    seed=args.seed)
    _, epoch_s, epoch_mem = measure(lambda: train_on_features(train_x, train_tiers, val_x, val_tiers, args=epoch_args,
                                                              device=torch.device("cpu")))
    full = full_pair_count(train_tiers)
    if full <= args.materialise_max:
        pairs, full_s, full_mem = measure(lambda: cross_tier_pairs(train_tiers))
        assert len(pairs[0]) == full
        del pairs
        full_cell = f"{full:,} pairs: {cell(full_s, full_mem)}"
    else:
        full_s = None
        full_cell = f"{full:,} pairs: not materialised; would hold {size(full * PAIR_BYTES)}"
    return dict(n=n, train=len(train_tiers), split=cell(split_s, split_mem), used=used, pairs_s=pairs_s,
                pairs=cell(pairs_s, pairs_mem), epoch_s=epoch_s, epoch=cell(epoch_s, epoch_mem), full=full,
                full_s=full_s, full_cell=full_cell)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 200000], help="images in all")
    parser.add_argument("--per_artist", type=int, default=8, help="works per artist (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--materialise_max", type=int, default=100_000_000,
                        help="largest full pair table built for real (default: %(default)s pairs)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    print(f"on {machine(torch.device('cpu'))}\nmemory: {MEMORY_METHOD}\n", flush=True)
    results = [measure_size(n, args) for n in sorted(args.sizes)]
    print_table(["images", "train images", "split_by_artist (time / memory)", "pairs used per epoch",
                 "pair generation as training uses it", "one training epoch",
                 "full cross-tier pair table (spec 4.4.2)"],
                [[f"{r['n']:,}", f"{r['train']:,}", r["split"], f"{r['used']:,}", r["pairs"], r["epoch"],
                  r["full_cell"]] for r in results])
    first, last = results[0], results[-1]
    print(f"scale: {first['n']:,} -> {last['n']:,} images (x{last['n'] / first['n']:.0f}): pairs used per epoch "
          f"x{last['used'] / first['used']:.0f}, pair generation x{last['pairs_s'] / first['pairs_s']:.0f} and "
          f"one epoch x{last['epoch_s'] / first['epoch_s']:.0f} in time; the full pair table "
          f"x{last['full'] / first['full']:,.0f} in pairs")


if __name__ == "__main__":
    main()
