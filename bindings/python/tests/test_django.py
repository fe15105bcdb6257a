"""duckcache.django.DuckCache beyond Django's own suite (test_django_suite.py): settings
errors at construction, one store per LOCATION shared by aliases, ints other clients
read, atomic incr, two processes, timeouts, and the native async methods."""

import asyncio
import itertools
import os
import subprocess
import sys
import threading
import time

import pytest

django = pytest.importorskip("django")
from django.core.cache.backends.base import BaseCache, InvalidCacheBackendError  # noqa: E402

import duckcache  # noqa: E402
from duckcache.django import DuckCache  # noqa: E402


def make(location, **params):
    return DuckCache(location, params)


_memory_stores = itertools.count(100_000)


@pytest.fixture(params=["memory", "file", "sharded", "folder"])
def location(request, tmp_path):
    if request.param == "memory":
        # A store of its own per test: a process shares one memory store per URI.
        return f"memory:?max_keys={next(_memory_stores)}"
    return f"{request.param}:{tmp_path}/store"


def test_bad_settings_fail_when_the_backend_is_made(tmp_path):
    with pytest.raises(InvalidCacheBackendError, match="nosuch"):
        make("nosuch:thing")
    with pytest.raises(InvalidCacheBackendError, match="bogus"):
        make(f"file:{tmp_path}/a", OPTIONS={"bogus": 1})
    with pytest.raises(InvalidCacheBackendError):
        make("")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(InvalidCacheBackendError, match="cannot open"):
        make(f"file:{blocker}/store")
    with pytest.raises(InvalidCacheBackendError, match="near_ttl_max"):
        make(f"file:{tmp_path}/b", OPTIONS={"near_ttl_max": 3})
    with pytest.raises(InvalidCacheBackendError, match="near_ttl_max"):
        make(f"file:{tmp_path}/c", OPTIONS={"near": "memory:", "near_ttl_max": "soon"})


def test_a_plain_directory_is_the_file_kind(tmp_path):
    c = make(str(tmp_path / "plain"))
    c.set("k", "v")
    assert (tmp_path / "plain" / "cache.db").exists()
    assert make(f"file:{tmp_path}/plain").get("k") == "v"


def test_aliases_of_one_location_share_the_store_under_their_prefixes(location):
    a = make(location, KEY_PREFIX="a")
    b = make(location, KEY_PREFIX="b")
    a.set("k", 1)
    assert b.get("k") is None
    b.set("k", 2)
    assert (a.get("k"), b.get("k")) == (1, 2)
    assert a._store is b._store
    a.clear()  # a whole-store clear, as LocMemCache's
    assert b.get("k") is None


def test_ints_are_decimal_text_and_incr_is_the_stores_own(location):
    c = make(location)
    c.set("n", 42, timeout=None)
    raw = duckcache.open(location) if not location.startswith("memory") else None
    if raw is not None:
        assert raw.get(c.make_key("n")) == b"42"  # what another client reads
        raw.close()
    for value in (True, 2**70, 1.5, b"42", "42", None):
        c.set("v", value)
        got = c.get("v")
        assert got == value and type(got) is type(value)
    with pytest.raises(ValueError):
        c.incr("absent")
    c.set("text", "x")
    with pytest.raises(TypeError):
        c.incr("text")
    c.set("big", 2**63 - 1)
    with pytest.raises(OverflowError):
        c.incr("big")
    c.set("counter", 0)

    def bump():
        for _ in range(250):
            c.incr("counter")

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.get("counter") == 1000
    assert c.decr("counter", 10) == 990


