"""The original module's per-instance locks: `lock` (a threading.RLock) and `async_lock`,
which its classes hold in every call and which application code takes around compound
operations (`with cache.lock: cache.set(k, cache.get(k) + 1)`).

`honours_seed_locks` gives a library-backed class the same: each of its calls holds
`lock`, and each async_* call holds `async_lock` and then `lock` (awaiting `lock` rather
than blocking the event loop), so a thread or a task holding either excludes the class's
own calls, as in the original. get_or_set, async_get_or_set and keys() are duckcache's
own and hold neither: the compute function runs on another thread in the async form (and
may use the cache), and a get-or-compute is already one call per key.

`async_lock` is a TaskLock, not the original's plain asyncio.Lock, because our async
calls really await (the original's ran synchronously under the lock): a plain Lock held
across an await would be met by tasks of other threads' event loops, which an asyncio
Lock cannot wake (a hang), and a task holding it could not call the cache's own async
methods (a deadlock the original had).

A child of fork() gets every such lock back unheld (a parent thread that held one at
the fork does not exist in the child, so the child's first call would hang), as the
logging module does for its handlers.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import weakref

# Every object whose locks a child of fork() must get back unheld.
_instances = weakref.WeakSet()


class TaskLock:
    """An asyncio lock per event loop, reentrant for the task that holds it: `async with
    lock`, `await lock.acquire()`, `lock.release()` and `lock.locked()` as asyncio.Lock's.
    Tasks of one loop exclude each other; tasks of different loops (threads) do not
    meet here (the cache's `lock` orders them)."""

    def __init__(self):
        # loop -> [asyncio.Lock, the task holding it, how many times it holds it]
        self._loops = weakref.WeakKeyDictionary()

    def _state(self):
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops.setdefault(loop, [asyncio.Lock(), None, 0])
        return state

    async def acquire(self) -> bool:
        await self.hold()
        return True

    def release(self) -> None:
        try:
            state = self._state()
        except RuntimeError:
            # No running loop: a coroutine closed after its loop stopped; the loop's
            # lock goes with the loop.
            return
        if state[2] == 0:
            raise RuntimeError("TaskLock is not acquired")
        self.let_go(state)

    async def hold(self):
        """Acquires; returns what `let_go` takes to release exactly this hold (a
        coroutine closed late may run its release under another loop)."""
        state = self._state()
        task = asyncio.current_task()
        if state[1] is not task or task is None:
            await state[0].acquire()
            state[1] = task
        state[2] += 1
        return state

    @staticmethod
    def let_go(state) -> None:
        state[2] -= 1
        if state[2] == 0:
            state[1] = None
            try:
                state[0].release()
            except RuntimeError:  # its loop is closed: nobody there waits any more
                pass

    def locked(self) -> bool:
        """Whether a task of the running loop (any loop, outside one) holds it."""
        try:
            return self._state()[0].locked()
        except RuntimeError:
            return any(state[0].locked() for state in list(self._loops.values()))

    async def __aenter__(self):
        await self.acquire()

    async def __aexit__(self, *exc):
        self.release()


def give_locks(cache, async_lock=asyncio.Lock) -> None:
    """Gives `cache` its own unheld `lock` and `async_lock` (a new `async_lock()`)."""
    cache.lock = threading.RLock()
    cache.async_lock = async_lock()
    _instances.add(cache)


def _locks_anew_in_child():
    for cache in list(_instances):
        lock = getattr(cache, "lock", None)
        if hasattr(lock, "_at_fork_reinit"):
            lock._at_fork_reinit()
        else:
            cache.lock = threading.RLock()
        cache.async_lock = type(cache.async_lock)()


os.register_at_fork(after_in_child=_locks_anew_in_child)

# The calls that hold the locks (the original's, and duckcache's single calls).
_SYNC = (
    "delete", "pop", "clear", "save", "close", "has", "__len__", "stats", "add", "incr",
    "decr", "touch", "ttl", "get_many", "set_many", "delete_many", "delete_prefix",
    "purge_expired",
)
_ASYNC = ("async_set", "async_get", "async_pop", "async_delete", "async_clear")

# How long an async call waits between tries of `lock` while another thread holds it.
_POLL_SECONDS = (0.0005, 0.01)


def _locked(method):
    def call(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return call


def _locked_get(method):
    # get and set have fixed signatures: the hottest calls skip *args packing.
    def get(self, key, default=None):
        with self.lock:
            return method(self, key, default)

    return get


def _locked_set(method):
    def set(self, key, value, expiry=None):
        with self.lock:
            return method(self, key, value, expiry)

    return set


async def _acquire_without_blocking(lock) -> None:
    """Takes the RLock `lock` on the event loop's thread without blocking the loop."""
    pause = _POLL_SECONDS[0]
    while not lock.acquire(blocking=False):
        await asyncio.sleep(pause)
        pause = min(pause * 2, _POLL_SECONDS[1])


def _async_locked(method):
    async def call(self, *args, **kwargs):
        async_lock = self.async_lock
        held = await async_lock.hold()
        try:
            lock = self.lock
            await _acquire_without_blocking(lock)
            try:
                return await method(self, *args, **kwargs)
            finally:
                lock.release()
        finally:
            async_lock.let_go(held)

    return call


def _locks_then(open_store):
    def _open(self, *args):
        give_locks(self, TaskLock)
        return open_store(self, *args)

    return _open


def honours_seed_locks(cls):
    """Class decorator: `cls`'s calls hold its `lock` and `async_lock` (see above)."""
    wrappers = {"get": _locked_get, "set": _locked_set, "_open": _locks_then}
    wrappers.update((name, _locked) for name in _SYNC)
    wrappers.update((name, _async_locked) for name in _ASYNC)
    for name, wrap in wrappers.items():
        method = getattr(cls, name)
        setattr(cls, name, functools.update_wrapper(wrap(method), method))
    return cls
