"""The losses a head trains on: pair losses over score gaps, within a batch and over a whole split, and the
loss of the teachers' comparisons."""

import torch
import torch.nn.functional as F


def pair_loss_terms(gap: torch.Tensor, margin: float, loss: str) -> torch.Tensor:
    """The loss of each pair from its score gap (better minus worse image).

    "margin": the spec's MarginRankingLoss (4.4.3), max(0, margin - gap): zero once a pair is `margin` apart.
    "logistic": RankNet's log(1 + exp(-gap)), the negative log-likelihood of P(better) = sigmoid(gap); it
    never stops pulling pairs apart and matches the logistic calibration of the scores. Ignores `margin`.
    """
    if loss == "margin":
        return torch.clamp(margin - gap, min=0)
    if loss == "logistic":
        return F.softplus(-gap)
    raise ValueError(f"unknown loss {loss!r}, expected 'margin' or 'logistic'")


def in_batch_pair_loss(scores: torch.Tensor, ranks: torch.Tensor, margin: float, loss: str) -> torch.Tensor:
    """The pair loss averaged over every cross-tier pair among the images of a batch.

    Each image is scored once; a batch of 32 images yields up to 384 pairs instead of 32.
    """
    higher = ranks[:, None] > ranks[None, :]
    if not higher.any():
        return scores.sum() * 0.0  # keeps the graph: accumulate() and DDP expect a backward
    better, worse = torch.nonzero(higher, as_tuple=True)
    return pair_loss_terms(scores[better] - scores[worse], margin, loss).mean()


@torch.no_grad()
def all_pairs_loss(scores: torch.Tensor, ranks: torch.Tensor, margin: float, loss: str, block: int = 1024) -> float:
    """The mean pair loss over all cross-tier pairs of a split: the validation loss early stopping watches.

    Row blocks keep memory at block x N however many images there are.
    """
    scores, ranks = scores.float().flatten(), ranks.flatten()
    loss_sum, pairs = 0.0, 0
    for start in range(0, len(scores), block):
        higher = ranks[start:start + block, None] > ranks[None, :]
        gap = (scores[start:start + block, None] - scores[None, :])[higher]
        loss_sum += pair_loss_terms(gap, margin, loss).sum().item()
        pairs += int(higher.sum())
    if pairs == 0:
        raise ValueError("no cross-tier pairs: every image has the same tier")
    return loss_sum / pairs


def comparison_loss(score_a: torch.Tensor, score_b: torch.Tensor, outcome: torch.Tensor, weight: torch.Tensor,
                    margin: float, loss: str) -> torch.Tensor:
    """The weighted mean loss of teachers' comparisons: outcome 1 when image a won, -1 when b won, 0 a tie.

    A win is the tier pairs' loss (pair_loss_terms) of the winner-minus-loser gap. A tie:
    "logistic": half a win each way, 0.5 log(1 + exp(-gap)) + 0.5 log(1 + exp(gap)) (Bradley-Terry with
    the tie counted as half a win for each image), least at gap 0;
    "margin": max(0, |gap| - margin): a tie may lie up to `margin` apart, where a win starts to count as won.
    The mean is over the comparisons given, each weighted by `weight` (rater_weights: they average 1 over the
    whole training split, so a step's share stays unbiased).
    """
    gap = (score_a - score_b) * torch.where(outcome == 0, torch.ones_like(outcome), outcome)
    won = pair_loss_terms(gap, margin, loss)
    if loss == "logistic":
        tied = 0.5 * (F.softplus(-gap) + F.softplus(gap))
    else:
        tied = torch.clamp(gap.abs() - margin, min=0)
    return (weight * torch.where(outcome == 0, tied, won)).sum() / max(1, len(outcome))
