"""data.py: the rows' checks, every bad row listed at once; the artist-grouped stratified split; the test-leak
guard (REQ-N-001)."""

import unicodedata

import numpy as np
import pandas as pd
import pytest
from conftest import EXPECTED, SPLIT, image_frame, write_dataset
from sklearn.model_selection import StratifiedGroupKFold

from data import DataError, check_no_test_leak, image_table, read_metadata, split_by_artist, split_rows
from pipeline.tables import SPLITS, TIERS, frame, to_dataset


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


def test_test_and_val_splits_are_folds_0_and_1_of_sklearn_stratified_group_kfold_over_sorted_ids():
    """The documented split, recomputed with scikit-learn: reproducible from the seed whatever the row order."""
    rng = np.random.default_rng(3)
    ids = [f"img{i:04d}" for i in range(400)]
    df = pd.DataFrame({"image_id": ids, "tier": rng.choice(TIERS, 400), "artist": [f"artist{i % 40:02d}" for i in
                                                                                    range(400)]})
    split = split_by_artist(df.sample(frac=1, random_state=1), seed=42).reindex(df.index)
    folds = list(StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=42).split(df, df.tier, df.artist))
    assert set(df.image_id.iloc[folds[0][1]]) == set(df.image_id[split == "test"])
    assert set(df.image_id.iloc[folds[1][1]]) == set(df.image_id[split == "val"])


def test_req_n_001_test_images_never_reach_training(dataset):
    table, _ = image_table(dataset, **SPLIT)
    rows = frame(table)
    train, test = rows[rows.split == "train"], rows[rows.split == "test"]
    check_no_test_leak(split_rows(table, "train"), table)
    check_no_test_leak(split_rows(table, "val"), table)

    def guard(rows):
        check_no_test_leak(to_dataset(rows), table)

    with pytest.raises(DataError, match=r"test data would reach training or validation: .*1 test row\(s\)"):
        guard(pd.concat([train, test.iloc[:1]]))
    relabelled = test.iloc[:1].assign(split="train")  # a test row however it is labelled
    with pytest.raises(DataError, match=r"test data would reach training or validation: .*1 test row\(s\)"):
        guard(pd.concat([train, relabelled]))
    shared = train.iloc[:1].assign(artist=test.artist.iloc[0])
    with pytest.raises(DataError, match=rf"validation: .*artist\(s\) also in test \['{test.artist.iloc[0]}'\]"):
        guard(pd.concat([train.iloc[1:], shared]))
    copy = train.iloc[:1].assign(sha256=test.sha256.iloc[0])  # a test image's bytes under a train name
    with pytest.raises(DataError, match=r"test data would reach training or validation: .*identical to a test image"):
        guard(pd.concat([train.iloc[1:], copy]))
    with pytest.raises(ValueError, match="lacks"):  # a caller's bug, not bad data
        check_no_test_leak(split_rows(table, "train").remove_columns("sha256"), table)


def test_identical_images_under_two_names_cannot_straddle_splits(dataset):
    (dataset / "images" / "copy.png").write_bytes((dataset / "images" / "a00_00.png").read_bytes())
    with open(dataset / "metadata.csv", "a") as f:
        f.write("images/copy.png,S,artist11\n")
    with pytest.raises(DataError, match=r"row 98 \(images/copy.png\): same image content as row 2"):
        image_frame(dataset, val_fraction=0.1, test_fraction=0.1, seed=42)


def test_artist_names_in_two_unicode_forms_are_one_artist(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        f"file_name,tier,artist\na.png,S,{unicodedata.normalize('NFC', '김민지')}\n"
        f"b.png,A,{unicodedata.normalize('NFD', '김민지')}\n", encoding="utf-8")
    assert read_metadata(tmp_path).artist.nunique() == 1


def test_artist_names_differing_in_case_or_runs_of_spaces_are_one_artist_and_a_moved_space_is_another(tmp_path):
    names = ["Anna Lee", "anna  lee", " ANNA LEE ", "Ann Alee", "AnnaLee"]
    (tmp_path / "metadata.csv").write_text("file_name,tier,artist\n" + "".join(
        f"{k}.png,{'SABCS'[k]},{name}\n" for k, name in enumerate(names)), encoding="utf-8")
    assert list(read_metadata(tmp_path).artist) == ["Anna Lee"] * 3 + ["Ann Alee", "AnnaLee"]


