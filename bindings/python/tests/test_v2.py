"""Version 2 of the contract through the library-backed classes: add, incr/decr, touch,
ttl, get_or_set (single-flight), the bulk calls, keys, delete_prefix, purge_expired,
the async get_or_set, duckcache.open, and across processes."""

import asyncio
import math
import multiprocessing
import os
import sqlite3
import threading
import time

import pytest

import duckcache


def conftest_redis():
    """The test server's URL (make test starts one), or None."""
    return os.environ.get("DUCKCACHE_REDIS_URL")


def test_add_stores_only_when_absent(cache):
    assert cache.add("k", {"first": 1}) is True
    assert cache.add("k", "second") is False
    assert cache.get("k") == {"first": 1}
    cache.set("short", "v", expiry=0.05)
    time.sleep(0.08)
    assert cache.add("short", "new") is True  # expired counts as absent
    with pytest.raises(ValueError):
        cache.add("nan", "v", expiry=math.nan)
    assert not cache.has("nan")


def test_incr_decr(cache):
    assert cache.incr("n") == 1
    assert cache.incr("n", 10) == 11
    assert cache.decr("n", 4) == 7
    assert cache.get("n") == b"7"  # decimal text, as C and redis-cli read it
    cache.set("word", "not a number")
    with pytest.raises(duckcache.NotNumericError) as e:
        cache.incr("word")
    assert isinstance(e.value, ValueError)
    assert cache.get("word") == "not a number"
    cache.set("big", str(2**63 - 1).encode())
    with pytest.raises(duckcache.NotNumericError, match="overflow"):
        cache.incr("big")
    with pytest.raises(OverflowError):
        cache.incr("n", 2**63)
    with pytest.raises(TypeError):
        cache.incr("n", 1.5)
    with pytest.raises(TypeError):
        cache.decr("n", "1")
    assert cache.incr("n", 0) == 7


def test_touch_and_ttl(cache):
    cache.set("k", "v")
    assert cache.ttl("k") == math.inf
    assert cache.touch("k", 100) is True
    assert 90 < cache.ttl("k") <= 100
    assert cache.touch("k", None) is True
    assert cache.ttl("k") == math.inf
    assert cache.touch("k", 0) is True
    assert cache.ttl("k") is None and not cache.has("k")
    assert cache.touch("absent", 5) is False


def test_get_or_set_computes_once_and_stores(cache):
    calls = []

    def compute():
        calls.append(1)
        return {"made": True}

    assert cache.get_or_set("g", compute, expiry=60) == {"made": True}
    assert cache.get_or_set("g", compute) == {"made": True}
    assert len(calls) == 1
    assert cache.ttl("g") <= 60

    with pytest.raises(ZeroDivisionError):
        cache.get_or_set("bad", lambda: 1 / 0)
    assert not cache.has("bad")
    assert cache.get_or_set("none", lambda: None) is None  # None is a value, stored
    assert cache.has("none")


def test_get_or_set_single_flight_across_threads(cache):
    calls = []
    barrier = threading.Barrier(16)
    results = []

    def compute():
        calls.append(1)
        time.sleep(0.2)
        return "shared"

    def worker():
        barrier.wait()
        results.append(cache.get_or_set("stampede", compute))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["shared"] * 16
    assert len(calls) == 1


