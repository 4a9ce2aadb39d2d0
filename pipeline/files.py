"""Files written whole or not at all, and values remembered per file while the file is unchanged.

Every artifact is written through these, so a kill at any moment leaves the previous version in place.
"""

import contextlib
import json
import os
import shutil
import sqlite3
import uuid
from pathlib import Path

from .errors import ArtrankError

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


def atomic_write_json(path: str | os.PathLike, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path: str | os.PathLike):
    """A JSON file's value; None when there is no such file, ArtrankError naming it when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtrankError(f"{path}: unreadable ({type(err).__name__}: {err})") from None


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


def remove_path(path: Path) -> bool:
    """Delete a file, a folder or a link (the link, never what it points to); False when nothing is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    else:
        return False
    return True


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


def user_cache_dir() -> Path:
    """~/.cache/artrank, or $XDG_CACHE_HOME/artrank."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "artrank"


class StatCache:
    """Values computed from a file's content (a hash, a check's verdict), kept in one SQLite file and given
    back while the file is unchanged.

    Unchanged means the same size, modification and change times and inode (a copy with `cp -p` keeps the
    mtime but not the ctime or inode), under the same `version` of whatever computed the value. A store
    that cannot be opened or written only costs time: every value is computed again.
    """

    def __init__(self, store: str | os.PathLike | None, *, version: str):
        self.version, self.db, self.rows = version, None, {}
        if store is None:
            return
        try:
            Path(store).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(store, timeout=60)
            with self.db:
                self.db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, stat TEXT NOT NULL, "
                                "value TEXT NOT NULL)")
            self.rows = {path: (stat, value) for path, stat, value in self.db.execute("SELECT * FROM files")}
        except (OSError, sqlite3.Error):
            self.close()

    def stamp(self, path: str) -> str | None:
        """What says `path` is unchanged (None when it cannot be read)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return f"{self.version} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"

    def get(self, path: str, stamp: str | None):
        """The value remembered for `path` under `stamp`, or None."""
        found = self.rows.get(path) if stamp is not None else None
        return json.loads(found[1]) if found and found[0] == stamp else None

    def put(self, rows: list[tuple[str, str, object]]) -> None:
        """Remember (path, stamp, value) rows; a value must be JSON."""
        rows = [(path, stamp, json.dumps(value)) for path, stamp, value in rows if stamp is not None]
        self.rows.update({path: (stamp, value) for path, stamp, value in rows})
        if self.db is not None and rows:
            with contextlib.suppress(sqlite3.Error), self.db:
                self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        self.db = None
