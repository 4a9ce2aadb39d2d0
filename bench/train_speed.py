"""Training speed: the spec's loop (backbone forward for every pair, 4.4) against ours (feature cache,
every cross-tier pair within a batch), on the same images and backbone.

    python -m bench.train_speed                                                  # CPU: tiny DINOv2 at 224
    python -m bench.train_speed --backbone large --size 768 --spec_batches 10    # GPU: ViT-L/14 at 768

Data: `--images` random images (preprocessed pixel tensors drawn from a pool of 64; speed does not
depend on the content) with random tiers, split 80/10/10. Decoding is left out of both ways, which
favours the spec's: it decodes two images per pair and epoch, ours each image once.
The spec's way: per batch of 32 pairs, the frozen backbone on both images (no_grad), the spec's
projector and -||emb|| score (RankingHead(score_head="norm")) and MarginRankingLoss. `--spec_batches`
batches are timed and extrapolated to an epoch of all cross-tier pairs of the training images (what
the spec's 4.4.2 builds) and to `--epochs` epochs: labelled extrapolated.
Ours, measured in full: every image through the backbone once, then train.py's own procedure
(model.HeadTraining: batches of 32 images, every cross-tier pair among them, AdamW, cosine schedule,
validation every epoch) on the cached features for exactly --epochs epochs, with our default linear score
head. fp16 autocast on CUDA for both ways.
Reads nothing, writes nothing; prints a table whose last line is a one-line summary.
"""

import argparse

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator

from bench.common import (
    add_model_arguments,
    autocast,
    duration,
    machine,
    pick_device,
    print_table,
    random_extractor,
    timed,
)
from model import HeadTraining, RankingHead
from pipeline.backbones import RANDOM_BACKBONES, DinoFeatureExtractor
from pipeline.config import Config
from pipeline.images import input_size
from pipeline.tables import TIERS, cross_tier_pairs, tier_ranks

VIT_L_WIDTH = RANDOM_BACKBONES["large"]["hidden_size"]


def pixel_pool(count: int, side: int, device: torch.device, seed: int) -> torch.Tensor:
    return torch.randn(count, 3, side, side, generator=torch.Generator().manual_seed(seed)).to(device)


def spec_seconds_per_batch(extractor: DinoFeatureExtractor, pool: torch.Tensor, tiers: np.ndarray, *,
                           batches: int, args, device: torch.device) -> tuple[float, int]:
    """The spec's 4.4 step, timed over `batches` batches of pairs after one warm-up batch.

    Returns (seconds per batch, cross-tier pairs of the training images).
    """
    a, b, label = cross_tier_pairs(tiers)
    picks = np.random.default_rng(args.seed).permutation(len(a))[:args.batch_size * (batches + 1)]
    torch.manual_seed(args.seed)
    head = RankingHead(input_dim=extractor.hidden_size, score_head="norm").to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    criterion = nn.MarginRankingLoss(margin=args.margin)

    def step(pick: np.ndarray) -> None:
        x_a, x_b = pool[torch.from_numpy(a[pick] % len(pool))], pool[torch.from_numpy(b[pick] % len(pool))]
        with torch.no_grad(), autocast(device):  # the frozen backbone, run again for every pair
            cls_a, cls_b = extractor(x_a)[0], extractor(x_b)[0]
        target = torch.from_numpy(label[pick]).float().to(device)
        loss = criterion(head(cls_a.float()), head(cls_b.float()), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    steps = np.array_split(picks, batches + 1)
    step(steps[0])
    _, seconds = timed(lambda: [step(pick) for pick in steps[1:]], device)
    return seconds / batches, len(a)


def extract_features(extractor: DinoFeatureExtractor, pool: torch.Tensor, count: int, *, batch_size: int,
                     device: torch.device) -> tuple[torch.Tensor, float]:
    """CLS features of `count` images, each through the backbone once (features.py's extract)."""
    def run() -> torch.Tensor:
        parts = []
        with torch.inference_mode(), autocast(device):
            for chunk in torch.arange(count).split(batch_size):
                parts.append(extractor(pool[chunk % len(pool)])[0].float().cpu())
        return torch.cat(parts)

    with torch.inference_mode(), autocast(device):
        extractor(pool[:batch_size])  # first-call setup (kernels, allocator) is not a per-image cost
    return timed(run, device)


def train_on_features(train_x: torch.Tensor, train_tiers: np.ndarray, val_x: torch.Tensor, val_tiers: np.ndarray, *,
                      args, device: torch.device) -> float:
    """train.py's own procedure (model.HeadTraining) on cached features for exactly `args.epochs` epochs: the
    stop rules are set never to fire. Returns wall seconds."""
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="fp16" if device.type == "cuda" else "no")
    cfg = Config(epochs=args.epochs, patience=args.epochs + 1, min_lr=0.0, batch_size=args.batch_size, lr=args.lr,
                 weight_decay=args.weight_decay, margin=args.margin, seed=args.seed)
    training = HeadTraining(cfg, accelerator, input_dim=train_x.shape[1])
    return timed(lambda: training.run(train_x, train_tiers, val_x, val_tiers), device)[1]


