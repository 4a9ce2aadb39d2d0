"""How well a tier model names the tiers: its confusion matrix, exact and adjacent tier accuracy and the
quadratic weighted kappa, each with an interval from resampling artists (as the pairwise accuracy has it).

The predicted tier of an image is the tier of highest probability under the model (pipeline/ordinal.py).
Every figure comes from one confusion matrix, so a bootstrap resample is a weighted confusion matrix: an
artist drawn twice counts twice, as in metrics.artist_bootstrap_ci.
"""

import numpy as np

from .metrics import artist_draws, percentile_interval
from .ordinal import most_likely_tier, tier_probabilities
from .tables import TIERS, tier_ranks


def confusion_counts(true_tiers, predicted_tiers, weights: np.ndarray | None = None) -> np.ndarray:
    """(R, 4, 4) counts, rows the true tier and columns the predicted one, both in TIERS order (S first);
    `weights` (R, N) counts image i weights[r, i] times in resample r (default: once, R = 1)."""
    true_index = np.asarray([TIERS.index(t) for t in true_tiers])
    predicted_index = np.asarray([TIERS.index(t) for t in predicted_tiers])
    weights = np.ones((1, len(true_index)), np.int64) if weights is None else np.atleast_2d(weights)
    cells = np.zeros((len(true_index), len(TIERS) ** 2), np.int64)
    cells[np.arange(len(true_index)), true_index * len(TIERS) + predicted_index] = 1
    return (weights @ cells).reshape(len(weights), len(TIERS), len(TIERS))


def confusion_figures(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Exact accuracy, adjacent accuracy (at most one tier off) and quadratic weighted kappa of each (R, 4, 4)
    confusion matrix; NaN where undefined (no image, or every image and prediction in one tier)."""
    confusion = confusion.astype(np.float64)
    k = len(TIERS)
    distance = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :])
    total = confusion.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        exact = np.trace(confusion, axis1=1, axis2=2) / total
        adjacent = (confusion * (distance <= 1)).sum(axis=(1, 2)) / total
        weight = (distance / (k - 1)) ** 2
        expected = confusion.sum(axis=2)[:, :, None] * confusion.sum(axis=1)[:, None, :] / total[:, None, None]
        kappa = 1 - (weight * confusion).sum(axis=(1, 2)) / (weight * expected).sum(axis=(1, 2))
    return {"exact_accuracy": exact, "adjacent_accuracy": adjacent, "quadratic_kappa": kappa}


def tier_report(scores, tiers, artists, thresholds, *, resamples: int, seed: int, level: float = 0.95) -> dict:
    """The tier model's figures on one split, each with its artist-bootstrap interval (metrics.artist_draws: the same
    draws as the pairwise accuracy's interval for the same seed)."""
    predicted = most_likely_tier(tier_probabilities(scores, thresholds))
    point = confusion_counts(tiers, predicted)
    drawn, artist_of = artist_draws(artists, resamples=resamples, seed=seed)
    resampled = confusion_figures(confusion_counts(tiers, predicted, drawn[:, artist_of]))
    report = {"thresholds": [float(t) for t in thresholds], "predicted": "the most likely tier",
              "confusion": {"rows": "true tier", "columns": "predicted tier", "tiers": list(TIERS),
                            "counts": point[0].tolist()}}
    for name, value in confusion_figures(point).items():
        report[name], report[f"{name}_ci95"] = float(value[0]), percentile_interval(resampled[name], level)
    report["mean_absolute_tier_error"] = float(np.abs(tier_ranks(tiers) - tier_ranks(predicted)).mean())
    return report


TIER_FIGURES = ("exact_accuracy", "adjacent_accuracy", "quadratic_kappa")
FIGURE_NAMES = {"exact_accuracy": "exact tier", "adjacent_accuracy": "within one tier",
                "quadratic_kappa": "quadratic kappa"}


def tier_summary(report: dict) -> str:
    """The three figures with their intervals, in one line."""
    def one(name: str) -> str:
        value, (low, high) = report[name], report[f"{name}_ci95"]
        shown = "undefined" if value is None or not np.isfinite(value) else f"{value:.3f}"
        return f"{FIGURE_NAMES[name]} {shown}" + ("" if low is None else f" [{low:.3f}, {high:.3f}]")
    return " | ".join(one(name) for name in TIER_FIGURES)


def tier_figures(scores, tiers, thresholds) -> dict[str, float]:
    """Exact and adjacent tier accuracy and quadratic kappa of one set of images, without an interval (a
    cross-validation fold: the spread over folds is the interval there)."""
    predicted = most_likely_tier(tier_probabilities(scores, thresholds))
    return {name: float(value[0]) for name, value in confusion_figures(confusion_counts(tiers, predicted)).items()}
