"""Which comparisons to ask the teachers for next: the pairs whose answer would tell the fold heads apart most.

The rule. Candidates are pairs of two train works or two val works (a pair never crosses splits, so never joins a
test image to another), of one tier or of adjacent tiers (the pairs the tiers cannot order, or barely), and never
a pair already in comparisons.csv (in either order, by any rater). For each, every fold head gives
P(A better) (its own logistic slope, pipeline/out_of_fold.py); p_a_better is their mean and spread their
standard deviation. The value of asking is what the answer would say about which head is right: the mutual
information between the answer and the heads, each taken as equally likely, H(mean) - mean of H (H the entropy of
a yes/no answer, in nats). It is 0 when the heads agree, however unsure they all are (the answer would move them
alike), and up to log 2 when they are sure and split. Pairs are taken in order of that value, each image in at
most PER_IMAGE of them and each artist in at most max(2, ceil(ARTIST_SHARE x 2n / artists)), so the list spreads
over the works and artists instead of circling one hard work.
"""

import math

import numpy as np
import pandas as pd
from scipy.special import entr

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


def answer_information(p: np.ndarray) -> np.ndarray:
    """Per pair (a column of `p`, the heads' P(a better) in rows), the mutual information in nats between the
    answer and which head is right: the entropy of the heads' mean less the heads' mean entropy."""
    def entropy(q):
        return entr(q) + entr(1.0 - q)
    return entropy(p.mean(axis=0)) - entropy(p).mean(axis=0)


def reason(tier_a: str, tier_b: str, p_heads: np.ndarray) -> str:
    """Why the pair is asked for, in words, from the heads' P(a better)."""
    kind = f"two {tier_a} works" if tier_a == tier_b else f"adjacent tiers {tier_a}-{tier_b}"
    low, high = p_heads.min(), p_heads.max()
    split = ("the heads split on it" if low < 0.5 < high else
             f"the heads all lean to image_{'a' if low >= 0.5 else 'b'}")
    against = ", against the tiers" if tier_a != tier_b and p_heads.mean() < 0.5 else ""
    return f"{kind}: {split}{against} (P(a better) {low:.2f} to {high:.2f} over the fold heads)"


def choose_pairs(rows: pd.DataFrame, heads: FoldHeads, comparisons: pd.DataFrame, n: int) -> pd.DataFrame:
    """next_pairs.csv's rows: up to n pairs by the rule of the module's docstring, most valuable first. `rows`
    are the train+val works (file_name, image_id, artist, tier, split) in the heads' order."""
    a, b = candidate_pairs(rows, comparisons)
    p = heads.p_first_better(a, b)
    mean, spread = p.mean(axis=0), p.std(axis=0)
    value = answer_information(p)
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
        reason=[reason(tiers[x], tiers[y], p[:, k]) for x, y, k in zip(i, j, chosen)],
        value=value[chosen], artist_a=artists[i], artist_b=artists[j]), columns=list(PAIR_COLUMNS) + [
        "value", "artist_a", "artist_b"])