def in_batch_pairs_per_epoch(ranks: torch.Tensor, batch_size: int, seed: int) -> int:
    order = torch.randperm(len(ranks), generator=torch.Generator().manual_seed(seed))
    return sum(int((ranks[b][:, None] > ranks[b][None, :]).sum()) for b in order.split(batch_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, backbone="tiny", size=224)
    parser.add_argument("--images", type=int, default=2000, help="images in all, 80%% train (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=32, help="pairs (spec) or images (ours) per batch")
    parser.add_argument("--spec_batches", type=int, default=5, help="spec batches timed (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--margin", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    device = pick_device(args.device)
    extractor = random_extractor(args.backbone).to(device)
    side = input_size(args.size, extractor.patch_size)
    print(f"{args.backbone} DINOv2 (random weights) at {args.size} ({side} px input), {args.images} images, "
          f"{args.epochs} epochs, on {machine(device)}", flush=True)
    tiers = np.random.default_rng(args.seed).choice(list(TIERS), size=args.images)
    n_train, n_val = int(args.images * 0.8), int(args.images * 0.1)
    ranks = torch.from_numpy(tier_ranks(tiers))
    pool = pixel_pool(min(64, args.images), side, device, args.seed)

    per_batch, all_pairs = spec_seconds_per_batch(extractor, pool, tiers[:n_train], batches=args.spec_batches,
                                                  args=args, device=device)
    spec_epoch = per_batch * -(-all_pairs // args.batch_size)
    features, extract_seconds = extract_features(extractor, pool, args.images, batch_size=args.batch_size,
                                                 device=device)
    train_r = ranks[:n_train]
    train_tiers, val_tiers = tiers[:n_train], tiers[n_train:n_train + n_val]
    train_seconds = train_on_features(features[:n_train], train_tiers, features[n_train:n_train + n_val], val_tiers,
                                      args=args, device=device)
    ours_total = extract_seconds + train_seconds
    used_pairs = in_batch_pairs_per_epoch(train_r, args.batch_size, args.seed)

    extrapolated = f"(extrapolated from {args.spec_batches} batch{'es' if args.spec_batches > 1 else ''})"
    rows = [
        ["backbone passes", f"2 per pair: {2 * all_pairs:,} per epoch", f"1 per image: {args.images:,} in all"],
        ["pairs compared per epoch", f"{all_pairs:,} (all cross-tier pairs)", f"{used_pairs:,} (within batches)"],
        ["feature extraction", "inside every step", f"{duration(extract_seconds)} for {args.images:,} images"],
        ["one epoch", f"{duration(spec_epoch)} {extrapolated}", f"{duration(train_seconds / args.epochs)}"],
        [f"{args.epochs} epochs", f"{duration(spec_epoch * args.epochs)} {extrapolated}", duration(train_seconds)],
        [f"whole run: extraction + {args.epochs} epochs", f"{duration(spec_epoch * args.epochs)} {extrapolated}",
         f"{duration(ours_total)} (measured)"],
        ["pairs compared per second", f"{args.batch_size / per_batch:,.0f}",
         f"{used_pairs * args.epochs / train_seconds:,.0f}"],
    ]
    if extractor.hidden_size != VIT_L_WIDTH:  # the head's cost at ViT-L's feature width, the real run's
        wide = torch.randn(n_train + n_val, VIT_L_WIDTH, generator=torch.Generator().manual_seed(args.seed))
        wide_seconds = train_on_features(wide[:n_train], train_tiers, wide[n_train:], val_tiers, args=args,
                                         device=device)
        rows.append([f"{args.epochs} epochs, head at ViT-L width ({VIT_L_WIDTH}-d features)", "not measured",
                     duration(wide_seconds)])
    print_table(["", "spec's way (4.4: backbone per pair)", "ours (feature cache, in-batch pairs)"], rows)
    ratio = spec_epoch * args.epochs / ours_total
    print(f"train_speed: {args.epochs} epochs on {n_train:,} training images, {args.backbone} DINOv2 at {args.size} "
          f"on {device.type}: spec's way {duration(spec_epoch * args.epochs)} (extrapolated), ours "
          f"{duration(ours_total)} (measured, extraction included): {ratio:,.0f}x faster")


if __name__ == "__main__":
    main()
