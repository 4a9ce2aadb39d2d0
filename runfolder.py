"""The run folder: crash-safe writes (a file or a folder appears whole or not at all).

Every script writes through these, so a kill at any moment leaves the previous version in place.
"""

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

UMASK = os.umask(0o022)  # read once, at import, before any thread could create a file under a changed mask
os.umask(UMASK)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory that replaces `path` only if the block completes.

    A directory cannot be renamed over a non-empty one, so the old one is moved aside first; a crash
    between the two renames leaves `path.old`, which `recover_dir` puts back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    plain_modes(tmp)
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def plain_modes(root: str | os.PathLike) -> None:
    """Give every file under `root` the mode a plain open() gives (0644 under the usual umask).

    safetensors writes its files 0600, so checkpoints could not be read by anyone else sharing the run.
    """
    for directory, _, files in os.walk(root):
        for name in files:
            os.chmod(Path(directory) / name, 0o666 & ~UMASK)


def recover_dir(path: str | os.PathLike) -> Path:
    """Put back `path` from `path.old` if a crash hit `atomic_dir` between its two renames."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    if not path.exists() and old.exists():
        os.rename(old, path)
    return path


# ---------------------------------------------------------------- one run per folder at a time

class RunFolderError(ValueError):
    """The run folder cannot be used as asked; the message names the file or key and what to do."""


LOCK_NAME = ".lock"


class RunLock:
    """An exclusive lock on OUTPUT_DIR that names its holder (pid, host, start, command).

    flock is released by the kernel when the holder dies, so a crashed run's lock is taken over
    cleanly; the file stays (unlinking a lock file races with a process about to lock it).
    """

    def __init__(self, output_dir: str | os.PathLike, *, command: str):
        self.dir, self.command, self.file, self.created = Path(output_dir), command, None, False

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
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunFolderError(f"{self.dir} is in use by {holder}; wait for it to end or use another "
                                 "--output_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{self.command} (pid {os.getpid()} on {socket.gethostname()}, "
                        f"since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        self.file.flush()

    def release(self, *, failed: bool = False) -> None:
        if self.file is None:
            return
        self.file.truncate(0)
        self.file.close()  # closing drops the flock
        self.file = None
        if failed and self.created and [p.name for p in self.dir.iterdir()] == [LOCK_NAME]:
            shutil.rmtree(self.dir, ignore_errors=True)  # a start that failed leaves no empty run folder


# ---------------------------------------------------------------- the run's identity

RUN_RECORD = "run.json"
RECORD_FORMAT = 1
# Keys that change how a command runs, never what it computes: they may differ between the commands of
# one run (and on --resume). Every other key is part of the run's identity. `epochs` is not among them:
# it is the cosine schedule's length, so more epochs is another run, not a longer one. The backbone is
# named by path or hub id here and identified by its weights (backbone_id), checked once it is resolved.
RUNTIME_KEYS = frozenset({
    "data_dir", "output_dir", "cache_dir", "demo_data", "skip_bad_images", "num_workers", "extract_batch_size",
    "wandb_project", "wandb_mode", "sample_pairs", "resume", "resume_from_checkpoint", "overwrite_output_dir",
    "split", "checkpoint", "ensemble", "bootstrap", "backbone", "random_backbone"})
# What decides the split, and what decides the features: scripts that read a trained run need these equal.
SPLIT_KEYS = ("val_fraction", "test_fraction", "seed")
FEATURE_KEYS = ("image_size", "feature", "mixed_precision")
# Files a run writes; --overwrite_output_dir deletes these and nothing else.
RUN_FILES = ("run.json", "config.json", "splits.csv", "pairs", "train_log.jsonl", "state", "checkpoints",
             "calibration.json", "final_metrics.json", "eval_*.json", "scores_*.csv", "figures", "model.onnx*",
             "model_fp16.onnx*", "model.json", "README.md", "wandb")
# The files that show a head was trained here (a folder with only make_pairs.py's output holds none).
TRAINED_FILES = ("state", "checkpoints", "train_log.jsonl", "final_metrics.json")
MANIFEST_COLUMNS = ["image_id", "file_name", "tier", "artist", "sha256", "split"]


def identity_config(config: dict) -> dict:
    return {k: v for k, v in sorted(config.items()) if k not in RUNTIME_KEYS}


def manifest_digest(table) -> str:
    """sha256 over every row's id, name, tier, artist, content hash and split, in image_id order."""
    rows = table[MANIFEST_COLUMNS].sort_values("image_id", kind="stable").to_csv(index=False)
    return hashlib.sha256(rows.encode()).hexdigest()


