"""The persistent classes' read cache (read_cache=BYTES, on by default): exact across
processes, off with 0, bad sizes refused, any directory name."""

import multiprocessing

import pytest

import duckcache


def _write(kind, path, key, value):
    cache = kind(path, read_cache=0)
    if value is None:
        cache.delete(key)
    else:
        cache.set(key, value)
    cache.close()


@pytest.mark.parametrize("kind", [duckcache.PersistentFileCache, duckcache.DynamicFileCache])
def test_another_process_write_is_seen_by_a_warm_read_cache(tmp_path, kind):
    # A directory name full of URI syntax: the path reaches the library intact.
    path = tmp_path / "odd ?&=%# name"
    path.mkdir()
    context = multiprocessing.get_context("spawn")
    with kind(str(path)) as cache:
        assert cache.read_cache > 0
        for round in range(20):
            cache.set("k", round)
            assert cache.get("k") == round
            assert cache.get("k") == round  # now served from memory
            value = None if round % 4 == 3 else f"other-{round}"
            writer = context.Process(target=_write, args=(kind, str(path), "k", value))
            writer.start()
            writer.join()
            assert writer.exitcode == 0
            assert cache.get("k") == value
    assert (path / ("cache.db" if kind is duckcache.PersistentFileCache else "index.db")).exists()


@pytest.mark.parametrize("bad", [-1, 1.5, "8MiB", True, 2**64])
def test_a_bad_read_cache_size_is_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        duckcache.PersistentFileCache(str(tmp_path), read_cache=bad)


def test_read_cache_off(tmp_path):
    with duckcache.PersistentFileCache(str(tmp_path), read_cache=0) as cache:
        cache.set("k", "v")
        assert cache.get("k") == "v"
