"""The async_ variants: real coroutines over the C async functions."""

import asyncio
import re
import time

import pytest

import duckcache


def run(coro):
    return asyncio.run(coro)


def test_every_async_method(cache):
    async def main():
        assert await cache.async_get("k") is None
        assert await cache.async_get("k", "d") == "d"
        await cache.async_set("k", {"v": 1})
        await cache.async_set("raw", b"\x00raw")
        assert await cache.async_get("k") == {"v": 1}
        assert await cache.async_get("raw") == b"\x00raw"
        assert cache.get("k") == {"v": 1}, "async and sync calls see one cache"
        assert await cache.async_pop("k") == {"v": 1}
        with pytest.raises(KeyError):
            await cache.async_pop("k")
        assert await cache.async_pop("k", 7) == 7
        await cache.async_set("gone", 1, expiry=0)
        assert await cache.async_get("gone") is None
        await cache.async_delete("raw")
        await cache.async_delete("raw")
        assert await cache.async_get("raw") is None
        await cache.async_set("x", 1)
        await cache.async_clear()
        assert len(cache) == 0

    run(main())


def test_many_concurrent_operations_in_order_per_cache(cache):
    async def main():
        await asyncio.gather(*(cache.async_set(f"k{i}", i) for i in range(300)))
        got = await asyncio.gather(*(cache.async_get(f"k{i}") for i in range(300)))
        assert got == list(range(300))
        popped = await asyncio.gather(*(cache.async_pop("k0", None) for _ in range(20)))
        assert popped.count(0) == 1 and popped.count(None) == 19, "pop is exactly-once"

    run(main())


def test_the_loop_keeps_running_while_operations_are_in_flight(persistent_kind, opener):
    """One slow write (32 MiB) is awaited; a ticker task must run many times meanwhile.
    Were the call blocking, the ticker could not run at all before it returned."""
    cache = opener(persistent_kind)
    big = b"v" * (32 << 20)

    async def main():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = ticks
        await cache.async_set("big", big)
        during = ticks - start
        done = True
        await task
        assert during > 10, f"the loop ran only {during} times during the write"
        assert await cache.async_get("big") == big

    run(main())


def test_async_errors_carry_status_and_detail(tmp_path):
    cache = duckcache.PersistentFileCache(str(tmp_path), cache_size=100)

    async def main():
        with pytest.raises(duckcache.TooLargeError) as info:
            await cache.async_set("k", b"x" * 1000)
        detail = info.value.detail
        assert re.search(r"the entry is (\d+) bytes and the cache holds at most 100$", detail), detail
        assert int(re.search(r"is (\d+) bytes", detail).group(1)) > 1000, detail
        with pytest.raises(ValueError):
            await cache.async_set("k", 1, expiry=float("nan"))
        with pytest.raises(KeyError):
            await cache.async_get(3)
        cache.close()
        with pytest.raises(RuntimeError):
            await cache.async_get("k")
        with pytest.raises(RuntimeError):
            await cache.async_clear()

    run(main())


def test_cancelling_the_awaiting_task_is_safe(cache):
    async def main():
        tasks = [asyncio.create_task(cache.async_set(f"k{i}", i)) for i in range(200)]
        await asyncio.sleep(0)
        for t in tasks[::2]:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        cancelled = [isinstance(r, asyncio.CancelledError) for r in results]
        assert 0 < sum(cancelled) <= 100
        # Every started operation completed; the cache is consistent and usable. The
        # persistent classes hold the original's async_lock: a call cancelled while it
        # waited for the lock never started (nothing done), as in the original.
        await cache.async_set("after", 1)
        assert await cache.async_get("after") == 1
        waits_for_lock = hasattr(cache, "async_lock")
        for i in range(200):
            if cancelled[i] and waits_for_lock:
                assert cache.get(f"k{i}") in (None, i)
            else:
                assert cache.get(f"k{i}") == i

    run(main())
    assert not duckcache._calls._pending, "no completion is left waiting"


def test_a_closed_loop_does_not_break_late_completions(cache):
    loop = asyncio.new_event_loop()
    task = loop.create_task(cache.async_set("k", 1))
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    time.sleep(0.1)  # the completion arrives after the loop is gone
    cache.set("k2", 2)
    assert cache.get("k2") == 2
    del task


def test_several_threads_with_their_own_loops(cache):
    import threading

    errors = []

    def worker(n):
        async def main():
            for i in range(100):
                await cache.async_set(f"t{n}-{i}", i)
                assert await cache.async_get(f"t{n}-{i}") == i

        try:
            asyncio.run(main())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == 400


def test_a_cancelled_get_or_set_keeps_its_compute_function_alive(cache):
    """The compute function is a ctypes callback the library calls on its thread: a task
    cancelled while it is queued must not let it be collected (it was: SIGSEGV)."""
    import gc

    def slow():
        time.sleep(0.2)
        return "slow"

    def quick():
        return "quick"

    async def main():
        first = asyncio.ensure_future(cache.async_get_or_set("a", slow))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(cache.async_get_or_set("b", quick), 0.05)
        gc.collect()
        assert await first == "slow"
        await asyncio.sleep(0.05)
        assert cache.get("b") == "quick", "the cancelled call still completed"

    run(main())
    assert not duckcache._calls._pending


def test_a_cancelled_pop_puts_its_value_back(cache):
    """A pop whose caller went away must not drop the value: it is put back (unless
    the key was written meanwhile)."""

    async def main():
        for i in range(40):
            cache.set("job", {"n": i})
            task = asyncio.ensure_future(cache.async_pop("job"))
            await asyncio.sleep(0)
            task.cancel()
            try:
                got = await task
            except asyncio.CancelledError:
                # The pop's completion reaches the loop (later on a loaded machine: wait
                # for it rather than a fixed time), then puts the value back.
                for _ in range(1000):
                    if not duckcache._calls._pending:
                        break
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.02)
                assert cache.get("job") == {"n": i}, f"round {i}: the popped value was lost"
            else:
                assert got == {"n": i}
            cache.delete("job")

    run(main())
