"""pipeline/answers.py: one row per answer, written at once and crash-safe; undo only this session's own last
row; refusals of a file that is not the expected one."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT

from pipeline.answers import AnswerError, Answers
from pipeline.comparisons import read_comparison_rows
from pipeline.corrections import read_correction_rows


def test_each_judgement_is_one_row_on_disk_at_once(tmp_path):
    answers = Answers(tmp_path)
    answers.judge("images/x.png", "images/y.png", "a", "Ms Kim")
    path = tmp_path / "comparisons.csv"
    assert path.read_text() == "image_a,image_b,winner,rater\nimages/x.png,images/y.png,a,Ms Kim\n"
    answers.judge("images/y.png", "images/z, the second.png", "tie", "Ms Kim")
    rows, problems = read_comparison_rows(path)
    assert problems == [] and [row for _, row in rows] == [
        dict(image_a="images/x.png", image_b="images/y.png", winner="a", rater="Ms Kim"),
        dict(image_a="images/y.png", image_b="images/z, the second.png", winner="tie", rater="Ms Kim")]


def test_appends_to_an_existing_file_in_its_format(tmp_path):
    path = tmp_path / "comparisons.csv"
    path.write_bytes(b"image_a,image_b,winner,rater\r\np.png,q.png,b,teacher1\r\n")  # the csv module's own endings
    Answers(tmp_path).judge("q.png", "r.png", "b", "T")
    rows, problems = read_comparison_rows(path)
    assert problems == [] and [r["image_a"] for _, r in rows] == ["p.png", "q.png"]


@pytest.mark.parametrize("content, refusal", [
    (b"image_a,image_b,winner\np.png,q.png,a\n",
     "header 'image_a,image_b,winner', expected 'image_a,image_b,winner,rater'"),
    (b"image_a,image_b,winner,rater\np.png,q.png,a,T", "the last line does not end in a newline"),
])
def test_a_file_not_in_the_expected_form_is_refused_and_left_alone(tmp_path, content, refusal):
    path = tmp_path / "comparisons.csv"
    path.write_bytes(content)
    with pytest.raises(AnswerError, match=rf"^{path}: {refusal}") as caught:
        Answers(tmp_path).judge("p.png", "q.png", "a", "T")
    assert "\n" not in str(caught.value) and path.read_bytes() == content


def test_undo_removes_only_this_session_s_last_row(tmp_path):
    path = tmp_path / "comparisons.csv"
    mine, other = Answers(tmp_path), Answers(tmp_path)
    mine.judge("a.png", "b.png", "a", "T1")
    mine.judge("c.png", "d.png", "b", "T1")
    assert mine.comparisons.undo() == ["c.png", "d.png", "b", "T1"]
    assert path.read_text() == "image_a,image_b,winner,rater\na.png,b.png,a,T1\n"
    other.judge("e.png", "f.png", "tie", "T2")  # another page on the same folder writes after mine
    with pytest.raises(AnswerError, match=rf"^{path}: its last row is no longer the one this session wrote"):
        mine.comparisons.undo()
    with pytest.raises(AnswerError, match="nothing to undo"):
        Answers(tmp_path).comparisons.undo()
    assert path.read_text().splitlines()[1:] == ["a.png,b.png,a,T1", "e.png,f.png,tie,T2"]
    assert other.comparisons.undo() == ["e.png", "f.png", "tie", "T2"]
    assert mine.comparisons.undo() == ["a.png", "b.png", "a", "T1"]
    assert path.read_text() == "image_a,image_b,winner,rater\n"


def test_each_file_undoes_its_own_last_answer(tmp_path):
    answers = Answers(tmp_path)
    answers.judge("a.png", "b.png", "a", "T")
    answers.correct("a.png", "B", "A", "T")
    assert answers.comparisons.undo() == ["a.png", "b.png", "a", "T"]  # the correction given after it stays
    assert len(read_correction_rows(tmp_path / "corrections.csv")) == 1
    assert answers.corrections.undo() == ["a.png", "B", "A", "T"]
    assert read_correction_rows(tmp_path / "corrections.csv") == []


@pytest.mark.parametrize("call", [lambda a: a.judge("a.png", "b.png", "A better", "T"),
                                  lambda a: a.judge("a.png", "b.png", "a", " "),
                                  lambda a: a.correct("a.png", "B", "D", "T"),
                                  lambda a: a.judge("a.png", "b\n.png", "a", "T")])
def test_a_bad_answer_writes_nothing(tmp_path, call):
    with pytest.raises(AnswerError):
        call(Answers(tmp_path))
    assert not (tmp_path / "comparisons.csv").exists() and not (tmp_path / "corrections.csv").exists()


WRITER = textwrap.dedent("""
    import sys
    from pipeline.answers import Answers
    answers, first = Answers(sys.argv[1]), int(sys.argv[2])
    for i in range(first, first + 100000):
        answers.judge(f"images/a{i}.png", f"images/b{i}.png", "ab"[i % 2], "a rater, with a comma")
        print(i, flush=True)  # reported only once the row is on disk
""")


def test_killing_the_writer_during_writes_loses_nothing_already_written(tmp_path):
    reported = []
    for round, pause in enumerate((0.3, 0.2, 0.25)):  # three kills: each lands at another point of a write
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(round * 100000)],
                                  stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        reported += [int(writer.stdout.readline()) for _ in range(20)]  # writing by now
        time.sleep(pause)  # then killed at a moment not tied to its output: most likely in a write or an fsync
        os.kill(writer.pid, signal.SIGKILL)
        reported += [int(line) for line in writer.stdout]  # what it reported before the kill
        writer.wait()
        rows, problems = read_comparison_rows(tmp_path / "comparisons.csv")
        assert problems == [] and (tmp_path / "comparisons.csv").read_bytes().endswith(b"\n")
        written = [int(row["image_a"][len("images/a"):-len(".png")]) for _, row in rows]
        # Every reported row is there, in order; at most one more per kill (written, not yet reported).
        assert [i for i in written if i in set(reported)] == reported and len(written) - len(reported) <= round + 1
        assert all(row["rater"] == "a rater, with a comma" for _, row in rows)
    Answers(tmp_path).judge("x.png", "y.png", "a", "T")  # the file stays usable
