"""The binding does not leak: many operations on a cache of constant size leave the
process's resident memory where it was (the C library's allocations included, which
tracemalloc cannot see)."""

import asyncio
import gc
import os

import pytest

import duckcache

# Under AddressSanitizer freed memory sits in a quarantine, so resident memory grows
# whatever the code does; make test runs these tests in the plain pass.
pytestmark = pytest.mark.skipif(
    "asan" in os.environ.get("LD_PRELOAD", ""), reason="resident memory means nothing under ASan"
)


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def churn(cache, rounds):
    value = {"payload": "x" * 1024}
    for i in range(rounds):
        key = f"k{i % 100}"
        cache.set(key, value)
        cache.get(key)
        cache.set(b"raw", b"y" * 4096)
        cache.get(b"raw")
        cache.has(key)
        if i % 3 == 0:
            cache.pop(key, None)
        if i % 5 == 0:
            cache.delete(key)
        cache.get("absent")


async def churn_async(cache, rounds):
    for i in range(rounds):
        key = f"a{i % 50}"
        await cache.async_set(key, b"z" * 2048)
        await cache.async_get(key)
        await cache.async_pop(key, None)


def test_many_operations_leave_memory_flat(opener):
    # A leak of one value per pop alone would show as 13,000 x 1 KiB.
    for kind in ("memory", "file"):
        cache = opener(kind)
        churn(cache, 5_000)  # warm up: buffers, statement caches, allocator pools
        asyncio.run(churn_async(cache, 1_000))
        gc.collect()
        before = resident_bytes()
        churn(cache, 40_000)
        asyncio.run(churn_async(cache, 6_000))
        gc.collect()
        grown = resident_bytes() - before
        assert grown < 6 << 20, f"{kind}: resident memory grew by {grown >> 20} MiB"


def test_opening_and_closing_many_caches_leaves_memory_flat(tmp_path):
    def cycle(n):
        for i in range(n):
            with duckcache.PersistentFileCache(str(tmp_path / "c")) as c:
                c.set("k", i)
            m = duckcache.NativeMemoryCache(10)
            m.set("k", i)
            del m
        gc.collect()

    cycle(50)
    before = resident_bytes()
    cycle(500)
    grown = resident_bytes() - before
    assert grown < 8 << 20, f"resident memory grew by {grown >> 20} MiB"
