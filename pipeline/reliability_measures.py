"""Whether a printed P(A better) can be taken at its word: expected calibration error, Brier score and the
reliability diagram's bins, with the artist bootstrap interval of each.

The pairs are the split's cross-tier pairs (the higher tier is the better image) or the teachers' comparisons
of that split (a teacher's tie says neither image is better: ties are left out of both measures, and counted).
Each unordered pair is counted in BOTH orientations, (A, B) with P(A better) and (B, A) with 1 - P(A better),
so no measure depends on which image a table happens to name first. The predictor is symmetric, so the
diagram is symmetric about (0.5, 0.5) and the ECE over both orientations equals the ECE of every pair taken
once with its favourite first, binned from 0.5 to 1 (but for a P exactly on a bin edge); the Brier score is the
same over either.

ECE = sum over BINS equal-width bins of P in [0, 1] of (pairs in the bin / pairs) x |mean P - share won|;
the last bin holds P = 1. Brier = mean of (P - won)^2.

Every figure comes from sums per bin, so one resample of the artists (metrics.artist_draws) is those sums
weighted: a pair of images by artists x and y counts draws(x) x draws(y) times, as in the comparisons'
accuracy interval. The sums are first gathered per (artist of A, artist of B) cell, so a resample costs a
product with the cells, never a pass over the pairs.
"""

import numpy as np

from .metrics import artist_draws, percentile_interval
from .tier_sets import tier_set_summary

BINS = 10


def bin_index(p: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The equal-width bin of each probability: [0, 1/bins), ..., [1 - 1/bins, 1]."""
    return np.minimum((np.asarray(p, dtype=np.float64) * bins).astype(np.int64), bins - 1)


def cell_sums(p, won, cells: np.ndarray, n_cells: int, bins: int = BINS) -> dict[str, np.ndarray]:
    """Per cell and bin: the pairs, the sum of P and the pairs won, (n_cells, bins); and per cell the sum of
    squared errors (n_cells,)."""
    p, won = np.asarray(p, dtype=np.float64), np.asarray(won, dtype=np.float64)
    where = np.asarray(cells, dtype=np.int64) * bins + bin_index(p, bins)

    def gathered(values):
        return np.bincount(where, weights=values, minlength=n_cells * bins).reshape(n_cells, bins)

    return dict(count=gathered(np.ones_like(p)), p=gathered(p), won=gathered(won),
                squared=np.bincount(cells, weights=(p - won) ** 2, minlength=n_cells))


def measures_of(sums: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """ECE and Brier score for each row of `weights` (R, n_cells), and the bins summed; NaN where a row
    weighs no pair."""
    count, p, won = (weights @ sums[k] for k in ("count", "p", "won"))
    total = count.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ece = np.abs(won - p).sum(axis=1) / total
        brier = (weights @ sums["squared"]) / total
    return dict(ece=ece, brier=brier, count=count, p=p, won=won)


def expected_calibration_error(p, won, bins: int = BINS) -> float:
    """ECE of probabilities `p` of events `won` (1 or 0), over `bins` equal-width bins."""
    return float(measures_of(cell_sums(p, won, np.zeros(len(p), np.int64), 1, bins), np.ones((1, 1)))["ece"][0])


def brier_score(p, won) -> float:
    """Mean squared difference between the probability and the outcome (1 or 0)."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(won, dtype=np.float64)) ** 2))


def both_orientations(p_a, a_won, artist_a, artist_b) -> tuple[np.ndarray, ...]:
    """Each pair as (A, B) and as (B, A): probabilities, outcomes, first and second artist."""
    p_a, a_won = np.asarray(p_a, dtype=np.float64), np.asarray(a_won, dtype=np.float64)
    return (np.concatenate([p_a, 1 - p_a]), np.concatenate([a_won, 1 - a_won]),
            np.concatenate([artist_a, artist_b]), np.concatenate([artist_b, artist_a]))


def judged_pairs(comparisons, position: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The teachers' comparisons as pairs of positions (image_a, image_b) with whether image_a won, and the
    number of ties, which are left out: a tie says neither image is better."""
    wins = comparisons[comparisons["winner"] != "tie"]
    first, second = (wins[side].map(position).to_numpy(np.int64) for side in ("image_a", "image_b"))
    return first, second, (wins["winner"] == "a").to_numpy(), int(len(comparisons) - len(wins))


def pair_calibration(p_a, a_won, artist_a, artist_b, *, resamples: int, seed: int, bins: int = BINS,
                     level: float = 0.95, chunk: int = 250) -> dict | None:
    """ECE and Brier score of P(A better) on pairs (each given once; counted in both orientations), with their
    artist bootstrap intervals and the reliability diagram's bins; None without a pair."""
    if len(p_a) == 0:
        return None
    p, won, first, second = both_orientations(p_a, a_won, artist_a, artist_b)
    drawn, artist_of = artist_draws(np.concatenate([first, second]), resamples=resamples, seed=seed)
    # the (first artist, second artist) cells that hold a pair
    occupied, cell_of = np.unique(np.stack([artist_of[:len(p)], artist_of[len(p):]]), axis=1, return_inverse=True)
    sums = cell_sums(p, won, cell_of.ravel(), occupied.shape[1], bins)
    point = measures_of(sums, np.ones((1, occupied.shape[1])))
    resampled = {"ece": [], "brier": []}
    for block in np.array_split(drawn, max(1, len(drawn) // chunk)):  # (chunk, cells) at a time
        figures = measures_of(sums, (block[:, occupied[0]] * block[:, occupied[1]]).astype(np.float64))
        for name, values in resampled.items():
            values.append(figures[name])
    resampled = {name: np.concatenate(values) for name, values in resampled.items()}
    count = point["count"][0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, share_won = point["p"][0] / count, point["won"][0] / count
    return dict(ece=float(point["ece"][0]), ece_ci95=percentile_interval(resampled["ece"], level),
                brier=float(point["brier"][0]), brier_ci95=percentile_interval(resampled["brier"], level),
                n_pairs=int(len(p_a)), bins=bins, orientation="both",
                diagram=dict(low=[k / bins for k in range(bins)], count=[int(c) for c in count],
                             mean_p=[float(v) if c else None for v, c in zip(mean_p, count)],
                             share_won=[float(v) if c else None for v, c in zip(share_won, count)]))


def calibration_summary(report: dict | None, what: str) -> str | None:
    """One line: ECE and Brier score with their intervals, or None without a report."""
    if not report:
        return None

    def with_interval(name: str) -> str:
        low, high = report[f"{name}_ci95"]
        return f"{report[name]:.3f}" + ("" if low is None else f" [{low:.3f}, {high:.3f}]")

    return (f"{what}: ECE {with_interval('ece')} ({report['bins']} equal-width bins), Brier "
            f"{with_interval('brier')} over {report['n_pairs']:,} pairs, both orientations")


def reliability_lines(reliability: dict) -> list[str]:
    """The calibration of P(A better) and the tier sets' coverage, a line each (none without a calibration)."""
    lines = [calibration_summary(reliability["cross_tier"], "P(A better) on cross-tier pairs"),
             calibration_summary(reliability["comparisons"], "P(A better) on teachers' comparisons (ties left out)"),
             tier_set_summary(reliability["tier_sets"])]
    return [line for line in lines if line] or ["no calibration for these scores: P(A better) and tier sets not "
                                                "measured"]
