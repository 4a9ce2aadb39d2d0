"""Issue 2: the one preprocessing, the artist-grouped stratified split, the pairs of spec 4.4.2,
the REQ-N-001 guard and make_pairs.py."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_script, tiny_args
from PIL import Image

from data import (
    SPLITS,
    TIER_RANK,
    TIERS,
    DataError,
    ImageDataset,
    check_no_test_leak,
    cross_tier_pairs,
    load_table,
    split_by_artist,
)
from images import IMAGENET_MEAN, IMAGENET_STD, input_size, preprocess
from runfolder import atomic_dir, atomic_write_text, recover_dir

NORMALISED_WHITE = ((1 - np.array(IMAGENET_MEAN)) / IMAGENET_STD).astype(np.float32)


def spec_pairs(ids: list[str], tiers: list[str]) -> list[tuple[str, str, int]]:
    """The double loop of spec 4.4.2, with its tier_order."""
    tier_order = {"S": 4, "A": 3, "B": 2, "C": 1}
    pairs = []
    for i, j in itertools.product(range(len(ids)), repeat=2):
        if i >= j:
            continue
        if tier_order[tiers[i]] > tier_order[tiers[j]]:
            pairs.append((ids[i], ids[j], 1))
        elif tier_order[tiers[i]] < tier_order[tiers[j]]:
            pairs.append((ids[i], ids[j], -1))
    return pairs


def artist_table(*, artists: int, seed: int = 0, max_works: int = 12) -> pd.DataFrame:
    """Artists with 1..max_works works each, most of them in or next to the artist's usual tier."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(artists):
        usual = rng.choice(4, p=[0.1, 0.25, 0.4, 0.25])
        for k in range(rng.integers(1, max_works + 1)):
            tier = TIERS[int(np.clip(usual + rng.integers(-1, 2), 0, 3))]
            rows.append((f"artist{a:03d}/{k:02d}.png", tier, f"artist{a:03d}"))
    return pd.DataFrame(rows, columns=["image_id", "tier", "artist"])


# ---------------------------------------------------------------- preprocessing

def test_768_is_padded_to_whole_patches():
    assert input_size(768, 14) == 770 and input_size(224, 14) == 224 and input_size(56, 14) == 56


def test_req_u_005_preprocess_letterboxes_centred_and_keeps_the_aspect():
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    tensor = preprocess(image, 768, 14)
    assert tensor.shape == (3, 770, 770) and tensor.dtype == torch.float32
    drawn = (tensor != 0).any(dim=0)
    rows, cols = torch.nonzero(drawn, as_tuple=True)
    assert (rows.min().item(), rows.max().item() + 1) == (193, 193 + 384)  # 2:1 kept: 768 x 384, centred
    assert (cols.min().item(), cols.max().item() + 1) == (1, 1 + 768)
    assert torch.allclose(tensor[:, 193:577, 1:769], torch.from_numpy(NORMALISED_WHITE)[:, None, None], atol=1e-5)
    assert drawn.sum().item() == 768 * 384  # everything else is padding, exactly 0 after normalisation


def test_req_s_004_small_images_are_letterboxed():
    tensor = preprocess(Image.new("RGB", (1, 1), (255, 255, 255)), 768, 14)
    assert tensor.shape == (3, 770, 770)
    assert torch.allclose(tensor[:, 1:769, 1:769], torch.from_numpy(NORMALISED_WHITE)[:, None, None], atol=1e-5)
    border = torch.ones(770, 770, dtype=torch.bool)
    border[1:769, 1:769] = False
    assert (tensor[:, border] == 0).all()


def test_preprocess_treats_any_pil_image_like_open_image():
    rgba = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
    white = Image.new("RGB", (30, 20), (255, 255, 255))
    assert torch.equal(preprocess(rgba, 56, 14), preprocess(white, 56, 14))


def test_image_dataset_gives_preprocessed_tensors_and_names_a_bad_file(tmp_path):
    Image.new("RGB", (40, 20), (255, 255, 255)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    dataset = ImageDataset([str(tmp_path / "good.png"), str(tmp_path / "bad.png")], image_size=56, patch_size=14)
    assert len(dataset) == 2
    assert torch.equal(dataset[0], preprocess(Image.open(tmp_path / "good.png").convert("RGB"), 56, 14))
    with pytest.raises(DataError, match="bad.png"):
        dataset[1]


# ---------------------------------------------------------------- split (spec 4.4.1)

def test_split_is_80_10_10_stratified_by_tier_and_grouped_by_artist():
    df = artist_table(artists=300)
    df["split"] = split_by_artist(df)
    assert df.groupby("artist").split.nunique().max() == 1  # no artist in two splits
    shares = df.split.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.01)
    assert shares["val"] == pytest.approx(0.1, abs=0.01) and shares["test"] == pytest.approx(0.1, abs=0.01)
    tier_share = pd.crosstab(df.split, df.tier, normalize="index")
    overall = df.tier.value_counts(normalize=True)
    for split in SPLITS:
        assert (tier_share.loc[split] - overall).abs().max() < 0.02, (split, tier_share.loc[split], overall)


