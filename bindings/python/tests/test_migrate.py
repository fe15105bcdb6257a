"""Folders the original module wrote (python-diskcache stores) read back through duckcache:
every value mode, large values in files, expiry kept, imported once, crash-safe."""

import time

import pytest

import duckcache
from duckcache import _migrate

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
    c = original.PersistentFileCache(str(path))
    for key, value in VALUES.items():
        c.set(key, value)
    c.set("expiring", "soon", expiry=1.0)
    c.set("expired", "gone", expiry=0.05)
    c.close()
    time.sleep(0.1)


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
