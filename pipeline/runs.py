"""The run folder: one run per folder, one command in it at a time, and what the run is made of.

run.json records every key of the run's identity (pipeline/config.py: all roles but runtime), the backbone
weights' id, the preprocessing version and a digest of its rows; splits.csv (for people) and image_table/
(a Dataset) hold every row with its content hash and split, and `files` lists what the run wrote (the lock
finds it out), the only files --overwrite_output_dir removes. Each check below compares today's settings or
data with that record and refuses, naming what differs. What training leaves is pipeline/state.py's.
"""

import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
from pathlib import Path

from .config import FEATURES, SPLIT, identity
from .errors import ArtrankError
from .files import atomic_dir, atomic_write_json, atomic_write_text, read_json, remove_path
from .images import PREPROCESSING_VERSION
from .novelty import NOVELTY_REFERENCE
from .tables import MANIFEST_COLUMNS, frame, to_dataset


class RunFolderError(ArtrankError):
    """The run folder cannot be used as asked; the message names the file or key and what to do."""


LOCK_NAME = ".lock"
RUN_RECORD = "run.json"
SPLITS_CSV = "splits.csv"
IMAGE_TABLE = "image_table"
PAIRS = "pairs"
COMPARISONS = "comparisons"  # the teachers' comparisons of the run's images, beside pairs/
TRAIN_LOG = "train_log.jsonl"
FINAL_METRICS = "final_metrics.json"
STATE = "state"
REVIEW_DIR = "review"  # review.py's label audit and next pairs, read by the review page
# 2: the rows are also kept as a Dataset (image_table/); 3: a trained run has a run_id; 4: it lists its files
RECORD_FORMAT = 4
# The names a run may write; of these, run.json lists those it wrote, and --overwrite_output_dir deletes those alone.
RUN_FILES = (RUN_RECORD, "config.json", SPLITS_CSV, IMAGE_TABLE, PAIRS, COMPARISONS, TRAIN_LOG, STATE,
             "checkpoints", "calibration.json", NOVELTY_REFERENCE, FINAL_METRICS, "eval_*.json", "scores_*.csv",
             "figures", "model.onnx*", "model_fp16.onnx*", "model.json", "README.md", "wandb", REVIEW_DIR)
# The files that show a head was trained here (a folder with only make_pairs.py's output holds none).
TRAINED_FILES = (STATE, "checkpoints", TRAIN_LOG, FINAL_METRICS)


# ---------------------------------------------------------------- one command per folder at a time

class RunLock:
    """An exclusive lock on OUTPUT_DIR that names its holder (pid, host, start, command).

    flock is released by the kernel when the holder dies, so a crashed run's lock is taken over
    cleanly; the file stays (unlinking a lock file races with a process about to lock it). The lock file
    also keeps what the folder held when the command started (`contents`): on release, or when the next
    command takes over a killed holder's lock, the run's files the command wrote are listed in run.json
    (`claim_files`).
    """

    def __init__(self, output_dir: str | os.PathLike, *, command: str):
        self.dir, self.command, self.file, self.created, self.before = Path(output_dir), command, None, False, {}

    def acquire(self) -> None:
        import fcntl
        import socket
        import time

        self.created = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file = open(self.dir / LOCK_NAME, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip().split("\n")[0] or "another process"
            self.file.close()
            raise RunFolderError(f"{self.dir} is in use by {holder}; wait for it to end or use another "
                                 "--output_dir") from None
        self.file.seek(0)
        if (killed := started_with(self.file.read())) is not None:  # a holder that never released: what did it write?
            claim_files(self.dir, killed)
        self.before = contents(self.dir)
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{self.command} (pid {os.getpid()} on {socket.gethostname()}, "
                        f"since {time.strftime('%Y-%m-%d %H:%M:%S')})\n{json.dumps(self.before)}\n")
        self.file.flush()

    def release(self, *, failed: bool = False) -> None:
        if self.file is None:
            return
        claim_files(self.dir, self.before)
        self.file.truncate(0)
        self.file.close()  # closing drops the flock
        self.file = None
        if failed and self.created and [p.name for p in self.dir.iterdir()] == [LOCK_NAME]:
            shutil.rmtree(self.dir, ignore_errors=True)  # a start that failed leaves no empty run folder


def contents(folder: Path) -> dict[str, int]:
    """The inode of each name at the top of `folder`: a name written since (atomically: a new inode) or new is
    told from one left as it was, a folder of the user's that the run only writes into included."""
    return {p.name: p.lstat().st_ino for p in folder.iterdir() if p.name != LOCK_NAME}


def started_with(lock_text: str) -> dict | None:
    """The contents a lock's holder recorded when it started, or None (a lock released, or of an older version)."""
    lines = lock_text.splitlines()
    try:
        found = json.loads(lines[1]) if len(lines) > 1 else None
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def claim_files(output_dir: str | os.PathLike, before: dict[str, int]) -> None:
    """List in run.json the run's names (RUN_FILES) that are new or written anew since `before`: the files and
    folders the run wrote. What was there untouched is not the run's, whatever its name."""
    out = Path(output_dir)
    try:
        record = read_json(out / RUN_RECORD)
    except ArtrankError:
        return  # a damaged record: the next command refuses it
    if not isinstance(record, dict) or not isinstance(record.get("files"), list):
        return
    now = contents(out)
    written = {name for name, inode in now.items() if before.get(name) != inode
               and any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FILES)}
    if not written <= set(record["files"]):
        atomic_write_json(out / RUN_RECORD, record | {"files": sorted(set(record["files"]) | written)})


