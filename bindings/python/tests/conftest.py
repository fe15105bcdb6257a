"""Fixtures: a fresh directory per test, and an opener for each library-backed class
(RedisCache too when make test provides a server in DUCKCACHE_REDIS_URL, each test under
a prefix of its own)."""

import itertools
import os

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