def test_every_bad_row_is_listed_at_once_with_file_and_row(bad_folder):
    with pytest.raises(DataError) as info:
        image_frame(bad_folder, **SPLIT)
    header, *lines = str(info.value).splitlines()
    assert header.startswith(f"{bad_folder / 'metadata.csv'}: 10 bad row(s)") and "--skip_bad_images" in header
    for row, (name, reason) in EXPECTED.items():
        assert any(line.strip().startswith(f"row {row} ({name}): ") and reason in line for line in lines), (row, lines)
    rows = [int(line.split()[1]) for line in lines]
    assert rows == sorted(rows) and set(rows) == set(EXPECTED)


def test_skip_bad_images_drops_exactly_the_bad_rows(bad_folder):
    table, skipped = image_frame(bad_folder, skip_bad_images=True, **SPLIT)
    assert len(table) == 96 and set(table.row) == set(range(2, 98))
    assert {int(message.split()[2]) for message in skipped} == set(EXPECTED)  # "skipped row N (...)"
    assert set(table.split) == {"train", "val", "test"}


def test_metadata_problems_each_name_the_row(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "file_name,tier,artist,image_id\n"
        "a.png,S,Kim,one\n"
        "b.png,A,Lee,one\n"          # 3: duplicate image_id
        "\n"
        "c.png,E,Park,\n"            # 5: unknown tier, after a blank line
        ",B,Choi,\n"                 # 6: empty file_name
        "d.png,B,,\n")               # 7: missing artist
    with pytest.raises(DataError) as info:
        read_metadata(tmp_path)
    lines = [line.strip() for line in str(info.value).splitlines()[1:]]
    assert lines == ["row 3 (b.png): duplicate image_id 'one', first at row 2",
                     "row 5 (c.png): unknown tier 'E', expected one of S, A, B, C",
                     "row 6: empty file_name",
                     "row 7 (d.png): missing artist"]


def test_too_few_artists_to_split_is_refused(tmp_path):
    data_dir = write_dataset(tmp_path / "data", artists=9, per_artist=8)
    with pytest.raises(DataError, match="metadata.csv: need works by at least 10 artists .* found 9"):
        image_frame(data_dir, **SPLIT)


def test_tier_with_too_few_artists_is_refused(tmp_path):
    data_dir = write_dataset(tmp_path / "data")
    metadata = pd.read_csv(data_dir / "metadata.csv")
    rare = (metadata.tier == "S") & ~metadata.artist.isin(["artist00", "artist01"])
    metadata.loc[rare, "tier"] = "A"  # only two artists keep works in tier S
    metadata.to_csv(data_dir / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"tier\(s\) S too small to split by artist.*S: 4 works by 2 artist"):
        image_frame(data_dir, **SPLIT)


def test_one_artist_written_with_other_case_or_spacing_is_one_artist_and_the_merge_is_said(tmp_path):
    data_dir = write_dataset(tmp_path / "data")
    metadata = pd.read_csv(data_dir / "metadata.csv")
    spellings = ["Lee Jun", "lee  jun", " LEE JUN", "Lee\u3000Jun"]  # the last with an ideographic space
    metadata.loc[metadata.artist == "artist00", "artist"] = [spellings[i % 4] for i in range(8)]
    metadata.to_csv(data_dir / "metadata.csv", index=False)
    table, notes = image_frame(data_dir, **SPLIT)
    assert set(table.loc[table.file_name.str.startswith("images/a00_"), "artist"]) == {"Lee Jun"}
    assert table.groupby("artist").split.nunique().max() == 1
    assert notes == ["artist names merged as one artist 'Lee Jun': 'Lee Jun', 'lee  jun', 'LEE JUN', "
                     "'Lee\\u3000Jun'"]  # repr shows the unusual space


