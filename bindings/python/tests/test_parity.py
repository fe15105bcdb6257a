"""Behaviour parity with the original module (duck.utils.caching from the
duckframework package): the same script of calls gives the same results and the
same exceptions, class by class."""

import pytest

import duckcache
from duckcache import _original


def load_seed():
    """The original module (see duckcache._original: the `duck` package itself is never
    imported)."""
    if _original.caching_dir() is None:
        pytest.fail("the duckframework package is not installed (make test-python installs it)")
    return _original.load_caching()


seed = load_seed()

PAIRS = {
    "InMemoryCache": lambda m, d: m.InMemoryCache(),
    "PersistentFileCache": lambda m, d: m.PersistentFileCache(str(d)),
    "DynamicFileCache": lambda m, d: m.DynamicFileCache(str(d)),
    "KeyAsFolderCache": lambda m, d: m.KeyAsFolderCache(str(d)),
}


def outcome(call):
    try:
        return ("ok", call())
    except Exception as e:
        return ("raises", type(e).__name__)


def script(c):
    """Calls whose results the two modules must agree on."""
    return [
        outcome(lambda: c.get("a")),
        outcome(lambda: c.get("a", "default")),
        outcome(lambda: c.set("a", {"v": [1, 2]})),
        outcome(lambda: c.get("a")),
        outcome(lambda: c.set("a", "replaced")),
        outcome(lambda: c.get("a")),
        outcome(lambda: c.set("b", b"bytes")),
        outcome(lambda: c.get("b")),
        outcome(lambda: c.set("t", 1, expiry=0)),
        outcome(lambda: c.get("t")),
        outcome(lambda: c.set("t2", 1, 3600)),
        outcome(lambda: c.get("t2")),
        outcome(lambda: c.pop("a")),
        outcome(lambda: c.pop("a")),
        outcome(lambda: c.pop("a", None)),
        outcome(lambda: c.pop("a", 5)),
        outcome(lambda: c.delete("missing")),
        outcome(lambda: c.delete("b")),
        outcome(lambda: c.get("b")),
        outcome(lambda: c.set("c", 3)),
        outcome(lambda: c.clear()),
        outcome(lambda: c.get("c")),
        outcome(lambda: c.get("t2")),
        outcome(lambda: c.save()),
    ]


@pytest.mark.parametrize("name", PAIRS)
def test_same_results_as_the_original(name, tmp_path):
    (tmp_path / "seed").mkdir()
    (tmp_path / "ours").mkdir()
    theirs = PAIRS[name](seed, tmp_path / "seed")
    ours = PAIRS[name](duckcache, tmp_path / "ours")
    try:
        assert script(ours) == script(theirs)
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("name", PAIRS)
def test_same_async_results_as_the_original(name, tmp_path):
    import asyncio

    async def async_script(c):
        out = []
        for call in (
            lambda: c.async_get("k", "d"),
            lambda: c.async_set("k", [1]),
            lambda: c.async_get("k"),
            lambda: c.async_pop("k"),
            lambda: c.async_pop("k", None),
            lambda: c.async_pop("k"),
            lambda: c.async_delete("k"),
            lambda: c.async_clear(),
        ):
            try:
                out.append(("ok", await call()))
            except Exception as e:
                out.append(("raises", type(e).__name__))
        return out

    (tmp_path / "seed").mkdir()
    (tmp_path / "ours").mkdir()
    theirs = PAIRS[name](seed, tmp_path / "seed")
    ours = PAIRS[name](duckcache, tmp_path / "ours")
    try:
        assert asyncio.run(async_script(ours)) == asyncio.run(async_script(theirs))
    finally:
        ours.close()
        theirs.close()


def test_same_constructor_errors(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for m in (seed, duckcache):
        with pytest.raises(FileExistsError):
            m.PersistentFileCache(str(a_file))
        with pytest.raises(FileNotFoundError):
            m.DynamicFileCache(str(tmp_path / "missing"))
        with pytest.raises(FileNotFoundError):
            m.KeyAsFolderCache(str(tmp_path / "missing"))


def test_same_key_errors_on_the_persistent_file_cache(tmp_path):
    (tmp_path / "s").mkdir()
    theirs = seed.PersistentFileCache(str(tmp_path / "s"))
    ours = duckcache.PersistentFileCache(str(tmp_path / "o"))
    for c in (theirs, ours):
        with pytest.raises(KeyError):
            c.set(1, "v")
        with pytest.raises(KeyError):
            c.get(1)
        c.close()
        with pytest.raises(RuntimeError):
            c.get("k")


def test_same_defaults_and_names():
    assert duckcache.DynamicFileCache.DEFAULT_SHARD_SIZE == seed.DynamicFileCache.DEFAULT_SHARD_SIZE
    assert duckcache.KeyAsFolderCache.DEFAULT_CACHE_OBJ_LIMIT == seed.KeyAsFolderCache.DEFAULT_CACHE_OBJ_LIMIT
    for name in ("InMemoryCache", "PersistentFileCache", "DynamicFileCache", "KeyAsFolderCache", "CacheBase", "CacheSpeedTest", "MISSING"):
        assert hasattr(duckcache, name) and hasattr(seed, name)
    for method in ("set", "get", "delete", "pop", "clear", "save", "cache", "async_cache",
                   "async_set", "async_get", "async_pop", "async_delete", "async_clear", "close"):
        assert callable(getattr(duckcache.PersistentFileCache, method))
    assert callable(duckcache.InMemoryCache.has) and callable(seed.InMemoryCache.has)


def test_memo_keys_are_the_originals(tmp_path):
    """The decorator builds the seed's key, so both modules memoize into the same entry.
    (The seed's InMemoryCache shadows its own `cache` decorator with its dict, so the
    file caches are compared.)"""
    (tmp_path / "s").mkdir()
    theirs = seed.PersistentFileCache(str(tmp_path / "s"))
    ours = duckcache.PersistentFileCache(str(tmp_path / "o"))

    def f(x, y=2):
        return x + y

    theirs.cache(key_prefix="p")(f)(1, y=3)
    ours.cache(key_prefix="p")(f)(1, y=3)
    (key,) = list(theirs.inner_cache)
    assert ours.get(key) == 4
    theirs.close()
    ours.close()
