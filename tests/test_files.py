"""pipeline/files.py: files appear whole or not at all, readable by others; values remembered per unchanged file."""

import os

import pytest

from pipeline.files import UMASK, StatCache, atomic_dir, atomic_write_text, recover_dir


def test_atomic_dir_replaces_only_when_the_block_completes(tmp_path):
    target = tmp_path / "pairs"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("crash")
    assert (target / "a").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["pairs"]
    target.rename(tmp_path / "pairs.old")  # a crash between atomic_dir's two renames
    assert (recover_dir(target) / "a").read_text() == "1"


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    atomic_write_text(tmp_path / "x" / "splits.csv", "a\n")
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["splits.csv"]


def test_checkpoints_are_readable_by_others_like_any_file(tmp_path):
    from model import RankingHead, save_head

    save_head(RankingHead(input_dim=8, hidden_dim=4, proj_dim=4), tmp_path / "best", {"format": 1})
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "best").iterdir()}
    assert modes == {"head.safetensors": 0o666 & ~UMASK, "head.json": 0o666 & ~UMASK}


# ---------------------------------------------------------------- values remembered while a file is unchanged

def test_a_value_is_remembered_until_its_file_is_rewritten_even_with_the_same_size_and_time(tmp_path):
    store, path = tmp_path / "store.sqlite", tmp_path / "weights.bin"
    path.write_bytes(b"a" * 100)
    cache = StatCache(store, version="v1")
    stamp = cache.stamp(str(path))
    cache.put([(str(path), stamp, {"sha256": "first"})])
    cache.close()
    again = StatCache(store, version="v1")  # a later start
    assert again.get(str(path), again.stamp(str(path))) == {"sha256": "first"}
    before = path.stat()
    (tmp_path / "new.bin").write_bytes(b"b" * 100)
    os.replace(tmp_path / "new.bin", path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` would: same size and mtime
    assert again.get(str(path), again.stamp(str(path))) is None
    other_version = StatCache(store, version="v2")  # whatever computed the value changed
    path.write_bytes(b"a" * 100)
    other_version.put([(str(path), other_version.stamp(str(path)), "x")])
    reader = StatCache(store, version="v1")
    assert reader.get(str(path), reader.stamp(str(path))) is None


def test_a_value_is_forgotten_when_its_file_is_rewritten_in_place_with_the_same_size(tmp_path):
    store, path = tmp_path / "store.sqlite", tmp_path / "image.png"
    path.write_bytes(b"a" * 100)
    cache = StatCache(store, version="v1")
    cache.put([(str(path), cache.stamp(str(path)), "first verdict")])
    before = path.stat()
    with open(path, "r+b") as f:  # the same file (inode) and size, other content
        f.write(b"b" * 100)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # a second later, whatever the clock
    assert path.stat().st_ino == before.st_ino and path.stat().st_size == before.st_size
    assert cache.get(str(path), cache.stamp(str(path))) is None
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back, as `touch -r` would: ctime moved
    assert cache.get(str(path), cache.stamp(str(path))) is None


def test_a_store_that_cannot_be_written_only_costs_time(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    cache = StatCache(tmp_path / "file" / "store.sqlite", version="v1")  # its folder cannot be made
    path = str(tmp_path / "file")
    cache.put([(path, cache.stamp(path), "value")])
    assert cache.db is None and StatCache(tmp_path / "file" / "store.sqlite", version="v1").get(
        path, cache.stamp(path)) is None
