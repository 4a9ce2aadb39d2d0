"""Pairwise ranking metrics computed from one score per image (NOTES.md 6).

A pair is two images of different tiers; it is ranked correctly when the higher tier has the
strictly higher score. Ties count as wrong, as in the spec's evaluator (4.5.1): a constant model
must not score 50%.
"""

import numpy as np
import torch
import torch.nn.functional as F

from data import TIER_RANK


def tier_ranks(tiers) -> np.ndarray:
    return np.asarray([TIER_RANK[t] for t in tiers], dtype=np.int64)


def in_batch_pair_loss(scores: torch.Tensor, ranks: torch.Tensor, margin: float) -> torch.Tensor:
    """MarginRankingLoss (spec 4.4.3) over every cross-tier pair among the images of a batch.

    Each image is scored once; a batch of 32 images yields up to 384 pairs instead of 32.
    """
    higher = ranks[:, None] > ranks[None, :]
    if not higher.any():
        return scores.sum() * 0.0  # keeps the graph: accumulate() and DDP expect a backward
    better, worse = torch.nonzero(higher, as_tuple=True)
    return F.margin_ranking_loss(scores[better], scores[worse], torch.ones_like(scores[better]), margin=margin)


@torch.no_grad()
def pair_loss_and_accuracy(scores: torch.Tensor, ranks: torch.Tensor, margin: float,
                           block: int = 1024) -> tuple[float, float, int]:
    """Mean margin loss, pairwise accuracy and pair count over all cross-tier pairs.

    Row blocks keep memory at block x N however many images there are.
    """
    scores, ranks = scores.float().flatten(), ranks.flatten()
    loss_sum, correct, pairs = 0.0, 0, 0
    for start in range(0, len(scores), block):
        s, r = scores[start:start + block, None], ranks[start:start + block, None]
        higher = r > ranks[None, :]
        gap = (s - scores[None, :])[higher]
        loss_sum += torch.clamp(margin - gap, min=0).sum().item()
        correct += int((gap > 0).sum())
        pairs += int(higher.sum())
    if pairs == 0:
        raise ValueError("no cross-tier pairs: every image has the same tier")
    return loss_sum / pairs, correct / pairs, pairs


def fit_calibration(scores: np.ndarray, tiers: np.ndarray, *, max_pairs: int = 200_000, seed: int = 42) -> dict:
    """Turn scores into what a user reads: P(A better) and a tier hint, fitted on validation images.

    P(A better than B) = sigmoid(slope * (score_A - score_B)): a logistic regression without intercept
    on the cross-tier pairs in both orientations, so P(A>B) + P(B>A) = 1 exactly. Tier cut points are
    the midpoints between the median scores of adjacent tiers present.
    """
    from sklearn.linear_model import LogisticRegression

    from data import TIERS, cross_tier_pairs

    a, b, label = cross_tier_pairs(tiers)
    if len(a) > max_pairs:
        keep = np.random.default_rng(seed).choice(len(a), max_pairs, replace=False)
        a, b, label = a[keep], b[keep], label[keep]
    diff = (scores[a] - scores[b]).astype(np.float64)
    x = np.concatenate([diff, -diff])[:, None]
    y = np.concatenate([label > 0, label < 0])
    slope = float(LogisticRegression(fit_intercept=False, C=1e6).fit(x, y).coef_[0, 0])
    medians = {t: float(np.median(scores[tiers == t])) for t in TIERS if (tiers == t).any()}
    present = [t for t in TIERS if t in medians]
    cuts = [{"above": upper, "below": lower, "threshold": (medians[upper] + medians[lower]) / 2}
            for upper, lower in zip(present, present[1:])]
    return {"slope": slope, "tier_medians": medians, "tier_cuts": cuts, "fitted_on": "val",
            "pairs": int(len(a)), "method": "logistic regression of tier order on score difference, no intercept"}
