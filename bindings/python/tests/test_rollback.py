"""The way back (issue 30 item 17): a directory duckcache's classes wrote, rewritten in
the original module's layout and read by the original module itself (duckframework's
duck.utils.caching), expiry kept; and forward again."""

import os
import subprocess
import sys
import time

import pytest

import duckcache
from duckcache import _rollback

from conftest import fill_and_close
from test_parity import seed as original

pytest.importorskip("diskcache")

VALUES = {
    "session:1": {"user": 42, "roles": ["a", "b"]},
    "raw": b"\x00bytes",
    "text": "é text",
    "big": b"B" * 200_000,
    "none": None,
    "nested/key": 7,
}

KINDS = {
    "file": (duckcache.PersistentFileCache, original.PersistentFileCache),
    "sharded": (duckcache.DynamicFileCache, original.DynamicFileCache),
    "folder": (duckcache.KeyAsFolderCache, original.KeyAsFolderCache),
}


def write_ours(cls, path):
    fill_and_close(cls(str(path)), VALUES, expiring_in=1.5)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_original_reads_what_duckcache_wrote_after_a_rollback(tmp_path, kind):
    ours, theirs = KINDS[kind]
    store = tmp_path / "cache"
    store.mkdir()
    write_ours(ours, store)

    done = duckcache.rollback(store)
    assert done.written == len(VALUES) + 1 and done.skipped == 0
    assert done.kept_in.is_dir() and done.kept_in.parent == tmp_path
    assert not (tmp_path / ("cache" + _rollback.STAGED_SUFFIX)).exists()

    c = theirs(str(store))
    for key, value in VALUES.items():
        if value is None and kind != "file":
            value = "absent"  # the original's quirk: a stored None reads as the default
        assert c.get(key, "absent") == value, key
    assert c.get("expiring") == "soon"
    assert c.get("expired") is None
    c.close()
    time.sleep(1.5)
    c = theirs(str(store))
    assert c.get("expiring") is None, "the time left came along"
    c.set("written by the original", 1)
    c.close()

    # Forward again: duckcache imports the original's store, as on a first upgrade.
    again = ours(str(store))
    assert again.get("session:1") == VALUES["session:1"]
    assert again.get("written by the original") == 1
    again.close()


def test_keys_the_original_cannot_place_are_counted_not_written_elsewhere(tmp_path):
    store = tmp_path / "cache"
    store.mkdir()
    c = duckcache.KeyAsFolderCache(str(store))
    for key in ("../escape", "/abs", "", "ok"):
        c.set(key, 1)
    c.close()
    done = duckcache.rollback(store)
    assert (done.written, done.skipped) == (1, 3)
    assert sorted(os.listdir(tmp_path)) == sorted(["cache", done.kept_in.name])
    assert original.KeyAsFolderCache(str(store)).get("ok") == 1


def test_a_rollback_cut_after_the_copy_is_finished_by_the_next_run(tmp_path, monkeypatch):
    store = tmp_path / "cache"
    store.mkdir()
    write_ours(duckcache.PersistentFileCache, store)
    real_swap = _rollback._swap

    def cut(*args):
        raise OSError("cut")

    monkeypatch.setattr(_rollback, "_swap", cut)
    with pytest.raises(OSError):
        duckcache.rollback(store)
    assert duckcache.PersistentFileCache(str(store)).get("raw") == b"\x00bytes", "untouched"
    monkeypatch.setattr(_rollback, "_swap", real_swap)
    done = duckcache.rollback(store)
    assert done.written == len(VALUES) + 1
    assert original.PersistentFileCache(str(store)).get("raw") == b"\x00bytes"


def test_the_command(tmp_path):
    store = tmp_path / "cache"
    store.mkdir()
    write_ours(duckcache.KeyAsFolderCache, store)
    run = subprocess.run(
        [sys.executable, "-m", "duckcache", "rollback", str(store)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "entries written in the original's layout" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "duckcache", "rollback", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "rollback" in bad.stderr
