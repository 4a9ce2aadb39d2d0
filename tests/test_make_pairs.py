"""make_pairs.py: the split and the pair tables written as Datasets, with a summary; bad input refused before
anything is written."""


import pandas as pd
import pytest
from conftest import EXPECTED, image_frame, run_script, spec_pairs, tiny_args

from data import read_pairs
from pipeline.tables import SPLITS, frame


@pytest.mark.slow
def test_make_pairs_writes_splits_pairs_and_a_summary(tmp_path, dataset):
    result = run_script("make_pairs.py", *tiny_args(tmp_path, dataset, tmp_path / "unused"))
    out = tmp_path / "run"
    splits = pd.read_csv(out / "splits.csv", dtype=str)
    assert list(splits.columns) == ["image_id", "file_name", "tier", "artist", "sha256", "split"]
    table, _ = image_frame(dataset, val_fraction=0.1, test_fraction=0.1, seed=42)
    assert splits.equals(table[splits.columns].astype(str))  # the split train.py computes itself

    pairs = frame(read_pairs(out))  # made from the rows and split run.json records
    assert list(pairs.columns) == ["image_a", "image_b", "label", "split"]
    for name in SPLITS:
        rows = splits[splits.split == name]
        expected = spec_pairs(list(rows.image_id), list(rows.tier))
        got = pairs[pairs.split == name]
        assert list(zip(got.image_a, got.image_b, got.label.astype(int))) == expected
        count_line = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
        assert count_line.split()[-3:] == [str(len(rows)), str(rows.artist.nunique()), str(len(expected))]
    assert f"({len(pairs)} pairs)" in result.stdout


@pytest.mark.slow
def test_make_pairs_refuses_bad_rows_and_writes_nothing(tmp_path, bad_folder):
    out = tmp_path / "run"
    result = run_script("make_pairs.py", *tiny_args(tmp_path, bad_folder, tmp_path / "unused"), check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    problems = [line.strip() for line in result.stderr[result.stderr.index("error: "):].splitlines()[1:]]
    assert len(problems) == 12  # one line per problem: rows 105 and 106 have two each
    for row, (name, reason) in EXPECTED.items():
        assert any(line.startswith(f"row {row} ({name}): ") and reason in line for line in problems), row
    assert not out.exists() or not any(out.iterdir())

    result = run_script("make_pairs.py", *tiny_args(tmp_path, bad_folder, tmp_path / "unused"),
                        "--skip_bad_images", "true")
    skipped = [line for line in result.stdout.splitlines() if line.startswith("warning: skipped row")]
    assert {int(line.split()[3]) for line in skipped} == set(EXPECTED)
    written = (out / "splits.csv").read_text().splitlines()
    assert len(written) == 1 + 96 and not any("truncated" in line or "bomb" in line for line in written)
    assert (out / "pairs").is_dir()
