"""pipeline/cli.py: what every script does around its work; the commands a new user types first."""

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_script, val_images

from pipeline import cli


def only_error_line(result) -> str:
    """The command failed with one `error:` line, last on stderr, and no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or ": error:" in line]
    assert len(errors) == 1 and errors[0] == lines[-1], lines[-5:]
    return errors[0]


@pytest.fixture
def fresh_clone(tmp_path) -> Path:
    """The root of a fresh clone as far as the scripts can tell: configs/, no runs/, data/ or models/."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


@pytest.mark.slow
def test_bare_predict_without_a_trained_run_says_what_to_do_in_one_line(fresh_clone):
    line = only_error_line(run_script("predict.py", "drawing.png", cwd=fresh_clone, check=False))
    assert "no ONNX model at runs/baseline/model.onnx" in line and "export_onnx.py" in line
    assert not (fresh_clone / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("script", ["export_onnx.py", "evaluate.py"])
def test_bare_commands_without_a_trained_run_answer_in_one_line(fresh_clone, script):
    # The intended commands after training; with no trained run each says so, before any hub lookup.
    line = only_error_line(run_script(script, cwd=fresh_clone, check=False, timeout=120))
    assert "runs/baseline" in line


@pytest.mark.slow
def test_bare_train_without_data_answers_in_one_line(fresh_clone):
    line = only_error_line(run_script("train.py", cwd=fresh_clone, check=False, timeout=120))
    assert "data/my_drawings" in line


# ---------------------------------------------------------------- the handler every script's main() runs in

def test_a_refusal_is_one_line_and_exit_1_and_a_bug_keeps_its_exception():
    from pipeline.errors import ArtrankError

    with pytest.raises(SystemExit) as exit_info, cli.one_line_errors():
        raise ArtrankError("data/x: not found")
    assert exit_info.value.code == "error: data/x: not found"  # printed on stderr, exit status 1
    with pytest.raises(ValueError, match="a bug"), cli.one_line_errors():
        raise ValueError("a bug")  # not a refusal: the traceback is the report


def test_a_full_or_read_only_disk_or_a_folder_named_as_a_file_is_one_line_and_other_os_errors_keep_theirs():
    import errno

    for number, text in ((errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system"),
                         (errno.EACCES, "Permission denied")):
        with pytest.raises(SystemExit) as exit_info, cli.one_line_errors():
            raise OSError(number, text, "/runs/x/.model.json.tmp-1")
        assert exit_info.value.code == f"error: /runs/x/.model.json.tmp-1: {text}; nothing was written"
    with pytest.raises(SystemExit) as exit_info, cli.one_line_errors():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp/.scores.tmp", None, "/tmp/scores")  # os.replace
    assert exit_info.value.code == "error: /tmp/scores: Is a directory; nothing was written"
    with pytest.raises(ConnectionResetError), cli.one_line_errors():
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


@pytest.mark.slow
def test_predict_out_naming_a_folder_is_one_line(exported, tmp_path):
    (tmp_path / "scores").mkdir()
    result = run_script("predict.py", *exported["args"], val_images(exported)[0], "--out", tmp_path / "scores",
                        check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'scores'}: Is a directory")


def test_ctrl_c_is_one_line_saying_what_was_kept_and_exit_130(capsys):
    with pytest.raises(SystemExit) as exit_info, cli.one_line_errors() as phase:
        phase.kept = "the features extracted so far"
        raise KeyboardInterrupt
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "interrupted: the features extracted so far\n"


def test_deferred_interrupts_hold_ctrl_c_and_sigterm_until_the_block_ends():
    with cli.deferred_interrupts() as interruption:
        assert not interruption
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # delivered here, and only noted
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert interruption
    with pytest.raises(KeyboardInterrupt):  # after the block, Ctrl-C interrupts again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


@pytest.mark.slow
def test_a_cache_folder_that_cannot_be_created_is_one_line(tmp_path, dataset, tiny_backbone):
    from conftest import tiny_args

    (tmp_path / "cache").write_text("a file where the cache folder should be")
    result = run_script("train.py", *tiny_args(tmp_path, dataset, tiny_backbone, epochs=1), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'cache'}/"), result.stderr[-500:]