def test_the_split_and_the_artist_names_do_not_depend_on_row_order_or_on_which_spelling_comes_first(tmp_path):
    data_dir = write_dataset(tmp_path / "data")
    metadata = pd.read_csv(data_dir / "metadata.csv")
    one = metadata.artist == "artist03"
    metadata.loc[one, "artist"] = ["kim  SORA"] + ["Kim Sora"] * 4 + ["kim sora"] * 3  # most often "Kim Sora"
    metadata.to_csv(data_dir / "metadata.csv", index=False)
    table, _ = image_frame(data_dir, **SPLIT)
    for order in (metadata.iloc[::-1], metadata.sample(frac=1, random_state=3)):  # the sheet re-sorted
        order.to_csv(data_dir / "metadata.csv", index=False)
        shuffled, _ = image_frame(data_dir, **SPLIT)
        assert shuffled.sort_values("image_id")[["image_id", "artist", "split"]].reset_index(drop=True).equals(
            table.sort_values("image_id")[["image_id", "artist", "split"]].reset_index(drop=True))
    assert set(table.loc[table.file_name.str.startswith("images/a03_"), "artist"]) == {"Kim Sora"}


def test_skipped_rows_are_listed_even_when_the_split_then_fails(tmp_path):
    data_dir = write_dataset(tmp_path / "data", artists=10)
    (data_dir / "images" / "a09_00.png").write_bytes(b"not an image")
    metadata = pd.read_csv(data_dir / "metadata.csv")
    metadata.loc[metadata.artist == "artist09", "file_name"] = "images/a09_00.png"  # listed 8 times
    metadata.loc[metadata.artist == "artist09", "artist"] = "artist09"
    metadata = metadata[(metadata.artist != "artist09") | (metadata.index == metadata.index[-1])]
    metadata.to_csv(data_dir / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"at least 10 artists.*found 9 \(after skipping 1 bad row\(s\): row \d+ "
                                        r"\(images/a09_00.png\): not an image"):
        image_frame(data_dir, skip_bad_images=True, **SPLIT)


def test_a_held_out_split_of_fewer_than_five_artists_is_warned_about(tmp_path):
    from data import FEW_ARTISTS, few_artist_warnings, image_table

    for artists, per_artist in ((12, 8), (60, 2)):
        table, _ = image_table(write_dataset(tmp_path / f"data{artists}", artists=artists, per_artist=per_artist),
                               **SPLIT)
        rows = pd.DataFrame({"artist": table["artist"], "split": table.features["split"].int2str(table["split"])})
        counts = {name: rows.loc[rows.split == name, "artist"].nunique() for name in ("val", "test")}
        expected = [f"the {name} split holds the works of {n} artist(s), fewer than 5" for name, n in counts.items()
                    if n < FEW_ARTISTS]
        warnings = few_artist_warnings(table)
        assert [w.split(":")[0] for w in warnings] == expected and (artists == 60) == (expected == []), counts


@pytest.mark.parametrize("mistake", ["folder name prefixed", "extension case", "one cause of two"])
def test_missing_files_that_share_one_fixable_cause_are_said_in_one_line(tmp_path, mistake):
    from pipeline.sources import DataError

    data_dir = write_dataset(tmp_path / "drawings")
    metadata = pd.read_csv(data_dir / "metadata.csv")
    if mistake == "folder name prefixed":
        metadata["file_name"] = "drawings/" + metadata["file_name"]
        expected = (f"all 96 missing files start with the data folder's own name 'drawings/': a file_name is relative "
                    f"to the data folder ('{metadata.file_name[0][9:]}', not '{metadata.file_name[0]}')")
    else:
        for path in (data_dir / "images").iterdir():
            path.rename(path.with_suffix(".PNG"))
        expected = ("all 96 missing files exist with the extension in another case ('images/a00_00.png' is "
                    "'a00_00.PNG' on disk): file names are case-sensitive")
        if mistake == "one cause of two":
            metadata.loc[len(metadata)] = ["images/never_made.png", "A", "artist00"]
    metadata.to_csv(data_dir / "metadata.csv", index=False)
    with pytest.raises(DataError) as refusal:
        image_frame(data_dir, **SPLIT)
    lines = str(refusal.value).splitlines()
    assert sum("file not found" in line for line in lines) == len(metadata)
    if mistake == "one cause of two":
        assert not any("missing files" in line for line in lines)
    else:
        assert lines[1].strip().startswith(expected)
