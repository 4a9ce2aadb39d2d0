"""pipeline/corrections.py: DATA_DIR/corrections.csv gives the tier training sees (the latest correction of
an image wins), is refused naming the file and line when it names an unknown image, a bad tier or a tier
that is not the image's; a corrected data folder is another run's data."""

import shutil

import pandas as pd
import pytest
from conftest import image_frame, run_script, write_dataset

from data import DataError, read_metadata
from pipeline.answers import Answers


def corrections(data_dir, *lines: str):
    path = data_dir / "corrections.csv"
    path.write_text("file_name,tier,corrected_tier,rater\n" + "".join(f"{line}\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("corrections") / "data")


def test_the_latest_correction_of_an_image_is_its_tier_everywhere_rows_are_read(folder, tmp_path):
    data = shutil.copytree(folder, tmp_path / "data")
    before = read_metadata(data).set_index("file_name")["tier"]
    assert (before["images/a00_00.png"], before["images/a00_01.png"]) == ("S", "A")
    answers = Answers(data)  # as the review page writes them
    answers.correct("images/a00_00.png", "S", "B", "Ms Kim")
    answers.correct("images/a00_00.png", "B", "C", "Mr Lee")  # a second opinion, made against the first
    answers.correct("images/a00_01.png", "A", "A", "Ms Kim")  # confirmed as it is
    after = read_metadata(data).set_index("file_name")["tier"]
    assert after["images/a00_00.png"] == "C" and after["images/a00_01.png"] == "A"
    assert (after.drop("images/a00_00.png") == before.drop("images/a00_00.png")).all()
    table, _ = image_frame(data)  # the table training reads: the same tiers
    assert table.set_index("file_name")["tier"].to_dict() == after.to_dict()
    assert "corrected" not in (data / "metadata.csv").read_text() and "images/a00_00.png,S," in (
        data / "metadata.csv").read_text()  # never edited in place


@pytest.mark.parametrize("line, refusal", [
    ("images/nowhere.png,S,A,T", r"line 3: unknown image 'images/nowhere.png'"),
    ("images/a00_00.png,S,D,T", r"line 3: corrected_tier 'D', expected one of S, A, B, C"),
    ("images/a00_00.png,A,B,T", r"line 3: tier 'A' of 'images/a00_00.png' is not its tier 'S'"),
])
def test_a_bad_correction_is_refused_in_one_line_naming_the_file_and_line(folder, tmp_path, line, refusal):
    data = shutil.copytree(folder, tmp_path / "data")
    path = corrections(data, "images/a00_01.png,A,B,T", line)  # a good line first: nothing is half applied
    with pytest.raises(DataError, match=rf"^{path}: 1 bad row\(s\), nothing corrected: {refusal}") as caught:
        read_metadata(data)
    assert "\n" not in str(caught.value)


def test_a_correction_made_before_metadata_changed_is_refused(folder, tmp_path):
    data = shutil.copytree(folder, tmp_path / "data")
    path = corrections(data, "images/a00_00.png,S,B,T")
    metadata = data / "metadata.csv"
    metadata.write_text(metadata.read_text().replace("images/a00_00.png,S,", "images/a00_00.png,A,"))
    with pytest.raises(DataError, match=rf"^{path}: 1 bad row\(s\), nothing corrected: line 2: tier 'S' of "
                                        r"'images/a00_00.png' is not its tier 'A'"):
        read_metadata(data)


@pytest.mark.slow
def test_an_old_run_evaluated_after_a_correction_is_refused(exported, tmp_path):
    data = shutil.copytree(exported["data"], tmp_path / "data")
    given = pd.read_csv(exported["out"] / "splits.csv").set_index("file_name")["tier"]
    name = next(n for n in given.index if given[n] == "S")
    corrections(data, f"{name},S,C,Ms Kim")
    result = run_script("evaluate.py", *exported["args"], "--data_dir", data, check=False)
    assert result.returncode == 1 and "the data differ from this run's" in result.stderr
    assert "with another tier" in result.stderr, result.stderr
