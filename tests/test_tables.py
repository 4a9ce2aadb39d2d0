"""pipeline/tables.py: the pairs of spec 4.4.2 and the artist folds."""

import numpy as np
import pandas as pd
from conftest import artists_of_one_main_tier, spec_pairs

from pipeline.tables import TIER_RANK, TIERS, artist_folds, cross_tier_pairs


def test_spec_4_4_2_pairs_match_the_spec_double_loop():
    rng = np.random.default_rng(0)
    tiers = list(rng.choice(list(TIERS), 90))
    ids = [f"img{i}" for i in range(len(tiers))]
    a, b, label = cross_tier_pairs(np.asarray(tiers))
    ours = [(ids[i], ids[j], int(y)) for i, j, y in zip(a, b, label)]
    assert ours == spec_pairs(ids, tiers)  # same pairs, same order, same labels; no same-tier pairs


def test_pairs_are_complete_across_row_blocks():
    tiers = np.random.default_rng(1).choice(list(TIERS), 2100)  # more than one 2048-row block
    a, b, label = cross_tier_pairs(tiers)
    counts = pd.Series(tiers).value_counts()
    assert len(a) == (len(tiers) ** 2 - (counts ** 2).sum()) // 2
    assert (a < b).all() and (np.diff(a * len(tiers) + b) > 0).all()  # no pair twice, in the spec's loop order
    ranks = np.array([TIER_RANK[t] for t in tiers])
    assert (label == np.sign(ranks[a] - ranks[b])).all() and (label != 0).all()


def test_pairs_of_one_tier_are_empty():
    a, b, label = cross_tier_pairs(np.array(["A"] * 5))
    assert len(a) == len(b) == len(label) == 0


def test_folds_are_artist_disjoint_and_tier_stratified():
    rows = artists_of_one_main_tier()
    fold_of = artist_folds(rows, folds=5, seed=42)
    assert sorted(set(fold_of)) == [0, 1, 2, 3, 4]
    assert rows.assign(fold=fold_of).groupby("artist").fold.nunique().max() == 1  # an artist in one fold only
    assert np.bincount(fold_of).min() >= 0.8 * len(rows) / 5
    overall = rows.tier.value_counts(normalize=True)
    for fold in range(5):
        share = rows.tier[fold_of == fold].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (share - overall).abs().max() < 0.04, (fold, share.to_dict())  # unstratified folds: 0.06 to 0.36


def test_folds_follow_the_content_not_the_row_order():
    rows = artists_of_one_main_tier()
    shuffled = rows.sample(frac=1, random_state=1).reset_index(drop=True)
    first = dict(zip(rows.image_id, artist_folds(rows, folds=5, seed=7)))
    second = dict(zip(shuffled.image_id, artist_folds(shuffled, folds=5, seed=7)))
    assert first == second
    assert first != dict(zip(rows.image_id, artist_folds(rows, folds=5, seed=8)))
