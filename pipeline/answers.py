"""The files the review page writes a teacher's answers to, crash-safe: DATA_DIR/comparisons.csv (one row per
judgement, the format comparisons.py reads) and DATA_DIR/corrections.csv (one row per corrected tier,
corrections.py).

An answer is one whole line written with one write() on a descriptor opened O_APPEND, flushed and fsynced
before the call returns: a kill at any moment leaves every answer already given in the file, and at most
the one being written missing, never half a line. A file whose header is not the expected one, or that
does not end in a newline (a line cut short by a power loss, or a file edited by hand), is refused before
anything is written. Undo removes the last row this session wrote, only while it is still the file's last
row, by an atomic rewrite. Writers of one file (several pages on one data folder) take turns through a
lock file beside it.
"""

import contextlib
import csv
import fcntl
import io
import os
from pathlib import Path

from .comparisons import COMPARISON_COLUMNS, COMPARISONS_CSV, WINNERS
from .corrections import CORRECTION_COLUMNS, CORRECTIONS_CSV
from .errors import ArtrankError
from .files import atomic_write_bytes
from .sources import column_name
from .tables import TIER_RANK, TIERS


class AnswerError(ArtrankError):
    """An answer that cannot be written or undone; the message names the file."""


def csv_line(values) -> bytes:
    """One CSV record ending in a newline, quoted as the csv module quotes (a comma in a name is kept)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode()


@contextlib.contextmanager
def turn(path: Path):
    """Hold the lock of the answer file `path` (an flock on a file beside it) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class AnswerFile:
    """One CSV file of answers with the header `columns`; remembers the lines this session wrote."""

    def __init__(self, path: str | os.PathLike, columns: tuple[str, ...]):
        self.path, self.columns, self.written = Path(path), tuple(columns), []

    def check(self, payload: bytes) -> None:
        """The file's bytes must start with the expected header and end in a newline."""
        if not payload:
            return
        try:
            first = payload.decode("utf-8-sig").splitlines()[0]
        except UnicodeDecodeError:
            raise AnswerError(f"{self.path}: not UTF-8 text; nothing written") from None
        header = [column_name(cell, self.columns) for cell in next(csv.reader([first]), [])]
        if tuple(header) != self.columns:
            raise AnswerError(f"{self.path}: header {','.join(header)!r}, expected {','.join(self.columns)!r}; "
                              "nothing written (fix the header, or answer into another data folder)")
        if not payload.endswith(b"\n"):
            raise AnswerError(f"{self.path}: the last line does not end in a newline (cut short, or edited by "
                              "hand?); nothing written: check that line and end it with a newline")

    def append(self, values) -> None:
        """Write one row at once (the header first when the file is new or empty)."""
        values = [str(value) for value in values]
        if len(values) != len(self.columns) or any("\n" in v or "\r" in v for v in values):
            raise AnswerError(f"{self.path}: a row is {len(self.columns)} values without line breaks, got {values!r}")
        line = csv_line(values)
        with turn(self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                self.check(os.pread(fd, size, 0) if size else b"")
                payload = (b"" if size else csv_line(self.columns)) + line
                if os.write(fd, payload) != len(payload):  # a regular file takes a small write whole, or fails
                    raise AnswerError(f"{self.path}: short write (disk full?); check its last line")
                os.fsync(fd)
            finally:
                os.close(fd)
        self.written.append(line)

    def undo(self) -> list[str]:
        """Remove the last row this session wrote, while it is the file's last row; returns its values."""
        if not self.written:
            raise AnswerError(f"{self.path}: nothing to undo (this session has written no row there)")
        line = self.written[-1]
        with turn(self.path):
            payload = self.path.read_bytes() if self.path.is_file() else b""
            self.check(payload)
            if not payload.endswith(b"\n" + line):
                raise AnswerError(f"{self.path}: its last row is no longer the one this session wrote (another "
                                  "page or an editor wrote after it); nothing undone: edit the file by hand")
            atomic_write_bytes(self.path, payload[:-len(line)])
        self.written.pop()
        return next(csv.reader([line.decode()]))


class Answers:
    """A session's answer files in one data folder: judgements into comparisons.csv, tier corrections into
    corrections.csv; each file undoes its own last row (the page has an undo for each)."""

    def __init__(self, data_dir: str | os.PathLike):
        self.comparisons = AnswerFile(Path(data_dir) / COMPARISONS_CSV, COMPARISON_COLUMNS)
        self.corrections = AnswerFile(Path(data_dir) / CORRECTIONS_CSV, CORRECTION_COLUMNS)

    def judge(self, image_a: str, image_b: str, winner: str, rater: str) -> None:
        """One judgement: `winner` a (image_a is better), b or tie."""
        if winner not in WINNERS or not rater.strip() or not image_a or not image_b:
            raise AnswerError(f"{self.comparisons.path}: a judgement needs two images, a rater and a winner in "
                              f"{', '.join(WINNERS)}; got {image_a!r}, {image_b!r}, {winner!r}, rater {rater!r}")
        self.comparisons.append([image_a, image_b, winner, rater.strip()])

    def correct(self, file_name: str, tier: str, corrected_tier: str, rater: str) -> None:
        """One corrected tier of the image `file_name`, whose tier is now `tier`."""
        if corrected_tier not in TIER_RANK or tier not in TIER_RANK or not rater.strip() or not file_name:
            raise AnswerError(f"{self.corrections.path}: a correction needs an image, a rater and tiers in "
                              f"{', '.join(TIERS)}; got {file_name!r}, {tier!r} -> {corrected_tier!r}, rater {rater!r}")
        self.corrections.append([file_name, tier, corrected_tier, rater.strip()])
