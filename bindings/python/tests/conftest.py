"""Fixtures: a fresh directory per test, and an opener for each library-backed class
(RedisCache too when make test provides a server in DUCKCACHE_REDIS_URL, each test under
a prefix of its own)."""

import itertools
import os
import signal
import time

import pytest

import duckcache

REDIS_URL = os.environ.get("DUCKCACHE_REDIS_URL")
KINDS = ["memory", "file", "sharded", "folder"] + (["redis"] if REDIS_URL else [])
PERSISTENT = ["file", "sharded", "folder"]
_prefixes = itertools.count()


def open_kind(kind, directory, **options):
    if kind == "memory":
        return duckcache.NativeMemoryCache(**options)
    if kind == "file":
        return duckcache.PersistentFileCache(str(directory), **options)
    if kind == "sharded":
        return duckcache.DynamicFileCache(str(directory), **options)
    if kind == "redis":
        prefix = f"py-{os.getpid()}-{next(_prefixes)}:"
        cache = duckcache.RedisCache(REDIS_URL, prefix=prefix, **options)
        cache.clear()
        return cache
    return duckcache.KeyAsFolderCache(str(directory), **options)


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture(params=PERSISTENT)
def persistent_kind(request):
    return request.param


@pytest.fixture
def opener(tmp_path):
    """opener(kind, **options): a cache of that kind in this test's directory."""
    opened = []

    def make(kind, **options):
        cache = open_kind(kind, tmp_path, **options)
        opened.append(cache)
        return cache

    yield make
    for cache in opened:
        cache.close()


@pytest.fixture
def cache(kind, opener):
    return opener(kind)


def child_exit_code(pid, seconds=10):
    """The exit code of the forked child `pid`; None when it did not end within `seconds`
    (a hang), after which it is killed."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.01)


def hold_in_a_thread(lock):
    """Starts a thread that takes `lock` and holds it; returns a function that lets go
    of it and joins the thread."""
    import threading

    held, release = threading.Event(), threading.Event()

    def holder():
        with lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)

    def let_go():
        release.set()
        t.join()

    return let_go


def fill_and_close(cache, values, expiring_in):
    """Sets `values`, a key "expiring" that expires in `expiring_in` seconds and one
    already expired ("expired"), then closes `cache`."""
    for key, value in values.items():
        cache.set(key, value)
    cache.set("expiring", "soon", expiry=expiring_in)
    cache.set("expired", "gone", expiry=0.01)
    cache.close()
    time.sleep(0.05)


class DictCache(duckcache.CacheBase):
    """The least a user's own CacheBase subclass defines: the five operations over a
    dict, no async forms (CacheBase supplies them)."""

    def __init__(self):
        self.data = {}

    def set(self, key, value, expiry=None):
        self.data[key] = value

    def get(self, key, default=None):
        return self.data.get(key, default)

    def pop(self, key, default=duckcache.MISSING):
        return self.data.pop(key, default)

    def delete(self, key):
        self.data.pop(key, None)

    def clear(self):
        self.data.clear()
