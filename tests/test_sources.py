"""pipeline/sources.py: a metadata.csv or metadata.jsonl folder, or a Hugging Face dataset, read as the same rows."""

import json
import os
import re
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SPLIT, image_frame, run_script, tiny_args, write_dataset
from PIL import Image
from samples import append_rows

from data import DataError, read_metadata
from pipeline.images import open_image
from pipeline.tables import cross_tier_pairs


def test_korean_file_name_with_spaces_is_read(tmp_path):
    data_dir = write_dataset(tmp_path / "data", artists=10, per_artist=4)
    name = "images/학생 그림 01.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(data_dir / name)
    # the second file's name is decomposed (NFD), as macOS writes it; the metadata has it composed (NFC)
    Image.new("RGB", (8, 8), (4, 5, 6)).save(data_dir / unicodedata.normalize("NFD", "images/김민지 2.png"))
    append_rows(data_dir, f'"{name}",S,김민지', "images/김민지 2.png,C,김민지")
    table, skipped = image_frame(data_dir, **SPLIT)
    assert skipped == []
    rows = table.set_index("file_name").loc[[name, "images/김민지 2.png"]]
    assert list(rows.tier) == ["S", "C"] and rows.split.nunique() == 1
    assert [np.asarray(open_image(p))[0, 0].tolist() for p in rows.path] == [[1, 2, 3], [4, 5, 6]]


