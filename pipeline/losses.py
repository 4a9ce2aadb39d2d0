"""The losses a head trains on: pair losses over score gaps, within a batch and over a whole split, the tier
model's ordinal loss and the loss of the teachers' comparisons."""

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
    raise ValueError(f"unknown pair loss {loss!r}, expected 'margin' or 'logistic'")


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


def ordinal_loss_terms(scores: torch.Tensor, ranks: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """-log P(rank | score) of each image under the cumulative link (pipeline/ordinal.py).

    P(rank = r) = sigmoid(a) - sigmoid(b) with a = t_r - score, b = t_{r-1} - score (t_{-1} = -inf,
    t_3 = +inf), taken in logs as log sigmoid(a) + log sigmoid(-b) + log(1 - exp(b - a)): the difference of
    two probabilities near one would lose every digit.
    """
    infinite = scores.new_full((1,), float("inf"))
    bounds = torch.cat([-infinite, thresholds.to(scores), infinite])
    upper, lower = bounds[ranks + 1] - scores, bounds[ranks] - scores
    return -(F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper)))


def tier_objective(scores: torch.Tensor, ranks: torch.Tensor, thresholds: torch.Tensor | None, *, loss: str,
                   margin: float, ordinal_weight: float) -> torch.Tensor:
    """The training loss of a batch: the in-batch pair loss, the ordinal loss (loss "ordinal"), or the pair loss
    plus ordinal_weight x the ordinal loss."""
    if loss == "ordinal":
        return ordinal_loss_terms(scores, ranks, thresholds).mean()
    pair = in_batch_pair_loss(scores, ranks, margin, loss)
    return pair + ordinal_weight * ordinal_loss_terms(scores, ranks, thresholds).mean() if ordinal_weight else pair


@torch.no_grad()
def split_objective(scores: torch.Tensor, ranks: torch.Tensor, thresholds: torch.Tensor | None, *, loss: str,
                    margin: float, ordinal_weight: float) -> float:
    """The training objective over a whole split (every cross-tier pair, every image): the validation loss
    early stopping watches."""
    ordinal = (ordinal_loss_terms(scores.float(), ranks, thresholds).mean().item()
               if loss == "ordinal" or ordinal_weight else 0.0)
    if loss == "ordinal":
        return ordinal
    return all_pairs_loss(scores, ranks, margin, loss) + ordinal_weight * ordinal


def comparison_loss(score_a: torch.Tensor, score_b: torch.Tensor, outcome: torch.Tensor, weight: torch.Tensor,
                    margin: float, loss: str) -> torch.Tensor:
    """The weighted mean loss of teachers' comparisons: outcome 1 when image a won, -1 when b won, 0 a tie.

    A win is the tier pairs' loss (pair_loss_terms) of the winner-minus-loser gap. A tie:
    "logistic": half a win each way, 0.5 log(1 + exp(-gap)) + 0.5 log(1 + exp(gap)) (Bradley-Terry with
    the tie counted as half a win for each image), least at gap 0;
    "margin": max(0, |gap| - margin): a tie may lie up to `margin` apart, where a win starts to count as won.
    "ordinal" has no pair loss of its own: its comparisons take the logistic form, as its cumulative link is a
    logistic model of the same score.
    The mean is over the comparisons given, each weighted by `weight` (rater_weights: they average 1 over the
    whole training split, so a step's share stays unbiased).
    """
    loss = "logistic" if loss == "ordinal" else loss
    gap = (score_a - score_b) * torch.where(outcome == 0, torch.ones_like(outcome), outcome)
    won = pair_loss_terms(gap, margin, loss)
    if loss == "logistic":
        tied = 0.5 * (F.softplus(-gap) + F.softplus(gap))
    else:
        tied = torch.clamp(gap.abs() - margin, min=0)
    return (weight * torch.where(outcome == 0, tied, won)).sum() / max(1, len(outcome))