def read_record(output_dir: str | os.PathLike) -> dict | None:
    path = Path(output_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{path}: unreadable ({err}); pass --overwrite_output_dir to start this run "
                             "folder afresh") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise RunFolderError(f"{path}: run record format {record.get('format') if isinstance(record, dict) else None!r}"
                             f", this code reads {RECORD_FORMAT}; pass --overwrite_output_dir to start afresh")
    return record


def trained_files(output_dir: str | os.PathLike) -> list[str]:
    return [name for name in TRAINED_FILES if (Path(output_dir) / name).exists()]


def differing_keys(recorded: dict, config: dict, keys=None) -> list[str]:
    """'key: recorded -> now' for each identity key (or each of `keys`) whose value differs."""
    keys = sorted(set(identity_config(recorded)) | set(identity_config(config))) if keys is None else keys
    return [f"{k}: {recorded.get(k)!r} -> {config.get(k)!r}" for k in keys if recorded.get(k) != config.get(k)]


def manifest_changes(recorded, table) -> list[str]:
    """What differs between the run's recorded rows (its splits.csv) and today's table, by kind."""
    old = recorded.set_index("image_id")
    new = table.set_index("image_id")
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


def write_record(output_dir: str | os.PathLike, *, config: dict, table, stage: str,
                 backbone_id: str | None = None, preprocessing: str | None = None) -> None:
    """run.json (what the results depend on) and splits.csv (the rows, their content hashes and split)."""
    out = Path(output_dir)
    atomic_write_text(out / "splits.csv", table[MANIFEST_COLUMNS].to_csv(index=False))
    record = dict(format=RECORD_FORMAT, stage=stage, config=identity_config(config), backbone_id=backbone_id,
                  preprocessing=preprocessing, data=dict(images=len(table), artists=int(table.artist.nunique()),
                                                         manifest_sha256=manifest_digest(table)))
    atomic_write_text(out / RUN_RECORD, json.dumps(record, indent=2) + "\n")


def remove_run(output_dir: str | os.PathLike) -> list[str]:
    """Delete the files a run writes (RUN_FILES) from OUTPUT_DIR; anything else there stays."""
    out, removed = Path(output_dir), []
    for pattern in RUN_FILES:
        for path in sorted(out.glob(pattern)):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            removed.append(path.name)
    return removed


def settings_changed(record: dict, config: dict) -> list[str]:
    """The identity keys that differ from the run record's: make_pairs.py's record fixes only the split,
    a started run's fixes every identity key."""
    return differing_keys(record["config"], config, SPLIT_KEYS if record["stage"] == "pairs" else None)


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
    if differs := differing_keys(record["config"], config, SPLIT_KEYS + FEATURE_KEYS):
        raise RunFolderError(f"{out} was trained with other settings ({'; '.join(differs)}); {what} with the "
                             f"run's own ({out / 'config.json'})")
    return record


def check_same_data(output_dir: str | os.PathLike, table) -> None:
    """The rows, their content and their split must be the run's: a re-split could put trained images in
    today's test split (REQ-N-001)."""
    import pandas as pd

    splits_csv = Path(output_dir) / "splits.csv"
    if not splits_csv.is_file():
        raise RunFolderError(f"{splits_csv}: not found; the run's split is unknown, so no split can be trusted")
    recorded = pd.read_csv(splits_csv, dtype=str, keep_default_na=False)
    if missing := [c for c in MANIFEST_COLUMNS if c not in recorded.columns]:
        raise RunFolderError(f"{splits_csv}: lacks column(s) {missing} (written by an older version?)")
    if changes := manifest_changes(recorded, table):
        raise RunFolderError(f"{splits_csv}: the data differ from this run's ({'; '.join(changes)}); a run keeps "
                             "its data and split: use the run's data, or train a new run")
