"""pipeline/provenance.py: every artifact names the run and checkpoints it was made from; readers check it."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import spec_pairs
from datasets import Dataset, load_from_disk

from data import pair_table, read_pairs
from model import HEAD_FORMAT, RankingHead, load_head, save_head
from pipeline.calibration import read_calibration, write_calibration
from pipeline.config import Config
from pipeline.provenance import MADE_FROM, ProvenanceError, made_from, remove_stale, run_origin
from pipeline.runs import write_record
from pipeline.tables import MANIFEST_COLUMNS, frame, to_dataset

CALIBRATION = {"slope": 2.0, "pairs": 10, "tier_cuts": [{"above": "S", "below": "A", "threshold": 0.0}]}


def trained_folder(out: Path) -> Path:
    """A run folder as train.py records it (run.json with a run_id, the rows), with two checkpoints."""
    config = vars(Config(output_dir=str(out), data_dir="data"))
    rows = pd.DataFrame([dict(image_id=f"i{k}", file_name=f"i{k}.png", tier="SABC"[k % 4], artist=f"a{k // 4}",
                              path=f"i{k}.png", row=k + 2, sha256=f"{k:064x}", split="train") for k in range(8)])
    write_record(out, config=config, table=to_dataset(rows), stage="train")
    for name, weights in (("best", b"best weights"), ("top/epoch0001", b"epoch 1 weights")):
        (out / "checkpoints" / name).mkdir(parents=True)
        (out / "checkpoints" / name / "head.safetensors").write_bytes(weights)
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_run_records_a_new_run_id_and_each_artifact_names_its_run_and_checkpoints(tmp_path):
    first, second = trained_folder(tmp_path / "a"), trained_folder(tmp_path / "b")
    a, b = json.loads((first / "run.json").read_text()), json.loads((second / "run.json").read_text())
    assert len(a["run_id"]) == 32 and a["run_id"] != b["run_id"]
    assert a["data"]["manifest_sha256"] == b["data"]["manifest_sha256"]  # the same rows: the same manifest
    origin = made_from(first, first / "checkpoints" / "best", first / "checkpoints" / "top" / "epoch0001")
    assert origin == dict(run_id=a["run_id"], manifest_sha256=a["data"]["manifest_sha256"],
                          checkpoints=[sha(b"best weights"), sha(b"epoch 1 weights")])


def test_a_head_trained_in_another_run_is_refused_naming_both_runs(tmp_path):
    ours, theirs = trained_folder(tmp_path / "ours"), trained_folder(tmp_path / "theirs")
    head = RankingHead(input_dim=4, hidden_dim=4, proj_dim=2)
    meta = dict(format=HEAD_FORMAT, input_dim=4, hidden_dim=4, proj_dim=2, dropout=0.1, score_head="linear",
                tier_model=False, image_size=56)
    save_head(head, theirs / "foreign", meta | {MADE_FROM: run_origin(theirs)})
    save_head(head, ours / "own", meta | {MADE_FROM: run_origin(ours)})
    load_head(ours / "own", identity={"image_size": 56}, run=run_origin(ours))
    mine, other = run_origin(ours)["run_id"], run_origin(theirs)["run_id"]
    with pytest.raises(ProvenanceError) as refusal:
        load_head(theirs / "foreign", identity={"image_size": 56}, run=run_origin(ours))
    message = str(refusal.value)
    assert message.startswith(f"{theirs / 'foreign' / 'head.json'}: this checkpoint of train.py was made from "
                              "another run") and "\n" not in message
    assert f"run_id {other[:12]}, expected {mine[:12]}" in message


def test_a_calibration_serves_only_the_checkpoint_it_was_fitted_on_and_only_its_run(tmp_path):
    out = trained_folder(tmp_path / "run")
    best, other = out / "checkpoints" / "best", out / "checkpoints" / "top" / "epoch0001"
    write_calibration(out, CALIBRATION, checkpoint=best)
    assert {k: v for k, v in read_calibration(out, checkpoint=best).items() if k != MADE_FROM} == CALIBRATION
    assert read_calibration(out, checkpoint=other) is None  # its slope and cuts are the best's, not this one's
    (best / "head.safetensors").write_bytes(b"retrained weights")  # the same folder, other weights
    assert read_calibration(out, checkpoint=best) is None
    stranger = trained_folder(tmp_path / "stranger")
    (stranger / "calibration.json").write_text((out / "calibration.json").read_text())
    with pytest.raises(ProvenanceError, match=r"calibration.json: this calibration of train.py was made from "
                                              r"another run, data set or checkpoint \(run_id "):
        read_calibration(stranger, checkpoint=stranger / "checkpoints" / "best")


def test_what_describes_a_checkpoint_the_run_no_longer_holds_is_removed_and_nothing_else(tmp_path):
    out = trained_folder(tmp_path / "run")
    best, top = out / "checkpoints" / "best", out / "checkpoints" / "top" / "epoch0001"
    partial = {MADE_FROM: made_from(out, best)}  # evaluated and exported while training was interrupted
    (out / "eval_test.json").write_text(json.dumps(partial | {"split": "test"}))
    (out / "scores_test.csv").write_text("image_id,score\n")
    (out / "figures").mkdir()
    (out / "figures" / "score_by_tier_test.png").write_bytes(b"png")
    (out / "model.json").write_text(json.dumps(partial))
    (out / "model.onnx").write_bytes(b"onnx")
    (out / "eval_val.json").write_text(json.dumps({MADE_FROM: made_from(out, top)}))  # a checkpoint still held
    (out / "eval_train.json").write_text(json.dumps({"split": "train"}))  # records nothing: cannot be trusted
    (out / "my_notes.txt").write_text("mine")
    assert remove_stale(out) == ["eval_train.json"]
    (best / "head.safetensors").write_bytes(b"a better epoch's weights")  # the resumed run found a better epoch
    assert sorted(remove_stale(out)) == ["eval_test.json", "figures/score_by_tier_test.png", "model.json",
                                         "model.onnx", "scores_test.csv"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "eval_val.json", "figures", "image_table",
                                                     "my_notes.txt", "run.json", "splits.csv"]


def test_a_pair_table_is_read_only_with_the_rows_and_split_it_was_made_from(tmp_path):
    out = trained_folder(tmp_path / "run")
    rows = frame(load_from_disk(str(out / "image_table")))
    made_with = json.loads((out / "run.json").read_text())["data"]["manifest_sha256"]
    pair_table(to_dataset(rows, MANIFEST_COLUMNS)).save_to_disk(str(out / "pairs"))
    pairs = frame(read_pairs(out))
    assert list(zip(pairs.image_a, pairs.image_b, pairs.label)) == spec_pairs(list(rows.image_id), list(rows.tier))

    # The data changed since (an image re-tiered) and run.json records the new rows: pairs/ labels the old ones.
    retiered = rows.assign(tier=np.where(rows.image_id == "i0", "C", rows.tier))
    write_record(out, config=vars(Config(output_dir=str(out), data_dir="data")),
                 table=to_dataset(retiered, MANIFEST_COLUMNS), stage="pairs")
    now = json.loads((out / "run.json").read_text())["data"]["manifest_sha256"]
    assert now != made_with
    with pytest.raises(ProvenanceError) as refusal:
        read_pairs(out)
    message = str(refusal.value)
    assert message.startswith(f"{out / 'pairs'}: this pair table was made from") and "\n" not in message
    assert f"manifest_sha256 {made_with[:12]}, expected {now[:12]}" in message

    # A pair table that records nothing (an older version's, or one saved by hand) is refused too.
    Dataset.from_pandas(pairs[["image_a", "image_b"]]).save_to_disk(str(tmp_path / "bare"))
    shutil.rmtree(out / "pairs")
    shutil.copytree(tmp_path / "bare", out / "pairs")
    with pytest.raises(ProvenanceError, match=f"manifest_sha256 None, expected {now[:12]}"):
        read_pairs(out)
