"""The memoizing decorators: cache() and async_cache()."""

import asyncio
import time

import pytest

import duckcache


def test_cache_computes_once_per_arguments(cache):
    calls = []

    @cache.cache()
    def square(x, scale=1):
        calls.append(x)
        return x * x * scale

    assert [square(3), square(3), square(4), square(3, scale=2), square(3, scale=2)] == [9, 9, 16, 18, 18]
    assert calls == [3, 4, 3]
    assert square.__name__ == "square"


def test_cache_remembers_none_and_falsy_results(cache):
    calls = []

    @cache.cache()
    def nothing():
        calls.append(1)
        return None

    nothing()
    nothing()
    assert calls == [1]


def test_cache_expiry_and_prefix(cache):
    calls = []

    @cache.cache(expiry=0.15, key_prefix="ns")
    def f():
        calls.append(1)
        return len(calls)

    assert f() == 1 and f() == 1
    time.sleep(0.3)
    assert f() == 2
    assert any(cache.has(k) for k in [f"ns.{f.__qualname__}:():[]"]), "the seed's key format"


def test_cache_propagates_errors_without_caching(cache):
    calls = []

    @cache.cache()
    def fails():
        calls.append(1)
        raise ValueError("no")

    for _ in range(2):
        with pytest.raises(ValueError):
            fails()
    assert calls == [1, 1]


def test_async_cache_computes_a_missing_value_once_for_all_waiters(cache):
    calls = []

    @cache.async_cache(expiry=60)
    async def slow(x):
        calls.append(x)
        await asyncio.sleep(0.05)
        return {"x": x}

    async def main():
        results = await asyncio.gather(*(slow(1) for _ in range(25)), slow(2), slow(2))
        assert results == [{"x": 1}] * 25 + [{"x": 2}] * 2
        assert sorted(calls) == [1, 2]
        assert await slow(1) == {"x": 1} and len(calls) == 2

    asyncio.run(main())


def test_async_cache_when_the_computing_caller_is_cancelled(cache):
    calls = []

    @cache.async_cache()
    async def slow():
        calls.append(1)
        await asyncio.sleep(0.1)
        return "done"

    async def main():
        first = asyncio.create_task(slow())
        await asyncio.sleep(0.01)
        others = [asyncio.create_task(slow()) for _ in range(5)]
        await asyncio.sleep(0.01)
        first.cancel()
        assert await asyncio.gather(*others) == ["done"] * 5
        with pytest.raises(asyncio.CancelledError):
            await first
        assert len(calls) == 2, "the next waiter computed it, once"

    asyncio.run(main())


def test_async_cache_failure_reaches_the_caller_and_the_next_one_retries(cache):
    outcomes = iter([ValueError("first fails"), "second works"])

    @cache.async_cache()
    async def flaky():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def main():
        results = await asyncio.gather(flaky(), flaky(), return_exceptions=True)
        assert isinstance(results[0], ValueError) and results[1] == "second works"

    asyncio.run(main())


def test_subclassing_cache_base_keeps_the_decorators():
    from conftest import DictCache

    c = DictCache()
    calls = []

    @c.cache()
    def f():
        calls.append(1)
        return 5

    async def g_body():
        return 6

    g = c.async_cache()(g_body)
    assert f() == f() == 5 and calls == [1]
    assert asyncio.run(g()) == 6 and asyncio.run(g()) == 6
    base = duckcache.CacheBase()
    for call in (lambda: base.set("k", 1), lambda: base.get("k"), lambda: base.delete("k"), lambda: base.pop("k"), base.clear):
        with pytest.raises(NotImplementedError):
            call()
    base.save()
