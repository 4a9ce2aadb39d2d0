"""Which comparisons to ask the teachers for next: the pairs the fold heads are least sure of or disagree on.

The rule. Candidates are pairs of two train works or two val works (a pair never crosses splits, so never joins a
test image to another), of one tier or of adjacent tiers (the pairs the tiers cannot order, or barely), and never
a pair already in comparisons.csv (in either order, by any rater). For each, every fold head gives
P(A better) (its own logistic slope, pipeline/out_of_fold.py); p_a_better is their mean and spread their
standard deviation. The value of asking is (1 - |2 p_a_better - 1|) + spread: 1 for a coin flip, 0 for a sure
pair, plus how much the heads disagree. Pairs are taken in order of that value, each image in at most
PER_IMAGE of them and each artist in at most max(2, ceil(ARTIST_SHARE x 2n / artists)), so the list spreads
over the works and artists instead of circling one hard work.
"""

import math

import numpy as np
import pandas as pd

from .out_of_fold import FoldHeads
from .tables import tier_ranks

# The contract of next_pairs.csv (the review page reads these columns by name); more may follow them.
NEXT_PAIRS = "next_pairs.csv"
PAIR_COLUMNS = ("image_a", "image_b", "tier_a", "tier_b", "split", "p_a_better", "spread", "reason")
PER_IMAGE = 2
ARTIST_SHARE = 1.5  # an artist may take half as much again as an even share of the pairs' places
SPLITS_ASKED = ("train", "val")


def candidate_pairs(rows: pd.DataFrame, comparisons: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays a, b into `rows` (image_id, tier, split) of the pairs the rule may ask for: one split of
    SPLITS_ASKED, the same or adjacent tiers, not yet compared. a holds the higher tier (else the lower index)."""
    ranks, splits = tier_ranks(rows["tier"]), rows["split"].to_numpy(object)
    a, b = np.triu_indices(len(rows), k=1)
    keep = (splits[a] == splits[b]) & np.isin(splits[a], SPLITS_ASKED) & (np.abs(ranks[a] - ranks[b]) <= 1)
    a, b = a[keep], b[keep]
    ids = rows["image_id"].to_numpy(object)
    judged = set(zip(comparisons["image_a"], comparisons["image_b"])) | set(zip(comparisons["image_b"],
                                                                               comparisons["image_a"]))
    new = np.fromiter(((x, y) not in judged for x, y in zip(ids[a], ids[b])), bool, count=len(a))
    a, b = a[new], b[new]
    swap = ranks[b] > ranks[a]
    return np.where(swap, b, a), np.where(swap, a, b)


def reason(tier_a: str, tier_b: str, p: float, spread: float) -> str:
    """Why the pair is asked for, in words."""
    kind = f"two {tier_a} works" if tier_a == tier_b else f"adjacent tiers {tier_a}-{tier_b}"
    lean = "a coin flip for the fold heads" if abs(p - 0.5) < 0.1 else (
        f"the heads favour the {tier_b} work, against the tiers" if tier_a != tier_b and p < 0.5 else
        f"the heads lean to image_{'a' if p > 0.5 else 'b'}")
    return f"{kind}: {lean} (P(a better) {p:.2f}); heads disagree by sd {spread:.2f}"


def choose_pairs(rows: pd.DataFrame, heads: FoldHeads, comparisons: pd.DataFrame, n: int) -> pd.DataFrame:
    """next_pairs.csv's rows: up to n pairs by the rule of the module's docstring, most valuable first. `rows`
    are the train+val works (file_name, image_id, artist, tier, split) in the heads' order."""
    a, b = candidate_pairs(rows, comparisons)
    p = heads.p_first_better(a, b)
    mean, spread = p.mean(axis=0), p.std(axis=0)
    value = 1.0 - np.abs(2.0 * mean - 1.0) + spread
    artists = rows["artist"].to_numpy(object)
    artist_cap = max(2, math.ceil(ARTIST_SHARE * 2 * n / max(1, len(set(artists)))))
    used_image, used_artist, chosen = np.zeros(len(rows), np.int64), {}, []
    for k in np.lexsort((b, a, -value)):  # most valuable first; equal values in index order
        i, j = a[k], b[k]
        if len(chosen) == n:
            break
        if max(used_image[i], used_image[j]) >= PER_IMAGE or max(
                used_artist.get(artists[i], 0), used_artist.get(artists[j], 0)) >= artist_cap:
            continue
        chosen.append(k)
        used_image[[i, j]] += 1
        for artist in {artists[i], artists[j]}:
            used_artist[artist] = used_artist.get(artist, 0) + 1
    chosen = np.asarray(chosen, dtype=np.int64)
    i, j, tiers = a[chosen], b[chosen], rows["tier"].to_numpy(object)
    names, splits = rows["file_name"].to_numpy(object), rows["split"].to_numpy(object)
    return pd.DataFrame(dict(
        image_a=names[i], image_b=names[j], tier_a=tiers[i], tier_b=tiers[j], split=splits[i],
        p_a_better=mean[chosen], spread=spread[chosen],
        reason=[reason(tiers[x], tiers[y], mean[k], spread[k]) for x, y, k in zip(i, j, chosen)],
        value=value[chosen], artist_a=artists[i], artist_b=artists[j]), columns=list(PAIR_COLUMNS) + [
        "value", "artist_a", "artist_b"])
