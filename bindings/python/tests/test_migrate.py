"""Folders the original module wrote (python-diskcache stores) read back through duckcache:
every value mode, large values in files, expiry kept, imported once, crash-safe."""

import os
import time

import pytest

import duckcache
from duckcache import _migrate

from conftest import fill_and_close
from test_parity import seed as original

pytest.importorskip("diskcache")

VALUES = {
    "raw bytes": b"\x00small bytes",
    "raw text": "small text é",
    "int": 12345678901,
    "float": 2.5,
    "binary file": b"B" * 100_000,
    "text file": "T" * 100_000,
    "pickle": {"user": 42, "roles": ["a", "b"]},
    "pickle file": {"blob": "P" * 100_000},
    "none": None,
}


def write_original(path):
    fill_and_close(original.PersistentFileCache(str(path)), VALUES, expiring_in=1.0)


def test_a_persistent_folder_of_the_original_reads_back(tmp_path):
    write_original(tmp_path)
    c = duckcache.PersistentFileCache(str(tmp_path))
    for key, value in VALUES.items():
        assert c.get(key, "absent") == value, key
    assert c.get("expiring") == "soon"
    assert c.get("expired") is None
    c.set("raw bytes", b"changed by duckcache")
    c.close()
    time.sleep(1.1)
    c = duckcache.PersistentFileCache(str(tmp_path))  # not imported a second time
    assert c.get("raw bytes") == b"changed by duckcache"
    assert c.get("expiring") is None, "the remaining expiry came along"
    c.close()


def test_an_import_cut_short_is_done_again(tmp_path, monkeypatch):
    write_original(tmp_path)
    calls = []
    real_set = duckcache.PersistentFileCache.set

    def failing_set(self, key, value, expiry=None):
        calls.append(key)
        if len(calls) == 3:
            raise OSError("simulated crash in the middle of the import")
        real_set(self, key, value, expiry)

    monkeypatch.setattr(duckcache.PersistentFileCache, "set", failing_set)
    with pytest.raises(OSError):
        duckcache.PersistentFileCache(str(tmp_path))
    monkeypatch.undo()
    c = duckcache.PersistentFileCache(str(tmp_path))
    assert all(c.get(k, "absent") == v for k, v in VALUES.items())
    c.close()


def test_a_sharded_folder_of_the_original_reads_back(tmp_path):
    old = original.DynamicFileCache(str(tmp_path), cache_limit=50_000)
    for i in range(12):
        old.set(f"k{i}", b"v" * 20_000 + bytes([i]))
    old.close()
    time.sleep(0.2)
    shards = _migrate.original_shard_folders(tmp_path)
    assert len(shards) >= 2, "the original made several shards"
    c = duckcache.DynamicFileCache(str(tmp_path))
    for i in range(12):
        assert c.get(f"k{i}") == b"v" * 20_000 + bytes([i])
    c.close()


def test_a_folder_without_the_original_data_is_left_alone(tmp_path):
    c = duckcache.PersistentFileCache(str(tmp_path))
    c.set("k", 1)
    c.close()
    assert not (tmp_path / _migrate.LOCK_NAME).exists()


def test_a_key_folder_cache_of_the_original_reads_back(tmp_path):
    old = original.KeyAsFolderCache(str(tmp_path))
    keys = {"session_abc": {"user": 1}, "user:42": b"raw", "big": b"x" * 100_000}
    for key, value in keys.items():
        old.set(key, value)
    old.set("expiring", 1, expiry=1.0)
    old.close()
    time.sleep(0.2)
    c = duckcache.KeyAsFolderCache(str(tmp_path))
    assert c.imported_entries == 4
    for key, value in keys.items():
        assert c.get(key) == value, key
        assert os.path.isdir(c.get_key_dir(key))
    assert c.get("expiring") == 1
    retired = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(_migrate.RETIRED_PREFIX))
    assert len(retired) == 4 and all((tmp_path / n / _migrate.DONE_MARK).exists() for n in retired)
    c.set("session_abc", "newer")
    c.close()
    c = duckcache.KeyAsFolderCache(str(tmp_path))
    assert c.imported_entries == 0 and c.get("session_abc") == "newer"
    c.close()


