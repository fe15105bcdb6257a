"""Several processes on one directory, and CacheSpeedTest."""

import multiprocessing

import pytest

import duckcache
from conftest import open_kind


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