def test_metadata_with_bom_extra_columns_blank_lines_and_lower_case_tiers(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    text = ("\ufefffile_name, tier ,artist,notes,image_id\n"
            "a.png,s,Kim,fine,\n"
            "\n"
            ' b.png , a ,"Lee, Jun",extra words,b-id\n'
            ",,,,\n"
            "c.png,c,Park,,\n"
            "\n\n")
    (tmp_path / "metadata.csv").write_text(text, encoding="utf-8")
    df = read_metadata(tmp_path)
    assert df.to_dict("list") == {
        "image_id": ["a.png", "b-id", "c.png"], "file_name": ["a.png", "b.png", "c.png"],
        "tier": ["S", "A", "C"], "artist": ["Kim", "Lee, Jun", "Park"],
        "path": [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")], "row": [2, 4, 6]}


@pytest.mark.parametrize("separator, said", [(",", None), (";", "semicolons"), ("\t", "tabs")])
def test_header_case_spacing_and_the_separator_are_matched_and_said(tmp_path, separator, said):
    from pipeline.sources import SEPARATORS, read_rows

    for name in ("a.png", "b.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    lines = [["File_Name", " TIER", "Artist ", "Image-ID", "Notes"], ["a.png", "s", "Kim", "x", "1,5"],
             ["b.png", "A", "Lee", "", "fine"]]
    (tmp_path / "metadata.csv").write_text("".join(separator.join(cells) + "\n" for cells in lines)
                                           if separator != "," else 'File_Name, TIER,Artist ,Image-ID,Notes\n'
                                           'a.png,s,Kim,x,"1,5"\nb.png,A,Lee,,fine\n')
    rows = read_rows(str(tmp_path), cache_dir=None)
    assert rows.rows[["file_name", "tier", "artist", "image_id"]].to_dict("list") == {
        "file_name": ["a.png", "b.png"], "tier": ["s", "A"], "artist": ["Kim", "Lee"], "image_id": ["x", "b.png"]}
    matched = f"{tmp_path / 'metadata.csv'}: read column(s) 'File_Name' as file_name, 'TIER' as tier, 'Artist' as " \
              "artist, 'Image-ID' as image_id"
    separated = [f"{tmp_path / 'metadata.csv'}: columns separated by {SEPARATORS[separator]}"] if said else []
    assert rows.notes == separated + [matched] and (not said or said in SEPARATORS[separator])


@pytest.mark.parametrize("text, message", [
    (None, "metadata.csv: not found"),
    ("", "missing column(s) ['file_name', 'tier', 'artist']"),
    ("file_name;tier\na.png;S\n", "missing column(s) ['file_name', 'tier', 'artist']; found ['file_name;tier']"),
    ("file_name,tier,artist\n\n", "no image rows"),
    ("file_name,tier,artist,tier\na.png,S,Kim,A\n", "column(s) ['tier'] appear more than once"),
    ("file_name,tier,artist\na.png,S,김민지\n".encode("cp949"), "line 2 is not UTF-8"),
])
def test_unusable_metadata_file_is_refused(tmp_path, text, message):
    if text is not None:
        (tmp_path / "metadata.csv").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=re.escape(message)):
        read_metadata(tmp_path)


def test_a_stray_quote_is_refused_naming_its_line_not_swallowing_the_rows_after_it(tmp_path):
    head = "file_name,tier,artist\na.png,S,Kim\n"
    (tmp_path / "metadata.csv").write_text(head + '"b.png,A,Lee\nc.png,B,Park\nd.png,C,Choi\n')
    with pytest.raises(DataError, match=r"line 3: cannot parse: unexpected end of data \(an unclosed or stray"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.csv").write_text(head + '"b.png,A,Lee\nc.png",B,Park\nd.png,C,Choi\n')  # closed later
    with pytest.raises(DataError, match=r"line 3: a field runs over 2 lines \(an unclosed quote\?\)"):
        read_metadata(tmp_path)


def test_file_names_must_stay_inside_the_data_folder_and_name_regular_files(tmp_path):

    outside = tmp_path / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    data_dir = tmp_path / "data"
    (data_dir / "folder.png").mkdir(parents=True)
    os.mkfifo(data_dir / "pipe.png")  # reading it would wait forever
    (data_dir / "link.png").symlink_to(outside)  # a link is followed: allowed
    (data_dir / "metadata.csv").write_text(
        "file_name,tier,artist\n../outside.png,S,Kim\n/etc/hostname,A,Lee\nfolder.png,B,Park\n"
        "pipe.png,C,Choi\nlink.png,S,Han\n")
    with pytest.raises(DataError) as info:
        image_frame(data_dir, **SPLIT)
    lines = [line.strip() for line in str(info.value).splitlines()[1:]]
    assert lines == ["row 2 (../outside.png): file_name must be a path inside the data folder (no absolute path, "
                     "no '..')",
                     "row 3 (/etc/hostname): file_name must be a path inside the data folder (no absolute path, "
                     "no '..')",
                     "row 4 (folder.png): not a regular file (a folder, FIFO or device)",
                     "row 5 (pipe.png): not a regular file (a folder, FIFO or device)"]


# ---------------------------------------------------------------- a Hugging Face dataset instead of a folder

def folder_rows(data_dir: Path) -> pd.DataFrame:
    rows = pd.read_csv(data_dir / "metadata.csv", dtype=str)
    return rows.assign(path=[str(data_dir / name) for name in rows.file_name])


def as_dataset(data_dir: Path, *, stored: bool = True, class_labels: bool = False):
    """The folder's rows as a Dataset: the image stored inside it (as the hub holds them), or named by path."""
    import datasets

    rows = folder_rows(data_dir)
    images = [{"bytes": Path(p).read_bytes(), "path": name} if stored else {"bytes": None, "path": p}
              for p, name in zip(rows.path, rows.file_name)]
    table = datasets.Dataset.from_dict({"image": images, "tier": list(rows.tier), "artist": list(rows.artist),
                                        "image_id": list(rows.file_name)})
    table = table.cast_column("image", datasets.Image())
    return table.cast_column("tier", datasets.ClassLabel(names=list("SABC"))) if class_labels else table


def same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    columns = ["image_id", "tier", "artist", "sha256", "split"]
    pd.testing.assert_frame_equal(a[columns].sort_values("image_id", ignore_index=True),
                                  b[columns].sort_values("image_id", ignore_index=True))


def test_a_saved_dataset_a_parquet_file_and_a_jsonl_folder_give_the_folder_s_table(dataset, tmp_path):
    expected, _ = image_frame(dataset)
    as_dataset(dataset, class_labels=True).save_to_disk(str(tmp_path / "saved"))
    as_dataset(dataset).to_parquet(str(tmp_path / "stored.parquet"))
    as_dataset(dataset, stored=False).to_parquet(str(tmp_path / "by_path.parquet"))
    rows = folder_rows(dataset)  # a parquet file written by pandas: image paths relative to the file, as strings
    rows.assign(image=[os.path.relpath(p, tmp_path) for p in rows.path], image_id=rows.file_name)[
        ["image", "tier", "artist", "image_id"]].to_parquet(tmp_path / "relative.parquet")
    jsonl = tmp_path / "jsonl"
    shutil.copytree(dataset / "images", jsonl / "images")
    (jsonl / "metadata.jsonl").write_text("".join(json.dumps(dict(file_name=r.file_name, tier=r.tier, artist=r.artist))
                                                  + "\n" for r in pd.read_csv(dataset / "metadata.csv").itertuples()))
    for source in ("saved", "stored.parquet", "by_path.parquet", "relative.parquet", "jsonl"):
        table, notes = image_frame(tmp_path / source, cache_dir=tmp_path / "cache")
        assert notes == [], source
        same_table(table, expected)
    stored = sorted((tmp_path / "cache" / "dataset-images").iterdir())  # stored images become files, once
    assert [p.name for p in stored] == sorted(set(expected.sha256))


def test_a_dataset_s_bad_rows_are_each_named_by_their_index(dataset, tmp_path):
    import datasets

    table = as_dataset(dataset).to_dict()
    table["tier"][3] = "D"
    table["image"][5] = {"bytes": b"not a picture", "path": "broken.png"}
    table["image_id"][5] = "broken.png"
    table["artist"][7] = ""
    datasets.Dataset.from_dict(table, features=as_dataset(dataset).features).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError) as info:
        image_frame(tmp_path / "saved", cache_dir=tmp_path / "cache")
    header, *lines = str(info.value).splitlines()
    assert header.startswith(f"{tmp_path / 'saved'} (dataset): 3 bad row(s)")
    # the names are the images' own (a stored image keeps its file's name), the rows the dataset's indices
    assert [line.split(":")[0].strip() for line in lines] == ["row 3 (a00_03.png)", "row 5 (broken.png)",
                                                               "row 7 (a00_07.png)"]
    assert "unknown tier 'D'" in lines[0] and "cannot identify its format" in lines[1] and "missing artist" in lines[2]


def test_a_dataset_without_the_columns_it_needs_is_refused_naming_them(dataset, tmp_path):
    as_dataset(dataset).remove_columns("artist").save_to_disk(str(tmp_path / "no_artist"))
    with pytest.raises(DataError, match=re.escape("missing column(s) ['artist']")):
        image_frame(tmp_path / "no_artist", cache_dir=tmp_path / "cache")
    numbered = as_dataset(dataset).remove_columns("tier")
    numbered.add_column("tier", [1] * len(numbered)).save_to_disk(str(tmp_path / "numbered"))
    with pytest.raises(DataError, match=re.escape("column 'tier' is Value('int64'); expected the letters S, A, B")):
        image_frame(tmp_path / "numbered", cache_dir=tmp_path / "cache")


def test_a_hub_dataset_that_cannot_be_reached_is_one_line_naming_it(tmp_path):
    with pytest.raises(DataError) as info:  # the tests run offline (HF_HUB_OFFLINE=1)
        image_frame("someone/drawings", cache_dir=tmp_path / "cache")
    assert str(info.value).startswith("someone/drawings: no such folder or file here, and the dataset hub cannot")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="not found; a data_dir is a folder with metadata.csv"):
        image_frame(tmp_path / "missing" / "drawings", cache_dir=tmp_path / "cache")


@pytest.mark.slow
def test_train_runs_on_a_parquet_dataset_and_splits_it_as_the_folder(tmp_path, dataset, tiny_backbone):
    as_dataset(dataset).to_parquet(str(tmp_path / "drawings.parquet"))
    run_script("train.py", *tiny_args(tmp_path, tmp_path / "drawings.parquet", tiny_backbone, epochs=1))
    expected, _ = image_frame(dataset)
    recorded = pd.read_csv(tmp_path / "run" / "splits.csv", dtype=str)
    same_table(recorded, expected.astype(str))
    test_pairs = json.loads((tmp_path / "run" / "final_metrics.json").read_text())["test/pairs"]
    assert test_pairs == len(cross_tier_pairs(expected.tier[expected.split == "test"].to_numpy())[0])