def test_memoizing_decorator_computes_once_for_concurrent_callers(cache):
    calls = []

    @cache.cache(expiry=60)
    def slow(x):
        calls.append(x)
        time.sleep(0.2)
        return x * 2

    out = []
    threads = [threading.Thread(target=lambda: out.append(slow(21))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [42] * 8
    assert calls == [21]


def test_bulk(cache):
    cache.set_many({"a": 1, "b": b"raw", "c": [3]}, expiry=100)
    assert cache.get_many(["a", "b", "missing", "c"]) == {"a": 1, "b": b"raw", "c": [3]}
    assert cache.get_many([]) == {}
    assert 90 < cache.ttl("a") <= 100
    assert cache.delete_many(["a", "missing"]) == 1
    assert not cache.has("a")
    cache.set_many({})
    with pytest.raises(KeyError):
        cache.set_many({1: "int keys are not stored"})
    with pytest.raises(ValueError):
        cache.set_many({"x": 1}, expiry=math.nan)
    assert not cache.has("x")


def test_keys_walk_and_delete_prefix(cache):
    for i in range(700):
        cache.set(f"user:{i}", i)
    cache.set("other", 1)
    cache.set(b"\xff\xfe", 2)  # not UTF-8: comes back as bytes
    assert sorted(cache.keys("user:"), key=lambda k: int(k.split(":")[1])) == [f"user:{i}" for i in range(700)]
    assert set(cache.keys()) >= {"other", b"\xff\xfe"}
    # Stop early: the walker thread ends.
    it = cache.keys("user:")
    first = [next(it) for _ in range(3)]
    it.close()
    assert len(first) == 3
    # Change the cache while iterating.
    for k in cache.keys("user:"):
        cache.delete(k)
    assert list(cache.keys("user:")) == []
    cache.set("p:1", 1)
    cache.set("p:2", 2)
    assert cache.delete_prefix("p:") == 2
    assert cache.delete_prefix("p:") == 0
    assert cache.has("other")


def test_purge_expired(cache, kind):
    for i in range(5):
        cache.set(f"x{i}", i, expiry=0.05)
    cache.set("live", 1)
    time.sleep(0.08)
    # A Redis server expires entries itself: nothing is left for purge_expired.
    assert cache.purge_expired() == (0 if kind == "redis" else 5)
    assert cache.get("live") == 1
    assert len(cache) == 1


def test_async_get_or_set(cache):
    async def main():
        calls = []

        def compute():
            calls.append(1)
            return "from worker"

        first = await cache.async_get_or_set("a", compute)
        second = await cache.async_get_or_set("a", compute)
        with pytest.raises(KeyError):
            await cache.async_get_or_set("bad", lambda: {}["missing"])
        return first, second, calls

    first, second, calls = asyncio.run(main())
    assert first == second == "from worker"
    assert len(calls) == 1
    assert not cache.has("bad")


def test_closed_cache_raises(cache):
    cache.close()
    for call in (
        lambda: cache.add("k", 1),
        lambda: cache.incr("k"),
        lambda: cache.touch("k", 1),
        lambda: cache.ttl("k"),
        lambda: cache.get_or_set("k", lambda: 1),
        lambda: cache.get_many(["k"]),
        lambda: cache.set_many({"k": 1}),
        lambda: cache.delete_many(["k"]),
        lambda: list(cache.keys()),
        lambda: cache.delete_prefix(""),
        lambda: cache.purge_expired(),
    ):
        with pytest.raises(duckcache.ClosedError):
            call()


def test_open_by_uri_gives_the_matching_class(tmp_path):
    cases = {
        "memory:?max_keys=10": duckcache.NativeMemoryCache,
        f"file:{tmp_path}/f?size_limit=1MiB&sync=full": duckcache.PersistentFileCache,
        f"sharded:{tmp_path}/s?shard_size_limit=64KiB": duckcache.DynamicFileCache,
        f"folder://{tmp_path}/d%20d": duckcache.KeyAsFolderCache,
    }
    for uri, cls in cases.items():
        with duckcache.open(uri) as c:
            assert type(c) is cls
            c.set("k", "v")
            assert c.get("k") == "v"
            assert c.uri == uri
    assert (tmp_path / "d d").is_dir()
    with duckcache.open(f"folder:{tmp_path}/d%20d") as again:
        assert again.get("k") == "v"
        assert again.cache_dir == f"{tmp_path}/d d"
    for bad, mention in [
        ("nosuch:x", "unknown scheme"),
        ("memory:?max_keys=lots", "max_keys"),
        (f"file:{tmp_path}/x?colour=red", "colour"),
    ]:
        with pytest.raises(duckcache.InvalidArgumentError, match=mention):
            duckcache.open(bad)
    with pytest.raises(TypeError):
        duckcache.open(b"memory:")


def test_set_many_is_one_transaction_on_the_file_kind(tmp_path):
    """A failure injected at the 500th of 1000 entries (a trigger in the store) stores
    none of them."""
    c = duckcache.PersistentFileCache(str(tmp_path))
    c.set("item-0", "before")
    db = sqlite3.connect(tmp_path / "cache.db")
    db.execute(
        "CREATE TRIGGER fail BEFORE INSERT ON entries WHEN new.key = CAST('item-500' AS BLOB) "
        "BEGIN SELECT RAISE(ABORT, 'injected'); END"
    )
    db.commit()
    with pytest.raises(duckcache.CacheError, match="injected"):
        c.set_many({f"item-{i}": i for i in range(1000)})
    assert c.get("item-0") == "before"
    assert c.get_many(f"item-{i}" for i in range(1, 1000)) == {}
    db.execute("DROP TRIGGER fail")
    db.commit()
    db.close()
    c.set_many({f"item-{i}": i for i in range(1000)})
    assert len(c) == 1000
    c.close()


def _incr_in_child(kind, directory, n):
    c = {
        "file": duckcache.PersistentFileCache,
        "sharded": duckcache.DynamicFileCache,
        "folder": duckcache.KeyAsFolderCache,
    }[kind](directory)
    for _ in range(n):
        c.incr("counter")
    won = sum(c.add(f"race-{i}", "v") for i in range(20))
    c.close()
    return won


def test_incr_and_add_across_processes(persistent_kind, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        won = pool.starmap(_incr_in_child, [(persistent_kind, str(tmp_path), 50)] * 4)
    assert sum(won) == 20  # one winner per key
    c = {
        "file": duckcache.PersistentFileCache,
        "sharded": duckcache.DynamicFileCache,
        "folder": duckcache.KeyAsFolderCache,
    }[persistent_kind](str(tmp_path))
    assert c.get("counter") == b"200"
    c.close()


def _write_far(kind, where, value):
    """In another process: a far cache of its own on the same store writes `value`."""
    far = duckcache.PersistentFileCache(where) if kind == "file" else duckcache.RedisCache(*where)
    far.set("shared", value)
    far.close()


@pytest.mark.parametrize("far_kind", ["file"] + (["redis"] if conftest_redis() else []))
def test_tiered_sees_another_process_write_within_near_ttl_max(far_kind, tmp_path):
    if far_kind == "file":
        where = str(tmp_path)
        far = duckcache.PersistentFileCache(where)
    else:
        where = (conftest_redis(), f"tiered-{os.getpid()}:")
        far = duckcache.RedisCache(*where)
        far.clear()
    near = duckcache.NativeMemoryCache()
    tiered = duckcache.TieredCache(near, far, near_ttl_max=0.5)
    with pytest.raises(duckcache.ClosedError):
        far.get("anything")  # taken over by the tiered cache
    tiered.set("shared", "v1")
    assert tiered.get("shared") == "v1"
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_write_far, args=(far_kind, where, "v2"))
    p.start()
    p.join()
    assert p.exitcode == 0
    written = time.monotonic()
    seen = tiered.get("shared")
    while seen != "v2":
        assert time.monotonic() - written < 0.5 + 0.25, "the near copy outlived near_ttl_max"
        time.sleep(0.02)
        seen = tiered.get("shared")
    assert tiered.stats()["hits"] >= 2
    tiered.close()


def test_tiered_refuses_bad_parts(tmp_path):
    near = duckcache.NativeMemoryCache()
    with pytest.raises(ValueError):
        duckcache.TieredCache(near, near, 1.0)
    with pytest.raises(TypeError):
        duckcache.TieredCache(duckcache.InMemoryCache(), near, 1.0)
    far = duckcache.PersistentFileCache(str(tmp_path))
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(duckcache.InvalidArgumentError):
            duckcache.TieredCache(near, far, bad)
    near.set("k", 1)  # both still usable after a refusal
    far.set("k", 2)
    assert (near.get("k"), far.get("k")) == (1, 2)


def test_redis_cache_arguments_and_a_server_that_is_down():
    with pytest.raises(ValueError):
        duckcache.RedisCache("http://localhost")
    with pytest.raises(ValueError):
        duckcache.RedisCache("redis://127.0.0.1:1", pool_size=0)
    started = time.monotonic()
    with pytest.raises(duckcache.UnavailableError) as e:
        duckcache.RedisCache("redis://127.0.0.1:1", timeout=0.5)
    assert isinstance(e.value, ConnectionError)
    assert "127.0.0.1:1" in str(e.value)
    assert time.monotonic() - started < 2


@pytest.mark.skipif(not conftest_redis(), reason="make test provides a Redis server")
def test_redis_values_are_plain_for_other_clients_and_the_prefix_is_kept():
    a = duckcache.RedisCache(conftest_redis(), prefix=f"iso-{os.getpid()}-a:")
    b = duckcache.RedisCache(conftest_redis(), prefix=f"iso-{os.getpid()}-b:")
    a.set("k", b"raw bytes")
    b.set("k", {"pickled": True})
    a.clear()
    assert b.get("k") == {"pickled": True}  # another prefix is never touched
    opened = duckcache.open(conftest_redis() + ("&" if "?" in conftest_redis() else "?") + f"prefix=iso-{os.getpid()}-b:")
    assert type(opened) is duckcache.RedisCache and opened.get("k") == {"pickled": True}
    for c in (a, b, opened):
        c.close()


def test_native_memory_cache_byte_bound():
    c = duckcache.NativeMemoryCache(max_bytes=10_000)
    for i in range(100):
        c.set(f"k{i}", b"x" * 500)
    assert c.stats()["bytes"] <= 10_000
    assert c.get("k99") == b"x" * 500 and c.get("k0") is None  # least recent went first
    with pytest.raises(duckcache.TooLargeError):
        c.set("huge", b"x" * 20_000)
    with pytest.raises(ValueError):
        duckcache.NativeMemoryCache(max_bytes=0)
    c.close()


def test_native_memory_cache_s3fifo_policy_keeps_hot_keys_through_a_scan():
    lru = duckcache.NativeMemoryCache(maxkeys=100)
    s3 = duckcache.NativeMemoryCache(maxkeys=100, policy="s3fifo")
    assert s3.policy == "s3fifo"
    for c in (lru, s3):
        for i in range(100):
            c.set(f"hot{i}", i)
        for _ in range(3):
            for i in range(100):
                c.get(f"hot{i}")
        for i in range(1000):  # a one-pass scan of keys never seen again
            c.set(f"scan{i}", i)
    hot = lambda c: sum(c.get(f"hot{i}") is not None for i in range(100))  # noqa: E731
    assert hot(lru) == 0  # the scan flushed LRU
    assert hot(s3) >= 85  # S3-FIFO's small queue absorbed it
    both = duckcache.NativeMemoryCache(max_bytes=10_000, policy="s3fifo")
    for i in range(100):
        both.set(f"k{i}", b"x" * 500)
    assert both.stats()["bytes"] <= 10_000
    with pytest.raises(duckcache.TooLargeError):
        both.set("huge", b"x" * 20_000)
    with pytest.raises(ValueError, match="policy"):
        duckcache.NativeMemoryCache(maxkeys=10, policy="lfu")
    for c in (lru, s3, both):
        c.close()