def test_a_key_folder_import_cut_short_resumes(tmp_path, monkeypatch):
    old = original.KeyAsFolderCache(str(tmp_path))
    for i in range(5):
        old.set(f"k{i}", i)
    old.close()
    time.sleep(0.2)
    real_copy = _migrate._copy_entries
    done = []

    def crash_on_third(store, target):
        if len(done) == 2:
            raise OSError("simulated crash")
        done.append(store)
        return real_copy(store, target)

    monkeypatch.setattr(_migrate, "_copy_entries", crash_on_third)
    with pytest.raises(OSError):
        duckcache.KeyAsFolderCache(str(tmp_path))
    monkeypatch.undo()
    c = duckcache.KeyAsFolderCache(str(tmp_path))
    assert [c.get(f"k{i}") for i in range(5)] == list(range(5))
    c.close()


def test_migrate_finds_the_kind(tmp_path):
    (tmp_path / "file").mkdir()
    write_original(tmp_path / "file")
    assert duckcache.migrate(tmp_path / "file") == len(VALUES) + 1  # "expiring" too
    assert duckcache.migrate(tmp_path / "file") == 0
    (tmp_path / "empty").mkdir()
    assert duckcache.migrate(tmp_path / "empty") == 0


def test_a_key_folder_directory_is_scanned_once_and_migrate_looks_again(tmp_path):
    duckcache.KeyAsFolderCache(str(tmp_path)).close()
    assert (tmp_path / _migrate.SCANNED_MARK).exists(), "nothing to import: later opens skip the scan"
    old = original.KeyAsFolderCache(str(tmp_path))
    old.set("late", "arrival")
    old.close()
    time.sleep(0.2)
    c = duckcache.KeyAsFolderCache(str(tmp_path))
    assert c.imported_entries == 0 and c.get("late") is None
    c.close()
    assert duckcache.migrate(tmp_path) == 1
    c = duckcache.KeyAsFolderCache(str(tmp_path))
    assert c.get("late") == "arrival"
    c.close()


def test_nested_key_folders_of_the_original_read_back(tmp_path):
    """The original keeps key "user/42" in <dir>/user/42, inside the folder of key
    "user" when there is one."""
    old = original.KeyAsFolderCache(str(tmp_path))
    keys = {"user": "parent", "user/42": {"id": 42}, "a/b/c": b"deep", "plain": 1}
    for key, value in keys.items():
        old.set(key, value)
    old.close()
    time.sleep(0.2)
    c = duckcache.KeyAsFolderCache(str(tmp_path))
    assert c.imported_entries == len(keys)
    for key, value in keys.items():
        assert c.get(key) == value, key
    c.close()
    c = duckcache.KeyAsFolderCache(str(tmp_path))
    assert c.imported_entries == 0 and c.get("user/42") == {"id": 42}
    c.close()


def test_opening_an_existing_store_keeps_the_librarys_locks(tmp_path):
    """Looking for the original's data in cache.db must not open that file in this
    process: closing any descriptor of it drops the library's POSIX locks, and an
    ordinary SQLite client (another process) then deletes the WAL under the live handle."""
    import gc
    import subprocess
    import sys

    first = duckcache.PersistentFileCache(str(tmp_path))
    first.set("k", 1)
    first.close()
    del first
    # A store with no mark yet (as one written before marks existed) is looked at again.
    (tmp_path / _migrate.SCANNED_MARK).unlink()
    c = duckcache.PersistentFileCache(str(tmp_path))
    c.set("a1", 1)
    gc.collect()
    wal = tmp_path / "cache.db-wal"
    assert wal.exists()
    subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
         "c.execute('select count(*) from sqlite_master').fetchall(); c.close()",
         str(tmp_path / "cache.db")],
        check=True,
    )
    assert wal.exists(), "an ordinary client deleted the WAL: this process's locks were dropped"
    c.set("a2", 2)
    c.close()
    assert (tmp_path / _migrate.SCANNED_MARK).exists(), "looked at once, then marked"
