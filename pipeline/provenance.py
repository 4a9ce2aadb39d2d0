"""What each artifact of a run was made from, and the one check every reader makes before using it.

Every artifact a script derives in a run folder (head checkpoints, calibration.json, eval_*.json, model.json)
carries `made_from`: the run (run.json's run_id, new for each fresh run and kept by --resume), the data
manifest (the digest of the run's rows and split) and, for what is computed from trained heads, the content
hash of each checkpoint it used. The pair tables (pairs/, a Dataset) carry the data manifest they were made
from in their Dataset info; a cross-validation cell carries everything its result depends on. `load_artifact`
(JSON) and `load_dataset_artifact` (a saved Dataset) read an artifact and refuse it, naming it and what
differs, unless its record is the one the reader expects; `verified` is the same check for a reader that
leaves an artifact out instead (the model card) or computes it again (a cell). An artifact is stale when it
names another run or a checkpoint the run no longer holds (a resume that found a better epoch): `remove_stale`
deletes those.
"""

import hashlib
import json
import os
from pathlib import Path

from .errors import ArtrankError
from .files import read_json, remove_path
from .runs import RUN_RECORD, best_checkpoint, read_record, top_checkpoints

MADE_FROM = "made_from"
HEAD_WEIGHTS = "head.safetensors"


class ProvenanceError(ArtrankError):
    """An artifact was made from something other than what its reader works with."""


def checkpoint_sha256(directory: str | os.PathLike) -> str:
    """The content hash of a checkpoint: its weights' bytes (head.json only describes them)."""
    path = Path(directory) / HEAD_WEIGHTS
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise ProvenanceError(f"{path}: unreadable ({type(err).__name__}: {err.strerror or err})") from None


def run_origin(output_dir: str | os.PathLike) -> dict:
    """The run and data every artifact of OUTPUT_DIR must come from (from run.json)."""
    record = read_record(output_dir)
    if record is None or "run_id" not in record:
        raise ProvenanceError(f"{Path(output_dir) / RUN_RECORD}: no trained run recorded, so nothing read from "
                              f"{output_dir} can be checked: train first")
    return dict(run_id=record["run_id"], manifest_sha256=record["data"]["manifest_sha256"])


def data_origin(output_dir: str | os.PathLike) -> dict:
    """The data what is made from a run folder's rows alone must come from (make_pairs.py's record will do)."""
    record = read_record(output_dir)
    if record is None:
        raise ProvenanceError(f"{Path(output_dir) / RUN_RECORD}: no run recorded, so nothing read from "
                              f"{output_dir} can be checked: run make_pairs.py or train.py first")
    return dict(manifest_sha256=record["data"]["manifest_sha256"])


def made_from(output_dir: str | os.PathLike, *checkpoints: str | os.PathLike) -> dict:
    """The record an artifact computed from `checkpoints` of the run in OUTPUT_DIR carries."""
    return run_origin(output_dir) | ({"checkpoints": [checkpoint_sha256(c) for c in checkpoints]}
                                     if checkpoints else {})


def differences(artifact: dict, expected: dict) -> list[str]:
    """'key: the artifact's value, expected value' for each expected key the artifact's record does not match."""
    found = artifact.get(MADE_FROM) if isinstance(artifact.get(MADE_FROM), dict) else {}
    return [f"{key} {short(found.get(key))}, expected {short(value)}" for key, value in expected.items()
            if found.get(key) != value]


def short(value) -> str:
    """Hashes cut to 12 characters: enough to tell them apart in a message."""
    if isinstance(value, list):
        return "[" + ", ".join(map(short, value)) + "]"
    return value[:12] if isinstance(value, str) and len(value) > 12 else repr(value)