@contextlib.contextmanager
def locked_run_folder(folder: str | os.PathLike, accelerator, command: str):
    """Hold `folder` for this command alone (the main process locks; every process learns the outcome)."""
    from accelerate.utils import broadcast_object_list

    lock, refusal = RunLock(folder, command=command), None
    if accelerator.is_main_process:
        try:
            lock.acquire()
        except RunFolderError as err:
            refusal = str(err)
    (refusal,) = broadcast_object_list([refusal])
    if refusal:
        raise RunFolderError(refusal)
    failed = True
    try:
        yield
        failed = False
    finally:
        lock.release(failed=failed)


# ---------------------------------------------------------------- checkpoints

def best_checkpoint(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints" / "best"


def top_checkpoints(output_dir: str | os.PathLike) -> Path:
    """The folder of the top-k checkpoints, one epochNNNN/ each."""
    return Path(output_dir) / "checkpoints" / "top"


def top_members(output_dir: str | os.PathLike) -> list[Path]:
    """The top-k checkpoints' folders (epochNNNN), in epoch order."""
    return sorted(p for p in top_checkpoints(output_dir).glob("epoch*") if p.is_dir() and p.name[5:].isdigit())


def chosen_checkpoint(cfg) -> Path:
    """--checkpoint, else the run's best."""
    return Path(cfg.checkpoint) if cfg.checkpoint else best_checkpoint(cfg.output_dir)


# ---------------------------------------------------------------- the run's identity

def manifest_digest(rows) -> str:
    """sha256 over every row's id, name, tier, artist, content hash and split, in image_id order."""
    listed = rows[list(MANIFEST_COLUMNS)].sort_values("image_id", kind="stable").to_csv(index=False)
    return hashlib.sha256(listed.encode()).hexdigest()


def write_record(output_dir: str | os.PathLike, *, config: dict, table, stage: str,
                 backbone_id: str | None = None, run_id: str | None = None, comparisons_sha256: str = "") -> None:
    """run.json (what the results depend on), splits.csv and image_table/ (the rows, their hashes and split).

    A trained run (stage "train") records its backbone weights, the preprocessing its features came from and
    its run_id (`run_id`, else a new one): every artifact derived from the run names it (pipeline/provenance.py).
    """
    import uuid

    preprocessing = PREPROCESSING_VERSION if stage == "train" else None
    out, rows = Path(output_dir), frame(table)
    atomic_write_text(out / SPLITS_CSV, rows[list(MANIFEST_COLUMNS)].to_csv(index=False))
    with atomic_dir(out / IMAGE_TABLE) as tmp:
        to_dataset(rows, MANIFEST_COLUMNS).save_to_disk(str(tmp))
    data = dict(images=len(rows), artists=int(rows.artist.nunique()), manifest_sha256=manifest_digest(rows),
                comparisons_sha256=comparisons_sha256)  # the comparisons file's bytes ("" when none)
    run_id = (run_id or uuid.uuid4().hex) if stage == "train" else None
    atomic_write_json(out / RUN_RECORD, dict(format=RECORD_FORMAT, stage=stage, run_id=run_id, config=identity(config),
                                             backbone_id=backbone_id, preprocessing=preprocessing, data=data,
                                             files=owned_files(out) or []))


def read_record(output_dir: str | os.PathLike) -> dict | None:
    path = Path(output_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{path}: unreadable ({err}); delete the run's files (or the folder) to start afresh, "
                             "or use another --output_dir") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        found = record.get("format") if isinstance(record, dict) else None
        raise RunFolderError(f"{path}: run record format {found!r}, this code reads {RECORD_FORMAT}; delete the "
                             "run's files (or the folder) to start afresh, or use another --output_dir")
    return record


def recorded_rows(output_dir: str | os.PathLike):
    """The run's rows as recorded (a DataFrame of MANIFEST_COLUMNS), from image_table/."""
    from datasets import load_from_disk

    path = Path(output_dir) / IMAGE_TABLE
    try:
        return frame(load_from_disk(str(path)))
    except (FileNotFoundError, ValueError) as err:
        raise RunFolderError(f"{path}: {type(err).__name__}: {err}; the run's split is unknown, so no split can be "
                             "trusted") from None


def trained_files(output_dir: str | os.PathLike) -> list[str]:
    return [name for name in TRAINED_FILES if (Path(output_dir) / name).exists()]


def differing_keys(recorded: dict, config: dict, *roles: str) -> list[str]:
    """'key: recorded -> now' for each identity key (or each key of `roles`) whose value differs."""
    now = identity(config, *roles)
    keys = sorted(set(identity(recorded, *roles)) | set(now))
    return [f"{k}: {recorded.get(k)!r} -> {now.get(k)!r}" for k in keys if recorded.get(k) != now.get(k)]


def settings_changed(record: dict, config: dict) -> list[str]:
    """The identity keys that differ from the run record's: make_pairs.py's record fixes only the split,
    a started run's fixes every identity key."""
    return differing_keys(record["config"], config, *((SPLIT,) if record["stage"] == "pairs" else ()))


def owned_files(output_dir: str | os.PathLike) -> list[str] | None:
    """The names run.json lists as the run's: none without a record, None when a record lists none (damaged, or
    of an older version)."""
    try:
        record = read_json(Path(output_dir) / RUN_RECORD)
    except ArtrankError:
        return None
    if record is None:
        return []
    files = record.get("files") if isinstance(record, dict) else None
    return [name for name in files if isinstance(name, str)] if isinstance(files, list) else None


def remove_run(output_dir: str | os.PathLike) -> list[str]:
    """Delete the files and folders run.json lists as the run's, and run.json; anything else there stays, a
    file of a run file's name included. A folder that holds no run record holds no run: none is deleted."""
    out, removed = Path(output_dir), []
    if (owned := owned_files(out)) is None:
        raise RunFolderError(f"{out / RUN_RECORD}: damaged or of an older version, it lists no files of its run, so "
                             "--overwrite_output_dir cannot tell the run's files from yours: delete the run's files "
                             "yourself, or use another --output_dir")
    for name in sorted(set(owned) - {RUN_RECORD}) + [RUN_RECORD]:
        path = out / name
        if Path(name).name != name or name in ("", ".", "..", LOCK_NAME):
            continue  # only names at the top of the folder, as claim_files lists them
        if remove_path(path):
            removed.append(name)
    return removed


def check_fresh_start(output_dir: str | os.PathLike, config: dict, *, overwrite: bool) -> None:
    """A fresh run needs a folder that holds no other run (or --overwrite_output_dir, which deletes it)."""
    out = Path(output_dir)
    if overwrite:
        return
    if trained := trained_files(out):
        raise RunFolderError(f"{out} holds a trained run ({', '.join(trained)}); pass --overwrite_output_dir to "
                             "delete it and start afresh, or --resume to continue it")
    record = read_record(out)
    if record and (differs := settings_changed(record, config)):
        raise RunFolderError(f"{out / RUN_RECORD} was made with other settings ({'; '.join(differs)}); pass "
                             "--overwrite_output_dir to start afresh, or use another --output_dir")
    if record is None and out.is_dir() and (theirs := sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)):
        raise RunFolderError(f"{out} is not empty and holds no run ({', '.join(theirs[:5])}"
                             f"{', ...' if len(theirs) > 5 else ''}): a run there would write over files of the same "
                             "names; use another --output_dir, or pass --overwrite_output_dir to write the run there "
                             "(nothing of yours is deleted, but files of the run's names are replaced)")


