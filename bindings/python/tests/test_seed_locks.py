"""The original's `lock` and `async_lock` on the persistent classes (issue 30 item 17):
application code takes them around compound operations, so the classes' own calls must
wait for them, in threads and in tasks, and a child of fork() must not inherit them
held."""

import asyncio
import copy
import os
import threading
import time


from conftest import child_exit_code, hold_in_a_thread, open_kind


def _finishes_only_after_release(lock, call):
    """Runs `call` on a thread while `lock` is held here; True when it waited for the
    release (it had not finished 0.3 s in, and did finish after)."""
    done = threading.Event()
    with lock:
        t = threading.Thread(target=lambda: (call(), done.set()))
        t.start()
        waited = not done.wait(0.3)
    t.join(10)
    return waited and done.is_set()


def test_the_classes_calls_wait_for_a_thread_holding_lock(tmp_path, persistent_kind):
    c = open_kind(persistent_kind, tmp_path)
    assert isinstance(c.lock, type(threading.RLock()))
    c.set("n", 1)
    for call in (
        lambda: c.set("n", 2),
        lambda: c.get("n"),
        lambda: c.pop("n", None),
        lambda: c.delete("n"),
        lambda: c.set_many({"a": 1}),
        lambda: len(c),
        lambda: c.clear(),
    ):
        assert _finishes_only_after_release(c.lock, call)
    # Reentrant, as the original's: the holder's own calls go through.
    with c.lock:
        c.set("n", 3)
        assert c.get("n") == 3
    c.close()


def test_a_compound_operation_under_lock_loses_no_plain_set(tmp_path, persistent_kind):
    """A read-modify-write under `lock` against plain sets from another thread: every
    plain set lands either before the read or after the write, never between (without
    the class honouring the lock, sets landed between and were overwritten)."""
    c = open_kind(persistent_kind, tmp_path)
    c.set("k", 0)
    stop = threading.Event()
    lost = []

    def compound():
        while not stop.is_set():
            with c.lock:
                before = c.get("k")
                time.sleep(0.001)  # a window for a plain set to land in
                if c.get("k") != before:
                    lost.append(before)
                c.set("k", before)

    t = threading.Thread(target=compound)
    t.start()
    try:
        for i in range(200):
            c.set("k", i)
    finally:
        stop.set()
        t.join()
    assert lost == []
    c.close()


def test_async_calls_wait_for_async_lock_and_for_lock_without_blocking_the_loop(
    tmp_path, persistent_kind
):
    c = open_kind(persistent_kind, tmp_path)

    async def main():
        # A task holding async_lock.
        async with c.async_lock:
            pending = asyncio.ensure_future(c.async_set("a", 1))
            await asyncio.sleep(0.2)
            assert not pending.done()
        await pending
        assert await c.async_get("a") == 1
        # The holder's own async calls go through (the original's deadlocked).
        async with c.async_lock:
            await c.async_set("a", 5)
            assert await c.async_get("a") == 5

        # A thread holding lock: the async call waits, and the loop keeps running.
        ticks = 0
        let_go = hold_in_a_thread(c.lock)
        pending = asyncio.ensure_future(c.async_set("a", 2))
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not pending.done() and ticks == 20
        let_go()
        await pending
        assert await c.async_get("a") == 2

    asyncio.run(asyncio.wait_for(main(), 60))  # a deadlock fails, not hangs
    c.close()


def test_copies_share_the_locks(tmp_path, persistent_kind):
    c = open_kind(persistent_kind, tmp_path)
    twin = copy.copy(c)
    assert twin.lock is c.lock and twin.async_lock is c.async_lock
    assert _finishes_only_after_release(c.lock, lambda: twin.set("x", 1))
    c.close()


def test_a_child_of_fork_gets_the_locks_unheld(tmp_path, persistent_kind):
    c = open_kind(persistent_kind, tmp_path)
    let_go = hold_in_a_thread(c.lock)
    try:
        pid = os.fork()
        if pid == 0:
            c.set("child", 1)  # hangs if the lock stayed held
            os._exit(0 if c.get("child") == 1 else 1)
        assert child_exit_code(pid) == 0, "the child hung on the lock a parent thread held"
    finally:
        let_go()
    assert c.get("child") == 1
    c.close()
