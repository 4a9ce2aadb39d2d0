"""The run folder: crash-safe writes (a file or a folder appears whole or not at all).

Every script writes through these, so a kill at any moment leaves the previous version in place.
"""

import contextlib
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
