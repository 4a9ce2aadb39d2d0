"""pipeline/runs.py: one run per folder, one command at a time; resumes and readers check what the run is made of."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ROOT, run_script, tiny_args, write_dataset
from PIL import Image

from data import read_pairs
from pipeline.runs import (
    RunFolderError,
    RunLock,
    check_same_data,
    chosen_checkpoint,
    manifest_changes,
    manifest_digest,
    remove_run,
    write_record,
)
from pipeline.tables import to_dataset

# Runs a script in a fresh interpreter that sends itself SIGINT each time `target` (module:attribute.path)
# is called: Ctrl-C pressed while that step runs.
INTERRUPT = """
import functools, importlib, os, signal, sys
sys.argv = [{script!r}, *{args!r}]
sys.path.insert(0, {root!r})
*path, name = {attribute!r}.split(".")
owner = functools.reduce(getattr, path, importlib.import_module({module!r}))
original = getattr(owner, name)
def strike(*a, **k):
    os.kill(os.getpid(), signal.SIGINT)
    return original(*a, **k)
setattr(owner, name, strike)
importlib.import_module({script_module!r}).main()
"""

pytestmark = pytest.mark.slow


def interrupt(script: str, args: list[str], *, target: str) -> subprocess.CompletedProcess:
    module, attribute = target.split(":")
    code = INTERRUPT.format(script=script, args=[str(a) for a in args], root=str(ROOT), module=module,
                            attribute=attribute, script_module=script.removesuffix(".py"))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".lock"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone):
    """One finished, evaluated run; each test works on a copy of it."""
    base = tmp_path_factory.mktemp("trained")
    args = tiny_args(base, write_dataset(base / "data"), tiny_backbone, epochs=3)
    run_script("train.py", *args)
    run_script("evaluate.py", *args)
    return base, args


@pytest.fixture
def run(trained, tmp_path):
    base, args = trained
    shutil.copytree(base / "data", tmp_path / "data")
    shutil.copytree(base / "run", tmp_path / "run")
    config = Path(args[args.index("--config") + 1])
    copy = tmp_path / config.name
    copy.write_text(config.read_text().replace(str(base), str(tmp_path)))  # the copy's own paths
    return tmp_path, ["--config", str(copy)]


def test_fresh_run_into_a_trained_folder_is_refused_and_the_flag_clears_it(run):
    base, args = run
    before = snapshot(base / "run")
    line = one_line_error(run_script("train.py", *args, check=False))
    assert "holds a trained run" in line and "--overwrite_output_dir" in line
    assert snapshot(base / "run") == before  # config.json and all the rest untouched
    (base / "run" / "checkpoints" / "top" / "epoch0099").mkdir()  # a stray checkpoint of the old run
    export = RunLock(base / "run", command="export_onnx.py")  # an export of the old run: the run's file
    export.acquire()
    (base / "run" / "model.onnx").write_bytes(b"old export")
    export.release()
    (base / "run" / "my_notes.txt").write_text("mine")
    run_script("train.py", *args, "--overwrite_output_dir", "true", "--epochs", "2")
    out = base / "run"
    assert not (out / "checkpoints" / "top" / "epoch0099").exists() and not (out / "model.onnx").exists()
    assert not list(out.glob("eval_*.json"))  # the old run's evaluation went with it
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2
    assert (out / "my_notes.txt").read_text() == "mine"  # not a run file: left alone


def test_resume_with_other_settings_is_refused_naming_each_key_before_any_work(run):
    base, args = run
    before = snapshot(base / "run")
    changes = {"lr": "0.01", "image_size": "42", "score_head": "norm", "epochs": "9", "seed": "7"}
    result = run_script("train.py", *args, "--resume", "true", *[x for k, v in changes.items() for x in (f"--{k}", v)],
                        check=False)
    line = one_line_error(result)
    assert line.startswith("error: cannot resume") and all(f"{key}:" in line for key in changes), line
    assert "checking images" not in result.stderr  # refused before the image scan
    assert snapshot(base / "run") == before


def test_resume_of_a_finished_run_says_so_and_changes_nothing(run):
    base, args = run
    before = snapshot(base / "run")
    result = run_script("train.py", *args, "--resume", "true", "--num_workers", "0")  # a runtime key may change
    assert "holds a finished run" in result.stdout
    assert snapshot(base / "run") == before


def test_resume_after_the_stop_decision_trains_no_further_epoch(run):
    base, args = run
    out = base / "run"
    metrics = json.loads((out / "final_metrics.json").read_text())
    log = (out / "train_log.jsonl").read_text()
    (out / "final_metrics.json").unlink()  # as if killed while scoring the test split
    run_script("train.py", *args, "--resume", "true")
    assert (out / "train_log.jsonl").read_text() == log
    assert json.loads((out / "final_metrics.json").read_text()) == metrics


class WritesAFile:
    """Unpickled in full, this runs code: it writes `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def test_resume_never_runs_code_from_a_pickle_in_the_run_folder(run):
    base, args = run
    out, marker = base / "run", base / "code-ran"
    (state,) = (out / "state").iterdir()
    (out / "final_metrics.json").unlink()  # unfinished, so that resume loads the saved state
    for index in (0, 1):  # where Accelerate keeps registered objects, which it unpickles in full
        torch.save(WritesAFile(marker), state / f"custom_checkpoint_{index}.pkl")
    line = one_line_error(run_script("train.py", *args, "--resume", "true", check=False))
    assert not marker.exists()
    assert f"{state}: refused to load custom_checkpoint_0.pkl, custom_checkpoint_1.pkl" in line, line
    for index in (0, 1):
        (state / f"custom_checkpoint_{index}.pkl").unlink()
    torch.save(WritesAFile(marker), state / "random_states_0.pkl")  # Accelerate's own, read with weights_only
    line = one_line_error(run_script("train.py", *args, "--resume", "true", check=False))
    assert not marker.exists()
    assert f"{state / 'random_states_0.pkl'}: refused to load: it would call builtins.exec" in line, line
    assert not (out / "final_metrics.json").exists()


def test_evaluate_refuses_a_checkpoint_trained_by_another_run(run):
    base, args = run
    other = base / "other-run"  # another seed: its training split holds images of this run's test split
    run_script("train.py", *args, "--output_dir", other, "--seed", "7", "--epochs", "1")
    before = snapshot(base / "run")
    line = one_line_error(run_script("evaluate.py", *args, "--checkpoint", other / "checkpoints" / "best",
                                     check=False))
    assert line.startswith(f"error: {other / 'checkpoints' / 'best' / 'head.json'}: this checkpoint of train.py was "
                           "made from another run"), line
    assert snapshot(base / "run") == before


def test_resume_to_the_end_removes_the_partial_run_s_results_and_writes_a_missing_card(tmp_path, dataset,
                                                                                      tiny_backbone):
    from pipeline.provenance import checkpoint_sha256

    args = tiny_args(tmp_path, dataset, tiny_backbone, epochs=4)
    out = tmp_path / "run"
    assert interrupt("train.py", args, target="pipeline.state:save_state").returncode == 130  # after epoch 0
    run_script("evaluate.py", *args)  # the partial run's best checkpoint, evaluated
    partial = json.loads((out / "eval_test.json").read_text())
    run_script("train.py", *args, "--resume", "true")
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["best_epoch"] > 0 and checkpoint_sha256(out / "checkpoints" / "best") not in partial["made_from"][
        "checkpoints"]  # a later epoch is the best now, so the partial evaluation describes another model
    assert not (out / "eval_test.json").exists() and not (out / "scores_test.csv").exists()
    card = (out / "README.md").read_text()
    assert f"| test | **{final['test/pairwise_acc']:.4f}** |" in card
    (out / "README.md").unlink()  # killed between final_metrics.json and the card
    result = run_script("train.py", *args, "--resume", "true")
    assert "holds a finished run" in result.stdout and (out / "README.md").read_text() == card


def test_resume_after_new_works_is_refused_naming_what_changed(run):
    base, args = run
    Image.new("RGB", (40, 40), (9, 9, 9)).save(base / "data" / "images" / "new.png")
    with open(base / "data" / "metadata.csv", "a") as f:
        f.write("images/new.png,S,artist99\n")
    (base / "run" / "final_metrics.json").unlink()  # an unfinished run, so that resume has work to do
    for script, extra in (("train.py", ["--resume", "true"]), ("evaluate.py", []), ("make_pairs.py", []),
                          ("export_onnx.py", [])):
        line = one_line_error(run_script(script, *args, *extra, check=False))
        assert "1 image(s) added (e.g. 'images/new.png')" in line, (script, line)


def test_evaluate_make_pairs_and_export_with_another_seed_are_refused(run):
    base, args = run
    config = Path(args[1])
    config.write_text(json.dumps(json.loads(config.read_text()) | {"seed": 7}))  # export takes no --seed flag
    for script in ("evaluate.py", "make_pairs.py", "export_onnx.py"):
        line = one_line_error(run_script(script, *args, check=False))
        assert "seed: 42 -> 7" in line, (script, line)


def test_changed_image_content_is_named(run):
    base, args = run
    victim = sorted((base / "data" / "images").iterdir())[0]
    Image.new("RGB", (40, 48), (200, 10, 10)).save(victim)
    line = one_line_error(run_script("evaluate.py", *args, check=False))
    assert "1 image(s) with other content" in line


def test_resume_with_other_backbone_weights_is_refused(run, tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    base, args = run
    torch.manual_seed(1)
    other = tmp_path / "other-backbone"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                             patch_size=14, image_size=56)).save_pretrained(other)
    (base / "run" / "final_metrics.json").unlink()
    line = one_line_error(run_script("train.py", *args, "--resume", "true", "--backbone", other, check=False))
    assert "backbone" in line and "cannot resume" in line


def test_failed_start_leaves_the_finished_run_as_it_was(run):
    base, args = run
    before = snapshot(base / "run")
    line = one_line_error(run_script("train.py", *args, "--overwrite_output_dir", "true", "--data_dir",
                                     base / "no-such-data", check=False))
    assert "no-such-data" in line
    assert snapshot(base / "run") == before


def test_demo_data_is_never_generated_into_a_typed_path(tmp_path, tiny_backbone):
    config = tmp_path / "demo_like.json"
    config.write_text(json.dumps({"demo_data": True, "data_dir": str(tmp_path / "data" / "dmeo")}))
    result = run_script("make_pairs.py", "--config", config, "--output_dir", tmp_path / "run", check=False)
    assert "demo data is generated only into" in one_line_error(result)
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_holder(run):
    base, args = run
    lock = RunLock(base / "run", command="train.py")
    lock.acquire()
    try:
        line = one_line_error(run_script("evaluate.py", *args, check=False))
        assert f"pid {os.getpid()}" in line and "train.py" in line
    finally:
        lock.release()
    with pytest.raises(RunFolderError, match="in use by"):  # the lock also holds within one process
        first, second = RunLock(base / "x", command="a"), RunLock(base / "x", command="b")
        first.acquire()
        try:
            second.acquire()
        finally:
            first.release()


def test_a_crashed_holder_s_lock_is_taken_over(run):
    base, args = run
    (base / "run" / ".lock").write_text("train.py (pid 999999 on gone, since 2020-01-01 00:00:00)\n")
    run_script("evaluate.py", *args)  # the kernel dropped the dead process's flock: nothing to clear by hand


def test_ctrl_c_during_extraction_is_one_line_and_keeps_what_it_had(tmp_path, dataset, tiny_backbone):
    args = tiny_args(tmp_path, dataset, tiny_backbone)
    result = interrupt("train.py", args, target="transformers:Dinov2Model.forward")
    assert result.returncode == 130
    assert one_line_error(result).startswith("interrupted:")
    run_script("train.py", *args, "--resume", "true")  # and the run then completes
    assert (tmp_path / "run" / "final_metrics.json").is_file()


def test_ctrl_c_after_the_training_loop_is_not_swallowed(tmp_path, dataset, tiny_backbone):
    args = tiny_args(tmp_path, dataset, tiny_backbone, epochs=2)
    result = interrupt("train.py", args, target="train:fit_calibration")
    assert result.returncode == 130 and "--resume scores the test split" in one_line_error(result)
    assert not (tmp_path / "run" / "final_metrics.json").exists()
    log = (tmp_path / "run" / "train_log.jsonl").read_text()
    run_script("train.py", *args, "--resume", "true")
    assert (tmp_path / "run" / "train_log.jsonl").read_text() == log  # no epoch trained twice
    assert (tmp_path / "run" / "final_metrics.json").is_file()


def test_make_pairs_then_train_then_rerun_make_pairs_is_the_demo_flow(tmp_path, dataset, tiny_backbone):
    args = tiny_args(tmp_path, dataset, tiny_backbone, epochs=1)
    run_script("make_pairs.py", *args)
    run_script("train.py", *args)  # the folder holds only make_pairs' output: not another run
    read_pairs(tmp_path / "run")  # the trained run's record names the rows and split pairs/ was made from
    run_script("make_pairs.py", *args)  # same data and split: its tables are rewritten, the run kept
    assert (tmp_path / "run" / "final_metrics.json").is_file()
    line = one_line_error(run_script("train.py", *args, check=False))
    assert "--overwrite_output_dir" in line
    run_script("make_pairs.py", *args, "--overwrite_output_dir", "true")
    assert not (tmp_path / "run" / "final_metrics.json").exists()


def test_make_pairs_then_a_metadata_change_then_train_is_refused(tmp_path, dataset, tiny_backbone):
    args = tiny_args(tmp_path, dataset, tiny_backbone, epochs=1)
    run_script("make_pairs.py", *args)
    before = snapshot(tmp_path / "run")
    metadata = pd.read_csv(dataset / "metadata.csv")
    metadata.loc[metadata.artist == "artist04", "artist"] = "Artist Four"  # an artist renamed
    metadata.to_csv(dataset / "metadata.csv", index=False)
    line = one_line_error(run_script("train.py", *args, check=False))
    assert "the data differ from this run's (8 image(s) by another artist" in line, line
    assert snapshot(tmp_path / "run") == before  # pairs/ still labels the split it was made with


def test_a_fresh_run_into_a_folder_of_the_user_s_is_refused_and_the_flag_deletes_none_of_it(tmp_path, dataset,
                                                                                          tiny_backbone):
    args = tiny_args(tmp_path, dataset, tiny_backbone, epochs=1)
    out = tmp_path / "run"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "sketch.png").write_bytes(b"the user's own figure")
    (out / "notes.md").write_text("mine")
    before = snapshot(out)
    line = one_line_error(run_script("train.py", *args, check=False))
    assert line == (f"error: {out} is not empty and holds no run (figures, notes.md): a run there would write "
                    "over files of the same names; use another --output_dir, or pass --overwrite_output_dir to write "
                    "the run there (nothing of yours is deleted, but files of the run's names are replaced)")
    assert snapshot(out) == before
    run_script("train.py", *args, "--overwrite_output_dir", "true")
    assert (out / "figures" / "sketch.png").read_bytes() == b"the user's own figure"
    assert (out / "notes.md").read_text() == "mine" and (out / "final_metrics.json").is_file()


def test_evaluate_or_export_without_a_trained_run_is_one_line(tmp_path, dataset, tiny_backbone):
    args = tiny_args(tmp_path, dataset, tiny_backbone)
    for script in ("evaluate.py", "export_onnx.py"):
        line = one_line_error(run_script(script, *args, check=False))
        assert line.startswith("error: no trained run in"), line
    assert not (tmp_path / "run").exists()


def test_evaluation_refuses_a_split_that_differs_from_training(tmp_path):
    table = pd.DataFrame({"image_id": ["x", "y", "z"], "file_name": ["x", "y", "z"], "tier": ["S", "A", "B"],
                          "artist": ["p", "q", "r"], "path": ["x", "y", "z"], "row": [2, 3, 4],
                          "sha256": ["1", "2", "3"], "split": ["train", "val", "test"]})
    write_record(tmp_path, config={}, table=to_dataset(table), stage="train")
    check_same_data(tmp_path, to_dataset(table), comparisons_sha256=None)
    moved = table.assign(split=["train", "val", "train"])
    with pytest.raises(RunFolderError, match=r"1 image\(s\) in another split \(e.g. 'z'\)"):
        check_same_data(tmp_path, to_dataset(moved), comparisons_sha256=None)
    retiered = table.assign(tier=["S", "A", "C"], sha256=["1", "9", "3"])
    with pytest.raises(RunFolderError, match=r"1 image\(s\) with other content \(e.g. 'y'\); 1 image\(s\) with "
                                             r"another tier \(e.g. 'z'\)"):
        check_same_data(tmp_path, to_dataset(retiered), comparisons_sha256=None)
    assert "x,x,S,p,1,train" in (tmp_path / "splits.csv").read_text()  # the same rows for people


def test_the_data_change_list_and_the_manifest_hash_see_a_changed_tier_or_artist():
    table = pd.DataFrame({"image_id": ["x", "y", "z"], "file_name": ["x", "y", "z"], "tier": ["S", "A", "B"],
                          "artist": ["p", "q", "r"], "sha256": ["1", "2", "3"], "split": ["train", "val", "test"]})
    digest = manifest_digest(table)
    assert manifest_digest(table.iloc[::-1]) == digest  # the order of the rows is not the data
    changes = {"tier": ["S", "C", "B"], "artist": ["p", "q", "s"], "sha256": ["1", "2", "4"],
               "split": ["train", "test", "test"], "file_name": ["x", "y2", "z"]}
    digests = {column: manifest_digest(table.assign(**{column: values})) for column, values in changes.items()}
    assert digest not in digests.values() and len(set(digests.values())) == len(changes)
    assert manifest_changes(table, table.assign(tier=changes["tier"])) == ["1 image(s) with another tier (e.g. 'y')"]
    assert manifest_changes(table, table.assign(artist=changes["artist"])) == [
        "1 image(s) by another artist (e.g. 'z')"]


def test_checkpoint_names_the_head_that_is_read_and_the_run_s_best_is_the_default(tmp_path):
    from pipeline.config import Config

    assert chosen_checkpoint(Config(output_dir=str(tmp_path))) == tmp_path / "checkpoints" / "best"
    elsewhere = tmp_path / "checkpoints" / "top" / "epoch0003"
    assert chosen_checkpoint(Config(output_dir=str(tmp_path), checkpoint=str(elsewhere))) == elsewhere


def recorded_rows_table():
    rows = pd.DataFrame([dict(image_id=f"i{k}", file_name=f"i{k}.png", tier="SABC"[k % 4], artist=f"a{k // 4}",
                              path=f"i{k}.png", row=k + 2, sha256=f"{k:064x}", split="train") for k in range(8)])
    return to_dataset(rows)


def listed_files(out: Path) -> list[str]:
    return json.loads((out / "run.json").read_text())["files"]


def test_the_run_lists_the_files_it_wrote_and_overwrite_removes_those_alone(tmp_path):
    out = tmp_path / "run"
    (out / "figures").mkdir(parents=True)  # the user's folder, which the run then writes into
    (out / "figures" / "sketch.png").write_bytes(b"the user's own figure")
    lock = RunLock(out, command="train.py")
    lock.acquire()
    write_record(out, config=dict(output_dir=str(out)), table=recorded_rows_table(), stage="train")
    (out / "checkpoints" / "best").mkdir(parents=True)
    (out / "checkpoints" / "best" / "head.safetensors").write_bytes(b"weights")
    (out / "figures" / "curves.png").write_bytes(b"the run's figure")
    (out / "eval_test.json").write_text("{}")
    lock.release()
    ours = ["checkpoints", "eval_test.json", "image_table", "run.json", "splits.csv"]
    assert listed_files(out) == ours  # figures/ was there before, and stays the user's

    # Between commands the user keeps files of run-file names in the folder; a command that writes nothing
    # of the run's claims nothing, and one that writes a new file claims that one alone.
    (out / "eval_mine.json").write_text("mine")
    (out / "scores_manual.csv").write_text("mine")
    (out / "model.onnx.bak").write_bytes(b"mine")
    for command, written in (("evaluate.py", None), ("export_onnx.py", "model.json")):
        lock = RunLock(out, command=command)
        lock.acquire()
        if written:
            (out / written).write_text("{}")
        lock.release()
    assert listed_files(out) == sorted(ours + ["model.json"])

    removed = remove_run(out)
    assert sorted(removed) == sorted(ours + ["model.json"])
    assert sorted(p.name for p in out.iterdir()) == [".lock", "eval_mine.json", "figures", "model.onnx.bak",
                                                     "scores_manual.csv"]
    assert (out / "figures" / "sketch.png").read_bytes() == b"the user's own figure"


def test_files_a_killed_command_wrote_are_listed_by_the_next_command(tmp_path):
    out = tmp_path / "run"
    lock = RunLock(out, command="train.py")
    lock.acquire()
    write_record(out, config=dict(output_dir=str(out)), table=recorded_rows_table(), stage="train")
    (out / "state").mkdir()
    (out / "train_log.jsonl").write_text("")
    lock.file.close()  # killed: the kernel drops the flock, nothing is released or listed
    assert "state" not in listed_files(out)
    (out / "notes.md").write_text("the user's, written after the kill")
    lock = RunLock(out, command="train.py --resume true")
    lock.acquire()  # takes the dead holder's lock over, and lists what it wrote
    lock.release()
    assert listed_files(out) == ["image_table", "run.json", "splits.csv", "state", "train_log.jsonl"]


def test_overwrite_of_a_record_that_lists_no_files_is_refused_and_deletes_nothing(tmp_path):
    out = tmp_path / "run"
    write_record(out, config=dict(output_dir=str(out)), table=recorded_rows_table(), stage="train")
    record = json.loads((out / "run.json").read_text())
    del record["files"]
    (out / "run.json").write_text(json.dumps(record | {"format": 3}))  # an older version's run
    before = snapshot(out)
    with pytest.raises(RunFolderError, match="lists no files of its run") as refusal:
        remove_run(out)
    assert str(refusal.value).startswith(f"{out / 'run.json'}: ") and "\n" not in str(refusal.value)
    assert snapshot(out) == before
