"""A store on a full disk can be opened again and read, and the folder kind cleared, as
the original's (issue 30 item 17). Clearing a SQLite store needs room for its log, as
the original's does (its cache.db is a SQLite store in WAL mode too). A real full file system: a 2 MiB tmpfs, so the test
needs root (make test runs as root; elsewhere it says why it is skipped)."""

import os
import subprocess

import pytest

import duckcache

CLASSES = {
    "file": duckcache.PersistentFileCache,
    "sharded": duckcache.DynamicFileCache,
    "folder": duckcache.KeyAsFolderCache,
}


@pytest.fixture
def full_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(path):
    """Takes the file system's last free bytes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while os.write(fd, b"x" * 512):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_a_store_on_a_full_disk_opens_again(full_disk, kind):
    store = full_disk / kind
    store.mkdir()
    cls = CLASSES[kind]
    c = cls(str(store))
    stored = 0
    with pytest.raises(duckcache.CacheIOError):
        while True:
            c.set(f"k{stored}", os.urandom(3000))
            stored += 1
    assert stored > 10
    c.close()
    _fill(full_disk / "filler")

    again = cls(str(store))  # the original opens here; so must we
    assert len(again) == stored
    assert len(again.get("k0")) == 3000
    if kind == "folder":
        again.clear()
        assert len(again) == 0
    again.close()