def test_split_is_deterministic_and_ignores_row_order():
    df = artist_table(artists=60, seed=1)
    split = split_by_artist(df, seed=42)
    assert split.equals(split_by_artist(df, seed=42))
    shuffled = df.sample(frac=1, random_state=7)
    again = split_by_artist(shuffled, seed=42)
    assert again.reindex(df.index).equals(split)
    assert not split_by_artist(df, seed=43).equals(split)  # the seed is what decides


def test_split_puts_a_rare_tier_in_every_split():
    rows = [(f"a{a:02d}_{k}", "S" if a < 3 and k < 2 else "ABC"[(a + k) % 3], f"artist{a:02d}")
            for a in range(30) for k in range(6)]
    df = pd.DataFrame(rows, columns=["image_id", "tier", "artist"])  # tier S: works by 3 artists only
    split = split_by_artist(df)
    assert all(set(df.tier[split == name]) == set(TIERS) for name in SPLITS)
    assert split.value_counts().to_dict() == {"train": 144, "val": 18, "test": 18}


@pytest.mark.parametrize("change, message", [
    (dict(val_fraction=0.15), "whole tenth"),
    (dict(val_fraction=0.5, test_fraction=0.5), "nothing to train on"),
])
def test_split_refuses_fractions_it_cannot_make(change, message):
    with pytest.raises(DataError, match=message):
        split_by_artist(artist_table(artists=40), **change)


def test_split_refuses_a_single_tier():
    df = artist_table(artists=40).assign(tier="B")
    with pytest.raises(DataError, match="at least two tiers"):
        split_by_artist(df)


# ---------------------------------------------------------------- pairs (spec 4.4.2)

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


# ---------------------------------------------------------------- REQ-N-001

def test_req_n_001_test_images_never_reach_training(dataset):
    table, _ = load_table(dataset, val_fraction=0.1, test_fraction=0.1, seed=42)
    train, val, test = (table[table.split == name] for name in SPLITS)
    check_no_test_leak(train, table)
    check_no_test_leak(val, table)

    with pytest.raises(DataError, match=r"REQ-N-001.*1 test row\(s\)"):
        check_no_test_leak(pd.concat([train, test.iloc[:1]]), table)
    relabelled = test.iloc[:1].assign(split="train")  # a test row however it is labelled
    with pytest.raises(DataError, match=r"REQ-N-001.*1 test row\(s\)"):
        check_no_test_leak(pd.concat([train, relabelled]), table)
    shared = train.iloc[:1].assign(artist=test.artist.iloc[0])
    with pytest.raises(DataError, match=rf"REQ-N-001.*artist\(s\) also in test \['{test.artist.iloc[0]}'\]"):
        check_no_test_leak(pd.concat([train.iloc[1:], shared]), table)
    copy = train.iloc[:1].assign(sha256=test.sha256.iloc[0])  # a test image's bytes under a train name
    with pytest.raises(DataError, match=r"REQ-N-001.*identical to a test image"):
        check_no_test_leak(pd.concat([train.iloc[1:], copy]), table)
    with pytest.raises(DataError, match="lacks"):
        check_no_test_leak(train.drop(columns="sha256"), table)


def test_identical_images_under_two_names_cannot_straddle_splits(dataset):
    (dataset / "images" / "copy.png").write_bytes((dataset / "images" / "a00_00.png").read_bytes())
    with open(dataset / "metadata.csv", "a") as f:
        f.write("images/copy.png,S,artist11\n")
    with pytest.raises(DataError, match=r"row 98 \(images/copy.png\): same image content as row 2"):
        load_table(dataset, val_fraction=0.1, test_fraction=0.1, seed=42)


# ---------------------------------------------------------------- crash-safe writes

def test_atomic_dir_replaces_only_when_the_block_completes(tmp_path):
    target = tmp_path / "pairs"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("crash")
    assert (target / "a").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["pairs"]
    target.rename(tmp_path / "pairs.old")  # a crash between atomic_dir's two renames
    assert (recover_dir(target) / "a").read_text() == "1"


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    atomic_write_text(tmp_path / "x" / "splits.csv", "a\n")
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["splits.csv"]


# ---------------------------------------------------------------- make_pairs.py

@pytest.mark.slow
def test_make_pairs_writes_splits_pairs_and_a_summary(tmp_path, dataset):
    from datasets import load_from_disk

    result = run_script("make_pairs.py", *tiny_args(tmp_path, dataset, tmp_path / "unused"))
    out = tmp_path / "run"
    splits = pd.read_csv(out / "splits.csv", dtype=str)
    assert list(splits.columns) == ["image_id", "file_name", "tier", "artist", "sha256", "split"]
    table, _ = load_table(dataset, val_fraction=0.1, test_fraction=0.1, seed=42)
    assert splits.equals(table[splits.columns].astype(str))  # the split train.py computes itself

    pairs = load_from_disk(str(out / "pairs")).to_pandas()
    assert list(pairs.columns) == ["image_a", "image_b", "label", "split"]
    for name in SPLITS:
        rows = splits[splits.split == name]
        expected = spec_pairs(list(rows.image_id), list(rows.tier))
        got = pairs[pairs.split == name]
        assert list(zip(got.image_a, got.image_b, got.label.astype(int))) == expected
        count_line = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
        assert count_line.split()[-3:] == [str(len(rows)), str(rows.artist.nunique()), str(len(expected))]
    assert f"({len(pairs)} pairs)" in result.stdout
