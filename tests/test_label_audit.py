"""The label audit's doubt: the teachers' judgements and the out-of-fold score as evidence about a work's tier."""

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.optimize import approx_fprime
from scipy.special import expit, logsumexp

from pipeline.comparisons import no_comparisons
from pipeline.label_audit import (
    AUDIT_COLUMNS,
    TIER_GAP,
    TIER_SD,
    audit_table,
    doubts,
    judgement_evidence,
    latent_qualities,
    rater_errors,
    score_evidence,
)
from pipeline.out_of_fold import FoldHeads
from pipeline.tables import TIER_RANK


def judgements(*rows) -> dict:
    """index_pairs' form of (a, b, outcome for a, rater) tuples."""
    a, b, outcome, rater = zip(*rows)
    return dict(a=np.array(a), b=np.array(b), outcome=np.array(outcome, dtype=np.float32),
                rater=np.array(rater, dtype=object))


def flat_heads(count: int) -> FoldHeads:
    """One head scoring every work alike: its scores have no spread, so they give no evidence."""
    return FoldHeads(fold_of=np.zeros(count, np.int64), scores=np.zeros((1, count)), thresholds=[None],
                     calibrations=[{}])


def test_a_raters_error_rate_counts_only_their_own_judgements_across_tiers_and_is_at_most_a_half():
    ranks = np.array([3, 2, 1, 0, 2])
    judged = judgements((0, 1, 1, "p"), (0, 2, -1, "p"), (0, 3, 1, "p"), (1, 3, 0, "p"),  # p: 1 wrong of 3
                        (2, 3, 1, "q"), (3, 0, 1, "q"), (3, 0, 1, "q"), (1, 4, 0, "q"), (4, 1, 1, "q"))  # q: 2 of 3
    assert rater_errors(ranks, judged) == pytest.approx([2 / 5] * 4 + [0.5] * 5)  # q's 3/5 is capped


def by_hand(d: float, outcome: float, error: float) -> float:
    """A judgement's likelihood, written out: a win e + (1 - 2e) sigmoid(d), a tie sqrt(sigmoid(d) sigmoid(-d))."""
    if outcome == 0:
        return float(np.sqrt(expit(d) * expit(-d)))
    return float(error + (1 - 2 * error) * expit(d if outcome > 0 else -d))


def test_judgement_evidence_is_the_log_likelihood_of_a_works_judgements_under_each_tier_by_hand():
    ranks = np.array([3, 0, 1, 1])
    judged = judgements((1, 0, 1, "r"), (2, 1, 1, "r"), (0, 2, 1, "r"), (3, 1, 0, "r"), (3, 2, 1, "r"))
    error = 0.4  # one wrong of the three across tiers: (1 + 1) / (3 + 2)
    q = latent_qualities(ranks, judged, np.full(5, error))

    def posterior(q):  # -log of the joint's density, by hand
        prior = np.sum((q - ranks * TIER_GAP) ** 2) / (2 * TIER_SD ** 2)
        return prior - sum(np.log(by_hand(q[a] - q[b], o, error)) for a, b, o in zip(judged["a"], judged["b"],
                                                                                   judged["outcome"]))

    assert approx_fprime(q, posterior, 1e-6) == pytest.approx(np.zeros(4), abs=1e-3)  # the most likely q
    evidence = judgement_evidence(ranks, judged)
    for tier in range(4):  # the C work (1): beat the S one, lost to a B one, tied with the other B one
        def integrand(x, tier=tier):
            return (by_hand(x - q[0], 1, error) * by_hand(x - q[2], -1, error) * by_hand(x - q[3], 0, error)
                    * np.exp(-0.5 * ((x - tier * TIER_GAP) / TIER_SD) ** 2) / (TIER_SD * np.sqrt(2 * np.pi)))
        assert evidence[1, tier] == pytest.approx(np.log(quad(integrand, -30, 40)[0]), abs=1e-3)


def test_a_work_that_beats_one_its_judgements_put_high_is_more_doubtful_than_one_that_beats_a_low_one():
    # w0 (C) beats w1 (C); w1 beats or loses to every one of six B works; B works beat the other C works. With
    # w1's judgements it stands above the B works or below them, and w0's win over it says so much more or less
    # (the rater's error, (6 + 1) / (42 + 2) when w1's six wins over B works are wrong ones of the 42 judgements
    # across tiers, keeps the difference small)
    tiers = ["C", "C"] + ["B"] * 6 + ["C"] * 6
    rows = pd.DataFrame(dict(image_id=[f"w{i}" for i in range(len(tiers))], tier=tiers,
                             artist=[f"a{i}" for i in range(len(tiers))]))

    def doubt_of_w0(partner_wins: str) -> float:
        pairs = [("w0", "w1", "a")] + [("w1", f"w{i}", partner_wins) for i in range(2, 8)]
        pairs += [(f"w{i}", f"w{j}", "a") for i in range(2, 8) for j in range(8, 14)]
        comparisons = pd.DataFrame(pairs, columns=["image_a", "image_b", "winner"]).assign(rater="r")
        return doubts(flat_heads(len(tiers)), rows, comparisons)[0][0]

    assert doubt_of_w0("a") > doubt_of_w0("b") + 0.02


def three_works() -> tuple[np.ndarray, dict]:
    """S, C and B works; the C one beats the S one and loses to the B one, the S one beats the B one; one rater."""
    return np.array([3, 0, 1]), judgements((1, 0, 1, "r"), (2, 1, 1, "r"), (0, 2, 1, "r"))


