"""What a user reads off the scores: P(A better than B) and a tier hint, fitted on the validation split.

train.py fits them once, on the best checkpoint's validation scores, and writes OUTPUT_DIR/calibration.json;
evaluation, export, the model card and prediction read that file through `read_calibration`.
"""

import os
from pathlib import Path

import numpy as np

from .errors import ArtrankError
from .files import atomic_write_json
from .provenance import MADE_FROM, load_artifact, made_from, run_origin
from .tables import TIERS, cross_tier_pairs

CALIBRATION_JSON = "calibration.json"


def fit_calibration(scores: np.ndarray, tiers: np.ndarray, *, max_pairs: int = 200_000, seed: int = 42) -> dict:
    """Turn scores into what a user reads: P(A better) and a tier hint, fitted on validation images.

    P(A better than B) = sigmoid(slope * (score_A - score_B)): a logistic regression without intercept
    on the cross-tier pairs in both orientations, so P(A>B) + P(B>A) = 1 exactly. Tier cut points are
    the ordered thresholds that hint the most validation images their own tier (fit_tier_cuts).
    """
    from sklearn.linear_model import LogisticRegression

    a, b, label = cross_tier_pairs(tiers)
    if len(a) > max_pairs:
        keep = np.random.default_rng(seed).choice(len(a), max_pairs, replace=False)
        a, b, label = a[keep], b[keep], label[keep]
    diff = (scores[a] - scores[b]).astype(np.float64)
    x = np.concatenate([diff, -diff])[:, None]
    y = np.concatenate([label > 0, label < 0])
    slope = float(LogisticRegression(fit_intercept=False, C=1e6).fit(x, y).coef_[0, 0])
    medians = {t: float(np.median(scores[tiers == t])) for t in TIERS if (tiers == t).any()}
    cuts, agreement = fit_tier_cuts(scores, tiers)
    return {"slope": slope, "tier_medians": medians, "tier_cuts": cuts, "tier_hint_agreement": agreement,
            "fitted_on": "val", "pairs": int(len(a)),
            "method": "logistic regression of tier order on score difference, no intercept",
            "tier_cuts_method": "ordered thresholds maximising the validation images hinted their own tier"}


def fit_tier_cuts(scores, tiers) -> tuple[list[dict], float | None]:
    """Ordered cut points (S above A above B above C) that hint the most images their own tier.

    Sorted by score, the images are cut into one run per tier present, lowest tier lowest, each run
    non-empty so that every tier can be hinted; dynamic programming over the cut positions finds the
    runs with the most images of their own tier. Cuts sit halfway between two distinct scores (ties are
    never split). Midpoints of per-tier medians, the obvious rule, are out of order on a weak model and
    then never hint some tier. Returns (cuts from the top, share of images hinted their own tier); no
    cuts and None when there are fewer distinct scores than tiers.
    """
    scores, tiers = np.asarray(scores, dtype=np.float64), np.asarray(tiers)
    present = [t for t in TIERS if (tiers == t).any()]  # highest first
    order = np.argsort(scores, kind="stable")
    ordered_scores, ordered_tiers = scores[order], tiers[order]
    n, ascending = len(scores), present[::-1]
    # cut before position i (1..n-1) only between distinct scores
    allowed = np.concatenate([[False], ordered_scores[1:] > ordered_scores[:-1], [False]])
    if len(present) < 2 or allowed.sum() < len(present) - 1:
        return [], None
    prefix = {t: np.concatenate([[0], np.cumsum(ordered_tiers == t)]) for t in present}
    # best[i]: most matches with the tiers so far covering positions [0, i); cut[j][i]: where run j starts
    best = prefix[ascending[0]].astype(np.float64)
    best[1:][~allowed[1:]] = -np.inf  # the first run ends at an allowed cut (or at n, checked below)
    starts = []
    for tier in ascending[1:]:
        gain = prefix[tier]
        candidate = np.where(allowed, best - gain, -np.inf)  # run `tier` starts at an allowed cut b
        running, running_at = np.maximum.accumulate(candidate), np.zeros(n + 1, np.int64)
        for i in range(1, n + 1):
            running_at[i] = i if candidate[i] >= running[i - 1] else running_at[i - 1]
        shifted = np.concatenate([[-np.inf], running[:-1]])  # b < i: the run is non-empty
        best = np.where(np.isfinite(shifted), gain + shifted, -np.inf)
        best[1:n][~allowed[1:n]] = -np.inf
        starts.append(np.concatenate([[0], running_at[:-1]]))
    if not np.isfinite(best[n]):
        return [], None
    positions, end = [], n
    for start_of in reversed(starts):
        end = int(start_of[end])
        positions.append(end)
    thresholds = [(ordered_scores[p - 1] + ordered_scores[p]) / 2 for p in positions]  # highest cut first
    cuts = [{"above": upper, "below": lower, "threshold": float(threshold)}
            for upper, lower, threshold in zip(present, present[1:], thresholds)]
    return cuts, float(best[n]) / n


def tier_hint(score: float, calibration: dict | None) -> str | None:
    """The tier whose band of validation scores holds `score`; None without a calibration."""
    cuts = (calibration or {}).get("tier_cuts") or []
    if not cuts:
        return None
    return next((cut["above"] for cut in cuts if score >= cut["threshold"]), cuts[-1]["below"])


def p_first_better(score_a, score_b, calibration: dict):
    """sigmoid(slope * (score_a - score_b)), as tanh: no overflow far out, and odd, so P(A) + P(B) = 1.
    Scores give a float, arrays of scores an array."""
    p = 0.5 * (1.0 + np.tanh(0.5 * calibration["slope"] * (np.asarray(score_a, np.float64) - score_b)))
    return float(p) if p.ndim == 0 else p


def write_calibration(output_dir: str | os.PathLike, calibration: dict, *, checkpoint: str | os.PathLike) -> None:
    """calibration.json, recording the checkpoint whose validation scores it was fitted on."""
    atomic_write_json(Path(output_dir) / CALIBRATION_JSON,
                      calibration | {MADE_FROM: made_from(output_dir, checkpoint)})


def read_calibration(output_dir: str | os.PathLike, *, checkpoint: str | os.PathLike) -> dict | None:
    """The run's calibration.json for `checkpoint`; None when the run has none or when it was fitted on another
    checkpoint's scores (its slope and cuts would read this one's scores wrongly: predictions then get no hint,
    no P). A calibration of another run is refused."""
    path = Path(output_dir) / CALIBRATION_JSON
    calibration = load_artifact(path, what="calibration of train.py", expected=run_origin(output_dir))
    if calibration is None or calibration[MADE_FROM].get("checkpoints") != made_from(output_dir, checkpoint)[
            "checkpoints"]:
        return None
    if "slope" not in calibration or "tier_cuts" not in calibration:
        raise ArtrankError(f"{path}: not a calibration written by train.py (no slope or tier_cuts)")
    return calibration
