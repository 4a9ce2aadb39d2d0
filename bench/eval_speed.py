"""Evaluation speed: the spec's per-pair evaluator (4.5.1) against scoring each image once.

    python -m bench.eval_speed                         # CPU: tiny DINOv2 at 224, 200 test images
    python -m bench.eval_speed --spec_pairs 0          # every pair through the spec's evaluator

One model (model.ArtRanker: a random-weight DINOv2 and a ranking head) and the same `--images`
random images with random tiers, preprocessed in memory: loading is left out of both ways.
The spec's evaluator (pipeline.metrics.spec_pairwise_accuracy) runs the ranker on both images of every pair,
one image at a time as the spec writes it; with `--spec_pairs` K > 0 it runs on K pairs drawn at
random and its time for all pairs is extrapolated (said so). Score-once runs every image through the
ranker once, in batches, then computes the accuracy over all pairs (metrics.pairwise_accuracy) and,
with the same evaluator on the looked-up scores, over the pairs the spec's evaluator saw. A hook on
the backbone counts the images it sees. fp16 autocast on CUDA.
Reads nothing, writes nothing; prints a table whose last line is a one-line summary.
"""

import argparse

import numpy as np
import torch

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
from model import ArtRanker, RankingHead
from pipeline.images import input_size
from pipeline.metrics import pairwise_accuracy, spec_pairwise_accuracy
from pipeline.tables import TIERS, cross_tier_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, backbone="tiny", size=224)
    parser.add_argument("--images", type=int, default=200, help="test images (default: %(default)s)")
    parser.add_argument("--spec_pairs", type=int, default=1000,
                        help="pairs run through the spec's evaluator; 0 = all (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=32, help="score-once batch (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    device = pick_device(args.device)
    extractor = random_extractor(args.backbone).to(device)
    ranker = ArtRanker(extractor, RankingHead(input_dim=extractor.hidden_size), "cls").to(device)
    side = input_size(args.size, extractor.patch_size)
    print(f"{args.backbone} DINOv2 (random weights) at {args.size} ({side} px input), {args.images} images, "
          f"on {machine(device)}", flush=True)
    rng = np.random.default_rng(args.seed)
    tiers = rng.choice(list(TIERS), size=args.images)
    images = torch.randn(args.images, 3, side, side, generator=torch.Generator().manual_seed(args.seed)).to(device)
    seen = []
    extractor.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))

    a, b, label = cross_tier_pairs(tiers)
    picks = np.arange(len(a)) if args.spec_pairs <= 0 else rng.permutation(len(a))[:args.spec_pairs]
    pairs = [(int(a[k]), int(b[k]), int(label[k])) for k in picks]

    @torch.inference_mode()
    def score(indices) -> torch.Tensor:
        with autocast(device):
            return ranker(images[indices]).float()

    score([0])  # first-call setup is not per-image cost
    seen.clear()
    spec_acc, spec_s = timed(lambda: spec_pairwise_accuracy(lambda i, j: (score([i]).item(), score([j]).item()),
                                                            pairs), device)
    spec_images, seen[:] = sum(seen), []

    def score_once() -> tuple[float, int, float]:
        scores = torch.cat([score(chunk) for chunk in torch.arange(args.images).split(args.batch_size)]).cpu().numpy()
        accuracy, all_pairs = pairwise_accuracy(scores, tiers)
        return accuracy, all_pairs, spec_pairwise_accuracy(lambda i, j: (scores[i], scores[j]), pairs)

    (once_acc, all_pairs, once_on_spec_pairs), once_s = timed(score_once, device)
    once_images = sum(seen)
    spec_all_s = spec_s * all_pairs / len(pairs)
    extrapolated = "" if len(pairs) == all_pairs else f"; all {all_pairs:,} pairs: {duration(spec_all_s)} " \
                                                      "(extrapolated)"
    print_table(["evaluator", "images through the backbone", "pairs", "wall time", "pairwise accuracy"], [
        ["spec 4.5.1: the ranker on both images of every pair", f"{spec_images:,} (2 per pair)", f"{len(pairs):,}",
         f"{duration(spec_s)} (measured){extrapolated}", f"{spec_acc:.4f}"],
        ["score once: one pass per image, then every pair", f"{once_images:,} ({once_images / args.images:g} per "
         f"image)", f"{all_pairs:,}", f"{duration(once_s)} (measured)",
         f"{once_acc:.4f}; on the spec's {len(pairs):,} pairs: {once_on_spec_pairs:.4f}"],
    ])
    same = "same accuracy" if once_on_spec_pairs == spec_acc else "ACCURACY DIFFERS"
    print(f"eval_speed: {args.images:,} images, {all_pairs:,} pairs, {args.backbone} DINOv2 at {args.size} on "
          f"{device.type}: spec's evaluator {duration(spec_all_s)}"
          f"{' (extrapolated)' if extrapolated else ''}, score once {duration(once_s)}: "
          f"{spec_all_s / once_s:,.0f}x faster; {same} on the same pairs ({spec_acc:.4f} vs "
          f"{once_on_spec_pairs:.4f}); {once_images / args.images:g} backbone pass per image")


if __name__ == "__main__":
    main()
