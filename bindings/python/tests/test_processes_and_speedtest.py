"""Several processes on one directory, and CacheSpeedTest."""

import multiprocessing
import time

import pytest

import duckcache
from conftest import child_exit_code, open_kind


def _pop_all(kind, directory, keys, out):
    import duckcache  # noqa: F401 (the spawned interpreter imports it afresh)

    with open_kind(kind, directory) as c:
        out.put([k for k in keys if c.pop(k, None) is not None])


def test_pop_is_exactly_once_across_processes(persistent_kind, tmp_path):
    keys = [f"k{i}" for i in range(60)]
    with open_kind(persistent_kind, tmp_path) as c:
        for k in keys:
            c.set(k, {"k": k})
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_pop_all, args=(persistent_kind, tmp_path, keys, out)) for _ in range(3)]
    for p in procs:
        p.start()
    popped = [k for _ in procs for k in out.get(timeout=120)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(popped) == sorted(keys), "every key popped by exactly one process"


def test_speed_test_keeps_the_seeds_shape(capsys, tmp_path):
    t = duckcache.CacheSpeedTest(repeat=2, directory=str(tmp_path))
    t.execute_all()
    printed = capsys.readouterr().out
    assert "Overall Performance Summary" in printed and "Fastest Instances" in printed
    names = {"InMemoryCache", "PersistentFileCache", "DynamicFileCache", "KeyAsFolderCache"}
    assert set(t.results) == names
    for result in t.results.values():
        assert set(result) == {"create", "set", "get", "delete", "clear"}
        assert all(v > 0 for v in result.values())
    fastest = t.compare_performance()
    assert set(fastest) == {"create", "set", "get", "delete", "clear"}
    assert list(tmp_path.iterdir()) == [], "its temporary directories are removed"
    with pytest.raises(ValueError):
        duckcache.CacheSpeedTest(repeat=0)


def test_caches_work_in_a_forked_child(tmp_path):
    """A pre-forking server opens its caches in the parent and forks workers: each
    child gets a handle of its own on the persistent stores (SQLite connections must
    not cross a fork), keeps a copy of the in-memory cache, and async calls work there
    (the child starts its own worker threads)."""
    import asyncio
    import os

    import duckcache

    disk = duckcache.PersistentFileCache(str(tmp_path / "file"))
    folder_dir = tmp_path / "folder"
    folder_dir.mkdir()
    folder = duckcache.KeyAsFolderCache(str(folder_dir))
    memory = duckcache.NativeMemoryCache()
    for c in (disk, folder, memory):
        c.set("from-parent", "p")
    asyncio.run(memory.async_set("async-parent", 1))  # the parent's pool is running

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            async def child_async():
                for c in (disk, folder, memory):
                    await c.async_set("async-child", 2)
                    assert await c.async_get("async-child") == 2

            for c in (disk, folder, memory):
                assert c.get("from-parent") == "p"
                c.set("from-child", "c")
            asyncio.run(child_async())
            assert disk.pop("from-parent") == "p"
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert disk.get("from-child") == "c" and disk.get("from-parent") is None
    assert folder.get("from-child") == "c"
    assert memory.get("from-child") is None, "the child changed its own copy only"
    assert asyncio.run(disk.async_get("async-child")) == 2
    assert asyncio.run(memory.async_get("async-parent")) == 1
    for c in (disk, folder, memory):
        c.close()


def test_fork_while_other_threads_are_inside_calls(tmp_path, kind):
    """A fork in a busy process (issue 14): two threads hammer the cache with sync calls
    and a third keeps async work queued while the main thread forks, 15 times. Each
    child must use the cache at once (its after-fork reopen included) and exit; a child
    that waits on a lock a parent thread held is killed by its alarm and fails the
    test. The library's fork handlers hold every lock it takes across the fork."""
    import asyncio
    import os
    import signal
    import threading

    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        # GCC 12's AddressSanitizer allocator has no fork handlers (glibc's malloc has):
        # a thread in the middle of any malloc at the fork leaves the child's first
        # malloc waiting forever, whoever's code it is. The plain run covers this.
        pytest.skip("AddressSanitizer's allocator is not fork-safe")

    from conftest import open_kind

    (tmp_path / "c").mkdir()
    cache = open_kind(kind, tmp_path / "c")
    stop = threading.Event()

    def hammer(i):
        n = 0
        while not stop.is_set():
            cache.set(f"k{i}-{n % 50}", b"x" * 100)
            cache.get(f"k{i}-{n % 50}")
            n += 1

    def async_hammer():
        async def go():
            while not stop.is_set():
                await asyncio.gather(*(cache.async_set(f"a{j}", j) for j in range(20)))

        asyncio.run(go())

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    threads.append(threading.Thread(target=async_hammer))
    for t in threads:
        t.start()
    failures = []
    try:
        for round_ in range(15):
            time.sleep(0.03)
            pid = os.fork()
            if pid == 0:
                signal.alarm(15)
                code = 1
                try:
                    cache.set("child", round_)
                    assert cache.get("child") == round_
                    code = 0
                finally:
                    os._exit(code)
            # The child's alarm cannot help if it hangs inside os.fork() itself (the
            # interpreter's after-fork clean-up): wait a bounded time, then kill it.
            code = child_exit_code(pid, 30)
            if code != 0:
                failures.append((round_, "hung, killed" if code is None else code))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [], f"children that failed or hung (round, wait status): {failures}"