def check_resume(output_dir: str | os.PathLike, config: dict) -> dict | None:
    """A resume continues the same run: every identity key must match. Returns the run record."""
    out = Path(output_dir)
    record = read_record(out)
    if record is None and trained_files(out):
        raise RunFolderError(f"cannot resume {out}: it has no {RUN_RECORD} (made by an older version?); start "
                             "afresh with --overwrite_output_dir")
    if record and (differs := settings_changed(record, config)):
        raise RunFolderError(f"cannot resume {out} with other settings ({'; '.join(differs)}); resume with the "
                             f"run's own ({out / 'config.json'}) or start afresh with --overwrite_output_dir")
    return record


def check_reader(output_dir: str | os.PathLike, config: dict, *, what: str) -> dict:
    """A script that reads a trained run needs its split and feature settings. Returns the run record."""
    out = Path(output_dir)
    record = read_record(out)
    if record is None or record["stage"] != "train":
        raise RunFolderError(f"no trained run in {out} (no {RUN_RECORD} from train.py): train first, e.g. "
                             f"accelerate launch train.py --config CONFIG --output_dir {out}")
    if differs := differing_keys(record["config"], config, SPLIT, FEATURES):
        raise RunFolderError(f"{out} was trained with other settings ({'; '.join(differs)}); {what} with the "
                             f"run's own ({out / 'config.json'})")
    return record


