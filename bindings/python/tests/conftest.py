"""Fixtures: a fresh directory per test, and an opener for each of the four classes."""

import pytest

import duckcache

KINDS = ["memory", "file", "sharded", "folder"]
PERSISTENT = ["file", "sharded", "folder"]


def open_kind(kind, directory, **options):
    if kind == "memory":
        return duckcache.NativeMemoryCache(**options)
    if kind == "file":
        return duckcache.PersistentFileCache(str(directory), **options)
    if kind == "sharded":
        return duckcache.DynamicFileCache(str(directory), **options)
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