def test_two_processes_share_a_persistent_store(tmp_path):
    location = f"file:{tmp_path}/shared"
    c = make(location)
    c.set("from_parent", 1)
    script = (
        "from duckcache.django import DuckCache\n"
        f"c = DuckCache({location!r}, {{}})\n"
        "assert c.get('from_parent') == 1\n"
        "c.set('from_child', [1, 2])\n"
        "c.incr('from_parent', 5)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert c.get("from_child") == [1, 2]
    assert c.get("from_parent") == 6


def test_timeouts_as_django_defines_them(location):
    c = make(location, TIMEOUT=1)
    c.set("default", 1)  # TIMEOUT: 1 second
    c.set("forever", 1, timeout=None)
    c.set("now", 1, timeout=0)
    c.set("past", 1, timeout=-5)
    assert c.get("now") is None and c.get("past") is None
    assert c.add("now", 2, timeout=None) is True
    c.set("short", 1)
    assert c.touch("short", 0.2) is True
    assert c.touch("missing") is False
    time.sleep(1.3)
    assert c.get("short") is None
    assert c.get("forever") == 1
    assert c.get("now") == 2


def test_async_methods_are_native_and_survive_cancellation(location):
    native = ("aget", "aset", "adelete", "aclear", "aadd", "ahas_key", "atouch", "aincr",
              "aget_many", "aset_many", "adelete_many")
    for name in native:
        assert getattr(DuckCache, name) is not getattr(BaseCache, name), name
    c = make(location)

    async def scenario():
        await c.aset("k", {"v": 1})
        assert await c.aget("k") == {"v": 1}
        assert await c.aget("absent", "dflt") == "dflt"
        assert await c.adelete("k") is True
        assert await c.adelete("k") is False
        assert await c.aadd("a", 1) is True
        assert await c.aadd("a", 5) is False
        assert await c.aincr("a", 2) == 3
        assert await c.adecr("a", 1) == 2
        assert await c.aincr("a", 1) == 3
        with pytest.raises(ValueError):
            await c.aincr("absent")
        await c.aset("text", "x")
        with pytest.raises(TypeError):
            await c.aincr("text")
        assert await c.ahas_key("a") and not await c.ahas_key("absent")
        assert await c.atouch("a", None) is True
        assert await c.atouch("absent", 10) is False
        # A cancelled increment happens once or not at all (cancelled during its
        # existence check, it never reaches the store), and the store goes on.
        task = asyncio.ensure_future(c.aincr("a", 10))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.sleep(0.2)
        assert c.get("a") in (3, 13)
        assert await c.aincr("a", 0) in (3, 13)
        await c.aset("a", 3)
        assert await c.aget_many(["a", "absent"]) == {"a": 3}
        assert await c.aget_many([]) == {}
        assert await c.aset_many({"x": 1, "y": [2], "z": b"3"}, timeout=None) == []
        assert await c.aget_many(["x", "y", "z", "w"]) == {"x": 1, "y": [2], "z": b"3"}
        await c.adelete_many(["x", "z", "absent"])
        assert await c.aget_many(["x", "y", "z"]) == {"y": [2]}
        await c.aset_many({"gone": 1}, timeout=0)
        assert await c.aget("gone") is None
        assert await c.ahas_key("y")
        # A cancelled wait leaves the store usable and the operation done.
        task = asyncio.ensure_future(c.aset("late", "value"))
        await asyncio.sleep(0)
        task.cancel()
        for _ in range(200):
            if c.get("late") == "value":
                break
            await asyncio.sleep(0.01)
        assert c.get("late") == "value"
        getter = asyncio.ensure_future(c.aget("late"))
        getter.cancel()
        assert await c.aget("late") == "value"
        await c.aclear()
        assert await c.aget("x") is None

    asyncio.run(scenario())


def test_a_tiered_location(tmp_path):
    c = make(f"file:{tmp_path}/far", OPTIONS={"near": "memory:?max_keys=100", "near_ttl_max": 2})
    c.set("k", "v")
    assert c.get("k") == "v"
    assert isinstance(c._store, duckcache.TieredCache)
    assert make(f"file:{tmp_path}/far").get("k") == "v"  # written through to the far store


def test_close_leaves_the_store_open():
    c = make("memory:?max_keys=77")
    c.set("k", 1)
    c.close()
    assert c.get("k") == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_child_of_fork_uses_the_store(tmp_path):
    c = make(f"file:{tmp_path}/forked")
    c.set("k", 1)
    pid = os.fork()
    if pid == 0:
        try:
            c.set("child", c.get("k") + 1)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert c.get("child") == 2
