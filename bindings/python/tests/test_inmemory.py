"""InMemoryCache with the original's object semantics, checked against the original
InMemoryCache (duckframework 2.3.2) and under Duck's own fileio test."""

import asyncio
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import duckcache
from duckcache import InMemoryCache

from test_parity import seed as original


def run_in_duck_project(tmp_path, code, settings='SECRET_KEY = "k" * 32\n'):
    """Runs `code` in a child Python inside a fresh Duck project (`web.settings` holding
    `settings`), as Duck's own code runs; skipped without Duck's dependencies. The child
    runs without AddressSanitizer: Duck's dependencies (C extensions) keep memory past
    exit, which LeakSanitizer would report as leaks; the library's own leak checks are
    the parent run's."""
    try:
        import asgiref  # noqa: F401  (one of Duck's dependencies)
    except ImportError:
        pytest.skip("duckframework's dependencies are not installed")
    project = tmp_path / "project"
    (project / "web").mkdir(parents=True, exist_ok=True)
    (project / "web" / "__init__.py").write_text("")
    (project / "web" / "settings.py").write_text(settings)
    env = dict(os.environ, PYTHONPATH=str(project), DUCK_SETTINGS_MODULE="web.settings")
    if "libasan" in env.get("LD_PRELOAD", ""):
        del env["LD_PRELOAD"]
    return subprocess.run([sys.executable, "-c", code], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_ok(done):
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_a_get_returns_the_stored_object_itself():
    c = InMemoryCache()
    record = {"views": 0}
    c.set("page", record)
    assert c.get("page") is record
    c.get("page")["views"] += 1  # Duck changes cached objects in place
    assert c.get("page")["views"] == 1
    # objects that cannot be pickled: live components, locks, queues, lambdas
    for thing in (lambda: 1, threading.Lock(), asyncio.Queue()):
        c.set("thing", thing)
        assert c.get("thing") is thing
    chunk = (b"x" * (1 << 20), 1.5)  # Duck's FILE_CACHE entries
    c.set(("file", 0, 1 << 20), chunk)
    assert c.get(("file", 0, 1 << 20)) is chunk
    assert c.pop(("file", 0, 1 << 20)) is chunk


def test_any_hashable_key():
    c = InMemoryCache()
    keys = [None, 0, 1.5, ("view", frozenset({("a", 1)})), "k", b"k", frozenset()]
    for i, key in enumerate(keys):
        c.set(key, i)
    assert [c.get(k) for k in keys] == list(range(len(keys)))
    assert c.get("k") != c.get(b"k"), '"k" and b"k" are different keys, as in the original'
    assert c.pop(None) == 0 and not c.has(None)
    with pytest.raises(TypeError):
        c.set(["a list"], 1)


def test_the_cache_attribute_is_the_entries_and_the_decorator():
    c = InMemoryCache(maxkeys=10)
    for k in "abc":
        c.set(k, k.upper())
    c.get("a")
    assert list(c.cache.keys()) == ["b", "c", "a"], "least recently used first"
    assert "b" in c.cache and len(c.cache) == 3 and list(c.cache) == ["b", "c", "a"]
    assert dict(c.cache.items()) == {"b": "B", "c": "C", "a": "A"}
    calls = []

    @c.cache(expiry=60)
    def square(x):
        calls.append(x)
        return x * x

    assert square(4) == 16 and square(4) == 16 and calls == [4]
    assert len(c.cache) == 4


def test_empty_is_still_true_and_has_is_a_peek():
    c = InMemoryCache(maxkeys=2)
    assert bool(c) is True and len(c) == 0
    c.set("a", 1)
    c.set("b", 2)
    assert c.has("a")
    c.set("c", 3)
    assert not c.has("a"), "has() did not make 'a' recent, so LRU evicted it"


def test_expiry_and_expiry_map():
    c = InMemoryCache()
    c.set("short", 1, expiry=0.2)
    c.set("never", 2)
    c.set("zero", 3, expiry=0)
    assert c.get("zero") is None
    snapshot = c.expiry_map
    assert set(snapshot) == {"short"}
    assert abs((snapshot["short"] - __import__("datetime").datetime.now()).total_seconds() - 0.2) < 0.15
    assert c.has("short")
    time.sleep(0.3)
    assert c.get("short", "gone") == "gone" and not c.has("short")
    assert c.pop("short", "d") == "d"
    with pytest.raises(KeyError):
        c.pop("short")
    c.set("again", 1, expiry=10)
    c.set("again", 2)  # a set without expiry clears the earlier one
    assert c.expiry_map == {}
    with pytest.raises(ValueError):
        c.set("nan", 1, expiry=float("nan"))
    assert len(c) == 2


def test_async_forms_and_locks():
    c = InMemoryCache()
    assert isinstance(c.lock, type(threading.RLock())) and isinstance(c.async_lock, asyncio.Lock)

    async def main():
        await c.async_set("k", [1])
        assert await c.async_get("k") == [1]
        assert await c.async_pop("k") == [1]
        await c.async_set("k", 1)
        await c.async_delete("k")
        await c.async_set("k", 1)
        await c.async_clear()
        assert await c.async_get("k", "d") == "d"

    asyncio.run(main())


def test_threads_share_one_lru_exactly():
    c = InMemoryCache(maxkeys=100)

    def work(t):
        for i in range(2000):
            c.set((t, i % 150), i)
            c.get((t, (i * 7) % 150))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(c.cache) == 100


@pytest.mark.parametrize("seed_value", range(20))
def test_same_results_and_order_as_the_original(seed_value):
    """Random operations on both classes: every result, and the LRU order of the keys
    after each step, are the same."""
    rng = random.Random(seed_value)
    maxkeys = rng.choice([None, 1, 3, 8])
    ours, theirs = InMemoryCache(maxkeys), original.InMemoryCache(maxkeys)
    keys = ["a", "b", "c", "d", "e", None, ("t", 1), 7, b"a"]
    for step in range(300):
        op = rng.choice(["set", "get", "has", "pop", "delete", "clear", "set"])
        key = rng.choice(keys)
        if op == "set":
            value = rng.randrange(100)
            results = ours.set(key, value), theirs.set(key, value)
        elif op == "get":
            results = ours.get(key, "default"), theirs.get(key, "default")
        elif op == "has":
            results = ours.has(key), theirs.has(key)
        elif op == "pop":
            results = ours.pop(key, "default"), theirs.pop(key, "default")
        elif op == "delete":
            results = ours.delete(key), theirs.delete(key)
        else:
            results = ours.clear(), theirs.clear()
        assert results[0] == results[1], f"step {step}: {op} {key!r}"
        assert list(ours.cache.keys()) == list(theirs.cache.keys()), f"step {step}: {op} {key!r}"


def test_duck_fileio_tests_pass_as_with_the_original(tmp_path):
    """Duck's own duck/utils/fileio/test_fileio.py, run as Duck runs it, once with the
    original module and once with duckcache in its place: the same tests pass."""
    found = __import__("importlib.util").util.find_spec("duck")
    if found is None:
        pytest.skip("duckframework is not installed")
    script = Path(next(iter(found.submodule_search_locations))) / "utils" / "fileio" / "test_fileio.py"

    def run(prelude):
        code = prelude + f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')\n"
        done = run_in_duck_project(tmp_path, code, 'SECRET_KEY = "s" * 40\n')
        text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
        summary = re.search(r"(\d+)/(\d+) passed", text)
        assert summary, done.stderr[-3000:]
        failed = sorted(line.strip() for line in text.splitlines() if line.strip().startswith("FAIL"))
        return int(summary.group(1)), int(summary.group(2)), failed

    with_original = run("")
    with_duckcache = run("import sys, duckcache\nsys.modules['duck.utils.caching'] = duckcache\n")
    assert with_duckcache == with_original, (with_original, with_duckcache)
    assert with_duckcache[0] >= 29


@pytest.mark.parametrize("storage", ["InMemoryCache", "PersistentFileCache", "DynamicFileCache", "KeyAsFolderCache"])
def test_duck_sessions_through_each_storage_class(tmp_path, storage):
    """Duck's own SessionStorageConnector (it wraps the storage in EncryptedCache with
    the SECRET_KEY setting) with duckcache in place of duck.utils.caching."""
    sessions = tmp_path / "sessions"
    script = f"""
import sys
import duckcache
sys.modules["duck.utils.caching"] = duckcache
from duck.http.session.connector import SessionStorageConnector
connector = SessionStorageConnector(duckcache.{storage})
sid = connector.generate_session_id()
connector.set_session(sid, {{"user_id": 42, "cart": [1, 2]}}, 3600)
assert connector.get_session(sid) == {{"user_id": 42, "cart": [1, 2]}}
connector.update_session(sid, {{"user_id": 42, "cart": []}})
assert connector.get_session(sid)["cart"] == []
connector.delete_session(sid)
assert connector.get_session(sid) is None
connector.set_session(sid, {{"marker": "SESSION-PLAINTEXT"}})
connector.save()
connector.close()
print("ok")
"""
    assert_ok(run_in_duck_project(
        tmp_path, script, f'SECRET_KEY = "k" * 32\nSESSION_DIR = {str(sessions)!r}\n'
    ))
    # Nothing the sessions stored is readable on disk.
    stored = [p for p in sessions.rglob("*") if p.is_file()] if sessions.exists() else []
    assert stored or storage == "InMemoryCache"
    for path in stored:
        if path.is_file():
            assert b"SESSION-PLAINTEXT" not in path.read_bytes(), path


def test_duck_mcp_sessions_and_cached_view_with_duckcache_in_place(tmp_path):
    """Duck's MCP session store and @cached_view, run with duckcache in place of
    duck.utils.caching: the registries are duckcache's InMemoryCache, an empty user cache
    is not replaced by the default, sessions round-trip with their TTL, and cached views
    (tuple-of-frozenset keys) return the very response object they cached."""
    script = """
import sys
import duckcache
sys.modules["duck.utils.caching"] = duckcache
from duck.contrib.mcp.session import SessionStore, DEFAULT_SESSION_REGISTRY
assert type(DEFAULT_SESSION_REGISTRY) is duckcache.InMemoryCache
user_cache = duckcache.InMemoryCache(maxkeys=10)
assert (user_cache or DEFAULT_SESSION_REGISTRY) is user_cache, "an empty cache is still used"
session = SessionStore(cache=user_cache, ttl=60)
sid = session.assign_new_session_id()
session["tool"] = "search"
session["state"] = {"page": 2}
session.save()
again = SessionStore(cache=user_cache, session_id=sid)
assert again.load() == {"tool": "search", "state": {"page": 2}}
assert again.exists()
again.delete()
assert not SessionStore(cache=user_cache, session_id=sid).exists()
short = SessionStore(cache=user_cache, ttl=0.2)
short.assign_new_session_id()
short["k"] = 1
short.save()
import time
time.sleep(0.3)
assert not SessionStore(cache=user_cache, session_id=short.session_id).exists()
# cached_view: keys are tuples of frozensets, values the responses themselves
from duck.views import cached_view, DEFAULT_VIEW_CACHE
calls = []
@cached_view(targets=["path"])
def handler(request):
    calls.append(request.path)
    return ["response for", request.path]
class Request:
    def __init__(self, path):
        self.path = path
first = handler(Request("/a"))
assert handler(Request("/a")) is first and handler(Request("/b")) == ["response for", "/b"]
assert calls == ["/a", "/b"]
assert all(isinstance(k, tuple) for k in DEFAULT_VIEW_CACHE.cache.keys())
print("ok")
"""
    assert_ok(run_in_duck_project(tmp_path, script))


def test_duck_requests_limit_and_lively_registry_with_duckcache_in_place(tmp_path):
    """Duck's RequestsLimitMiddleware (a per-client counter with a window expiry) and the
    Lively component system's registry (tuples holding live components, changed in
    place), both on duckcache's InMemoryCache."""
    script = """
import sys, time
import duckcache
sys.modules["duck.utils.caching"] = duckcache
from duck.http.middlewares.security.requestslimit import RequestsLimitMiddleware as Limit
assert type(Limit._clients) is duckcache.InMemoryCache
Limit.max_requests, Limit.requests_delay = 3, 0.3
class Request:
    client_address = ("10.0.0.7", 5555)
outcomes = [Limit._process_request(Request()) for _ in range(5)]
assert outcomes == [Limit.request_ok] * 3 + [Limit.request_bad] * 2, outcomes
class Other:
    client_address = ("10.0.0.8", 1)
assert Limit._process_request(Other()) == Limit.request_ok  # counted per client
time.sleep(0.35)
assert Limit._process_request(Request()) == Limit.request_ok  # a new window

from duck.html.components.core.system import LivelyComponentSystem as Lively
assert type(Lively.registry) is duckcache.InMemoryCache
component = type("Component", (), {"on_click": lambda self: None})()  # not picklable
tree = {"root-1": component}
Lively.registry.set("root-1", ("token", tree, None))
assert Lively.get_from_registry("root-1", "root-1") is component
Lively.mark_disconnected("root-1")
owner, again, disconnected_at = Lively.registry.get("root-1")
assert again is tree and disconnected_at is not None
Lively.mark_connected("root-1")
assert Lively.registry.get("root-1")[2] is None
tree["child-2"] = "added in place"  # the stored dict itself changes
assert Lively.get_from_registry("root-1", "child-2") == "added in place"
print("ok")
"""
    assert_ok(run_in_duck_project(tmp_path, script))


def test_a_child_of_fork_is_not_stuck_on_a_lock_a_parent_thread_held():
    from conftest import child_exit_code

    """A parent thread inside a call at the fork left the cache's RLock held in the child
    (3 of 7-9 forks hung); the child gets its locks back unheld."""
    import os
    import threading

    from duckcache import InMemoryCache

    c = InMemoryCache()
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            with c.lock:  # held across many bytecodes, as a compound operation would
                c.set(f"k{i % 50}", i)
                c.get(f"k{(i + 7) % 50}")
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(20):
            pid = os.fork()
            if pid == 0:
                # A hang here is the failure: the parent gives up after 10 s.
                c.set("child", 1)
                os._exit(0 if c.get("child") == 1 else 1)
            assert child_exit_code(pid) == 0, "the child hung on a lock its parent's thread held"
    finally:
        stop.set()
        t.join()
