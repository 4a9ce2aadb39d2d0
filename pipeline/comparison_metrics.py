"""How well scores agree with the teachers' held-out comparisons, and how well the teachers agree with each
other (the ceiling a model can be held to).

A comparison is ranked correctly when its winner has the strictly higher score (equal scores count wrong,
as in the tier pairs' accuracy). A tie judged by a teacher says nothing about which image is better, so
ties are left out of every accuracy and of the agreement, and counted beside them.
"""

from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from .metrics import artist_draws

if TYPE_CHECKING:
    import pandas as pd


def correct_and_kept(scores: dict, comparisons: "pd.DataFrame") -> tuple[np.ndarray, np.ndarray]:
    """Per comparison: whether the scores (by image_id) rank its winner above its loser, and whether it is a
    win (not a tie)."""
    kept = (comparisons["winner"] != "tie").to_numpy()
    a = comparisons["image_a"].map(scores).to_numpy(np.float64)
    b = comparisons["image_b"].map(scores).to_numpy(np.float64)
    sign = np.where(comparisons["winner"] == "a", 1.0, -1.0)
    return (sign * (a - b) > 0) & kept, kept


def accuracy_figures(scores: dict, comparisons: "pd.DataFrame", tiers: dict) -> dict:
    """Accuracy over the comparisons' wins, overall, per rater and within one tier (the pairs tiers cannot
    order), with their counts and correct_and_kept's two arrays; `scores`, `tiers` map image_id to each."""
    correct, kept = correct_and_kept(scores, comparisons)
    within = np.array([tiers[a] == tiers[b] for a, b in zip(comparisons["image_a"], comparisons["image_b"])], bool)

    def share(mask) -> tuple[float | None, int]:
        n = int((mask & kept).sum())
        return (float(correct[mask].sum() / n) if n else None), n

    accuracy, n = share(np.ones(len(comparisons), bool))
    per_rater = {rater: share((comparisons["rater"] == rater).to_numpy())
                 for rater in sorted(set(comparisons["rater"]))}
    within_accuracy, within_n = share(within)
    return dict(accuracy=accuracy, n_comparisons=n, n_ties=int((~kept).sum()),
                per_rater={r: a for r, (a, _) in per_rater.items()},
                per_rater_n={r: m for r, (_, m) in per_rater.items()},
                within_tier=within_accuracy, within_tier_n=within_n, correct=correct, kept=kept)


def comparison_accuracy(scores: dict, comparisons: "pd.DataFrame", tiers: dict, artists: dict, *, resamples: int,
                        seed: int, level: float = 0.95) -> dict:
    """accuracy_figures with the artist bootstrap interval of the overall accuracy and the raters' agreement;
    `artists` maps image_id to artist."""
    figures = accuracy_figures(scores, comparisons, tiers)
    correct, kept = figures.pop("correct"), figures.pop("kept")
    return dict(figures, ci95=artist_bootstrap(correct, kept, comparisons, artists, resamples=resamples, seed=seed,
                                               level=level),
                ties="left out (counted in n_ties)", agreement=rater_agreement(comparisons))


def artist_bootstrap(correct: np.ndarray, kept: np.ndarray, comparisons: "pd.DataFrame", artists: dict, *,
                     resamples: int, seed: int, level: float) -> list | None:
    """Percentile interval of the accuracy, resampling artists with replacement as the tier pairs' interval
    does (metrics.artist_draws): a comparison counts once per draw of each of its two artists (the
    product of their draws), so an artist drawn twice counts twice. None without a win to count."""
    if not kept.any():
        return None
    drawn, index = artist_draws(np.concatenate([comparisons["image_a"].map(artists),
                                                comparisons["image_b"].map(artists)]), resamples=resamples, seed=seed)
    of_a, of_b = index[:len(comparisons)], index[len(comparisons):]
    weight = drawn[:, of_a] * drawn[:, of_b] * kept
    total = weight.sum(axis=1)
    accuracies = (weight * correct).sum(axis=1)[total > 0] / total[total > 0]
    low, high = np.quantile(accuracies, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


def rater_agreement(comparisons: "pd.DataFrame") -> dict:
    """How often two raters who both judged a pair (each a win, not a tie) named the same winner: over every
    pair of raters on every such pair of images."""
    import pandas as pd

    wins = comparisons[comparisons["winner"] != "tie"]
    pair = ["\t".join(sorted(p)) for p in zip(wins["image_a"], wins["image_b"])]
    winner = np.where(wins["winner"] == "a", wins["image_a"], wins["image_b"])
    judged = pd.DataFrame({"pair": pair, "rater": wins["rater"].to_numpy(), "winner": winner}).drop_duplicates(
        ["pair", "rater"])
    agree = pairs = 0
    images = set()
    for pair, verdicts in judged.groupby("pair"):
        for x, y in combinations(verdicts["winner"], 2):
            agree, pairs = agree + (x == y), pairs + 1
            images.add(pair)
    return dict(agreement=agree / pairs if pairs else None, n_rater_pairs=pairs, n_image_pairs=len(images))


def comparison_summary(report: dict | None, split: str) -> list[str]:
    """The comparison figures in words, for the console and the model card; nothing without comparisons."""
    if not report or report["n_comparisons"] == 0:
        return []
    ci = f", 95% CI [{report['ci95'][0]:.3f}, {report['ci95'][1]:.3f}] (artists resampled)" if report["ci95"] else ""
    within = (f"{report['within_tier']:.3f} ({report['within_tier_n']})" if report["within_tier_n"] else "none")
    agreement = report["agreement"]
    ceiling = (f"{agreement['agreement']:.3f} over {agreement['n_rater_pairs']} pairs of raters on "
               f"{agreement['n_image_pairs']} image pairs" if agreement["n_rater_pairs"] else "no pair judged twice")
    raters = " | ".join(f"{r} {a:.3f} ({report['per_rater_n'][r]})" for r, a in report["per_rater"].items()
                        if a is not None)
    return [f"{split} comparisons: accuracy {report['accuracy']:.4f} over {report['n_comparisons']} teachers' "
            f"judgements{ci}; {report['n_ties']} ties left out",
            f"  within one tier {within} | per rater: {raters}",
            f"  raters agree (the ceiling): {ceiling}"]