def manifest_changes(recorded, rows) -> list[str]:
    """What differs between the run's recorded rows and today's (both DataFrames), by kind."""
    old, new = recorded.set_index("image_id"), rows.set_index("image_id")
    changes = []

    def note(ids, what: str) -> None:
        ids = sorted(ids)
        if ids:
            changes.append(f"{len(ids)} image(s) {what} (e.g. {ids[0]!r})")

    note(set(new.index) - set(old.index), "added")
    note(set(old.index) - set(new.index), "removed")
    both = sorted(set(old.index) & set(new.index))
    old, new = old.loc[both], new.loc[both]
    for column, what in (("sha256", "with other content"), ("tier", "with another tier"),
                         ("artist", "by another artist"), ("split", "in another split")):
        note(old.index[old[column].to_numpy() != new[column].to_numpy()], what)
    return changes


def check_same_data(output_dir: str | os.PathLike, table, *, comparisons_sha256: str | None) -> None:
    """The rows, their content and their split must be the run's: a re-split could put trained images in
    today's test split. The comparisons file (its digest) must be the run's too, for every caller that reads
    comparisons; None is for a caller that reads none (export), and each caller says which it is."""
    recorded = (read_record(output_dir) or {}).get("data", {}).get("comparisons_sha256", "")
    if comparisons_sha256 is not None and recorded != comparisons_sha256:
        raise RunFolderError(f"{Path(output_dir) / RUN_RECORD}: the comparisons file differs from this run's; a run "
                             "keeps its data: use the run's comparisons.csv, or train a new run")
    if changes := manifest_changes(recorded_rows(output_dir), frame(table)):
        raise RunFolderError(f"{Path(output_dir) / IMAGE_TABLE}: the data differ from this run's "
                             f"({'; '.join(changes)}); a run keeps its data and split: use the run's data, or train "
                             "a new run")