def test_doubt_is_the_log_mean_likelihood_of_the_other_tiers_over_the_given_ones():
    ranks, judged = three_works()
    rows = pd.DataFrame(dict(image_id=["s", "c", "b"], tier=["S", "C", "B"], artist=["x", "y", "z"]))
    comparisons = pd.DataFrame(dict(image_a=["c", "b", "s"], image_b=["s", "c", "b"], winner=["a"] * 3,
                                    rater=["r"] * 3))
    evidence = judgement_evidence(ranks, judged)
    doubt, judged_count = doubts(flat_heads(3), rows, comparisons)
    for work, rank in enumerate(ranks):
        others = [evidence[work, t] for t in range(4) if t != rank]
        assert doubt[work] == pytest.approx(logsumexp(others) - np.log(3) - evidence[work, rank])
    assert list(judged_count) == [2, 2, 2]


def test_more_judgements_against_a_label_make_a_larger_doubt_and_judgements_for_it_a_negative_one():
    tiers = ["C"] + ["S"] * 6 + ["C"] * 6
    rows = pd.DataFrame(dict(image_id=[f"w{i}" for i in range(len(tiers))], tier=tiers,
                             artist=[f"a{i}" for i in range(len(tiers))]))

    def doubt_of_w0(wins: int) -> float:
        # w0 (C) beats `wins` S works; every S work beats every other C work, as their labels say (so many that
        # the rater's error rate, measured on all of them, stays small)
        pairs = [("w0", f"w{i}", "a") for i in range(1, 1 + wins)]
        pairs += [(f"w{i}", f"w{j}", "a") for i in range(1, 7) for j in range(7, 13)]
        comparisons = pd.DataFrame(pairs, columns=["image_a", "image_b", "winner"]).assign(rater="r")
        doubt, _ = doubts(flat_heads(len(tiers)), rows, comparisons)
        assert (doubt[7:] < 0).all()  # every other C work: its judgements are for its label
        return doubt[0]

    assert 0 < doubt_of_w0(1) < doubt_of_w0(3) < doubt_of_w0(5)


def fold_rows() -> tuple[pd.DataFrame, np.ndarray]:
    """Six artists of one S, A, B and C work each, two artists to a fold (three folds)."""
    tiers = list("SABC") * 6
    rows = pd.DataFrame(dict(image_id=[f"w{i:02d}" for i in range(24)], tier=tiers,
                             artist=[f"a{i // 4}" for i in range(24)]))
    return rows, np.repeat([0, 1, 2], 8)


def test_score_evidence_reads_each_tier_off_other_artists_works_the_same_head_never_trained_on():
    rows, fold_of = fold_rows()
    scores = np.random.default_rng(0).normal(size=(3, 24))
    heads = FoldHeads(fold_of=fold_of, scores=scores, thresholds=[None] * 3, calibrations=[{}] * 3)
    ranks = np.array([TIER_RANK[t] for t in rows["tier"]])
    evidence = score_evidence(heads, ranks, rows["artist"].to_numpy(object))
    # work 0 (artist a0, fold 0): head 0 holds fold 0 out and stops on fold 1; a0's other works are left out.
    # work 20 (a5, fold 2): head 2 holds fold 2 out and stops on fold 0 (the folds wrap around).
    for work, head, reference in ((0, 0, list(range(4, 16))), (20, 2, list(range(0, 8)) + [16, 17, 18, 19])):
        s, r = scores[head, reference], ranks[reference]
        means = np.array([s[r == t].mean() for t in range(4)])
        spread = np.std(s - means[r])
        assert evidence[work] == pytest.approx(-0.5 * ((scores[head, work] - means) / spread) ** 2)


def test_a_head_missing_a_tier_among_its_unseen_works_gives_no_score_evidence():
    rows, fold_of = fold_rows()
    rows.loc[(fold_of > 0) & (rows["tier"] == "S"), "tier"] = "A"  # head 0's unseen folds 0 and 1: S in fold 0 only
    ranks = np.array([TIER_RANK[t] for t in rows["tier"]])
    heads = FoldHeads(fold_of=fold_of, scores=np.random.default_rng(1).normal(size=(3, 24)),
                      thresholds=[None] * 3, calibrations=[{}] * 3)
    evidence = score_evidence(heads, ranks, rows["artist"].to_numpy(object))
    # head 0 (folds 0 and 1 unseen) and head 1 (folds 1 and 2) have at most one S work of another artist
    assert (evidence[fold_of < 2] == 0).all()
    assert (evidence[fold_of == 2] != 0).all()  # head 2 (folds 2 and 0) has the two


def test_the_audit_table_keeps_the_contract_columns_and_ranks_the_largest_doubt_first():
    rows, fold_of = fold_rows()
    rows["file_name"], rows["split"] = "images/" + rows["image_id"] + ".png", "train"
    ranks = np.array([TIER_RANK[t] for t in rows["tier"]], dtype=float)
    scores = np.stack([ranks + np.random.default_rng(fold).normal(0, 0.2, 24) for fold in range(3)])
    scores[:, 5] = 3 - ranks[5]  # one work scored as the mirror of its tier
    heads = FoldHeads(fold_of=fold_of, scores=scores, thresholds=[[-0.5, 0.5, 1.5]] * 3, calibrations=[{}] * 3)
    table = audit_table(rows, heads, no_comparisons())
    assert tuple(table.columns[:len(AUDIT_COLUMNS)]) == AUDIT_COLUMNS
    assert table.loc[0, "image_id"] == "w05" and table.loc[0, "rank"] == 1
    assert list(table["rank"]) == list(range(1, len(rows) + 1)) and (np.diff(table["doubt"]) <= 0).all()
    distribution = table[["p_S", "p_A", "p_B", "p_C"]].to_numpy()
    assert np.allclose(distribution.sum(axis=1), 1)
    assert (table["hint"] == np.array(list("SABC"))[distribution.argmax(axis=1)]).all()
