"""The review's fold heads: artist folds of the train and val works, one head per fold that never saw that fold's
artists, and what they say about each work and each pair (the label audit and the next pairs both read these).

Fold k's head is trained on every fold but k and k+1, stopped early on fold k+1 and holds fold k out (the
roles of cross-validation's cells, selection.fold_roles). A work's out-of-fold score is the score of the head
that held its fold out; that head also reads its tier (its thresholds for a tier model, else tier cuts fitted on
its stopping fold) and turns score differences into P(A better) (a logistic slope fitted on its stopping fold):
neither ever uses the label of a work it is asked about. Each head's scores have a scale of their own, so
scores are compared only within one head.
"""

from dataclasses import dataclass

import numpy as np

from .calibration import fit_calibration, p_first_better, tier_hint
from .ordinal import TIERS_WORST_FIRST, most_likely_tier, tier_probabilities
from .selection import fold_roles


@dataclass
class FoldHeads:
    """What the fold heads say about the rows they were fitted on (train+val, in table order)."""
    fold_of: np.ndarray  # (N,) each row's fold: the head that holds it out
    scores: np.ndarray  # (K, N) every head's score of every row
    thresholds: list  # per head: a tier model's three thresholds (worst tier first), or None
    calibrations: list  # per head: calibration.fit_calibration on its stopping fold (slope, tier cuts)

    def out_of_fold(self) -> np.ndarray:
        """(N,) each row's score by the head that never saw its artist."""
        return self.scores[self.fold_of, np.arange(self.scores.shape[1])]

    def tier_distribution(self) -> np.ndarray | None:
        """(N, 4) P(tier) in TIERS_WORST_FIRST order from each row's out-of-fold head; None unless tier models."""
        if any(t is None for t in self.thresholds):
            return None
        own = self.out_of_fold()
        probabilities = np.zeros((len(own), len(TIERS_WORST_FIRST)))
        for k, thresholds in enumerate(self.thresholds):
            rows = self.fold_of == k
            probabilities[rows] = tier_probabilities(own[rows], thresholds)
        return probabilities

    def hints(self) -> np.ndarray:
        """(N,) the tier each row's out-of-fold head reads off its score (a tier model's most likely tier, else the
        tier band of its stopping fold's scores; "" when that fold cannot be cut into bands)."""
        distribution = self.tier_distribution()
        if distribution is not None:
            return most_likely_tier(distribution)
        own = self.out_of_fold()
        return np.asarray([tier_hint(s, self.calibrations[k]) or "" for s, k in zip(own, self.fold_of)], dtype=object)

    def p_first_better(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(K, P) each head's P(row a better than row b) for index arrays a, b."""
        return np.stack([p_first_better(scores[a], scores[b], calibration)
                         for scores, calibration in zip(self.scores, self.calibrations)])


def fold_parts(fold_of: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per fold k, (rows head k trains on, rows it stops on): not fold k, which it holds out, nor the stopping fold."""
    parts = []
    for fold in range(folds):
        held, stopping = fold_roles(fold, folds)
        parts.append((np.flatnonzero((fold_of != held) & (fold_of != stopping)), np.flatnonzero(fold_of == stopping)))
    return parts


def from_scores(fold_of: np.ndarray, tiers: np.ndarray, heads: list[tuple[np.ndarray, list | None]]) -> FoldHeads:
    """FoldHeads from each fold head's (scores of every row, thresholds), in fold_parts' order (model.fold_heads)."""
    folds = len(heads)
    calibrations = []
    for fold, (scores, _) in enumerate(heads):
        stopping = fold_of == fold_roles(fold, folds)[1]
        calibrations.append(fit_calibration(scores[stopping], tiers[stopping]))
    return FoldHeads(fold_of=np.asarray(fold_of), scores=np.stack([s for s, _ in heads]),
                     thresholds=[t for _, t in heads], calibrations=calibrations)