def load_artifact(path: str | os.PathLike, *, what: str, expected: dict, format_version: int | None = None,
                  required: bool = False) -> dict | None:
    """The JSON artifact at `path` (None when absent, unless `required`), refused in one line unless it is a
    dict of `format_version` (when given) whose made_from matches `expected`."""
    path = Path(path)
    value = read_json(path)
    if value is None:
        if required:
            raise ProvenanceError(f"{path}: missing; is this a {what} written by this version?")
        return None
    if not isinstance(value, dict):
        raise ProvenanceError(f"{path}: not a {what} (a JSON {type(value).__name__})")
    if format_version is not None and value.get("format") != format_version:
        raise ProvenanceError(f"{path}: {what} format {value.get('format')!r}, this code reads {format_version}")
    check_made_from(path, value, what=what, expected=expected)
    return value


def check_made_from(path: Path, artifact: dict, *, what: str, expected: dict) -> None:
    if differs := differences(artifact, expected):
        raise ProvenanceError(f"{path}: this {what} was made from another run, data set or checkpoint "
                              f"({'; '.join(differs)}); use the run's own, or make it again")


def dataset_info(origin: dict, *, features):
    """The datasets.DatasetInfo of a Dataset artifact of `features`: its made_from, kept by save_to_disk."""
    from datasets import DatasetInfo

    return DatasetInfo(description=json.dumps({MADE_FROM: origin}, sort_keys=True), features=features)


def load_dataset_artifact(path: str | os.PathLike, *, what: str, expected: dict):
    """The Dataset saved at `path`, refused in one line unless its info records a made_from matching `expected`."""
    from datasets import load_from_disk

    path = Path(path)
    try:
        dataset = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise ProvenanceError(f"{path}: not a saved {what} ({type(err).__name__}: {err})") from None
    try:
        record = json.loads(dataset.info.description or "null")
    except json.JSONDecodeError:
        record = None
    check_made_from(path, record if isinstance(record, dict) else {}, what=what, expected=expected)
    return dataset


def verified(path: str | os.PathLike, expected: dict) -> dict | None:
    """The JSON artifact at `path` when it exists and matches `expected`, else None: for readers that leave
    out what they cannot trust rather than stop (the model card)."""
    value = read_json_or_none(Path(path))
    return value if isinstance(value, dict) and not differences(value, expected) else None


def current_checkpoints(output_dir: str | os.PathLike) -> set[str]:
    """The content hashes of the checkpoints the run holds now (best and the top-k)."""
    folders = [best_checkpoint(output_dir), *sorted(top_checkpoints(output_dir).glob("epoch*"))]
    return {checkpoint_sha256(f) for f in folders if (f / HEAD_WEIGHTS).is_file()}


def stale(artifact: dict | None, run_id: str, checkpoints: set[str]) -> bool:
    found = (artifact or {}).get(MADE_FROM)
    if not isinstance(found, dict):
        return True
    return found.get("run_id") != run_id or not set(found.get("checkpoints") or []) <= checkpoints


def remove_stale(output_dir: str | os.PathLike) -> list[str]:
    """Delete what was derived from another run or from checkpoints the run no longer holds: evaluations
    (with their scores and figures) and the export. Returns the names removed."""
    out, removed = Path(output_dir), []
    run_id, checkpoints = run_origin(out)["run_id"], current_checkpoints(out)
    for report in sorted(out.glob("eval_*.json")):
        if stale(read_json_or_none(report), run_id, checkpoints):
            tag = report.stem.removeprefix("eval_")
            removed += remove_paths([report, out / f"scores_{tag}.csv", *out.glob(f"figures/*_{tag}.png")], out)
    if (out / "model.json").exists() and stale(read_json_or_none(out / "model.json"), run_id, checkpoints):
        removed += remove_paths([out / "model.json", *out.glob("model.onnx*"), *out.glob("model_fp16.onnx*")], out)
    return removed


def read_json_or_none(path: Path):
    """A damaged artifact is as stale as a foreign one: it is removed, not read."""
    try:
        return read_json(path)
    except ArtrankError:
        return None


def remove_paths(paths: list[Path], out: Path) -> list[str]:
    return [str(path.relative_to(out)) for path in paths if remove_path(path)]
