"""Python-level benchmark: duckcache's Python classes against the original
duck.utils.caching classes (PyPI: duckframework) and python-diskcache's Cache, same
workload, in one run. Prints a table per class and the ratios (how many times faster
duckcache is). Run by `make bench` in the virtual environment it creates."""

import os
import random
import shutil
import statistics
import sys
import tempfile
import time

import diskcache

import duckcache
import duckcache.encrypted
from duckcache import _original

ROUNDS = 3


# The original module and its encrypted submodule (the `duck` package itself is never
# imported: see duckcache._original).
original = _original.load_caching()
original_encrypted = _original.load_encrypted()
# The original takes a str key (it calls .encode on it); 32 characters are used as is.
KEY = "0123456789abcdef0123456789abcdef"


class DiskcacheAdapter:
    """python-diskcache's Cache with the original module's method names."""

    def __init__(self, path):
        self.c = diskcache.Cache(path)

    def set(self, key, value, expiry=None):
        self.c.set(key, value, expire=expiry)

    def get(self, key, default=None):
        return self.c.get(key, default=default)

    def delete(self, key):
        self.c.delete(key)

    def pop(self, key, default=None):
        return self.c.pop(key, default=default)

    def close(self):
        self.c.close()


def per_op_us(fn, items):
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) * 1e6 / len(items)


def workload(make, n, value):
    """Microseconds per operation: open, set (new keys), get hit (each key once), get hot
    (Zipf repeats), get miss, delete, pop."""
    root = tempfile.mkdtemp(prefix="duckcache-pybench-")
    try:
        keys = [f"key-{i:08d}" for i in range(n)]
        t = time.perf_counter()
        cache = make(root)
        result = {"open": (time.perf_counter() - t) * 1e6}
        result["set"] = per_op_us(lambda k: cache.set(k, value), keys)
        result["get hit"] = per_op_us(lambda k: cache.get(k), keys[::-1])
        # A web cache's reads: hot keys again and again (Zipf 0.99), 5 gets a key.
        result["get hot"] = per_op_us(lambda k: cache.get(k), hot_order(keys))
        assert cache.get(keys[0]) == value
        result["get miss"] = per_op_us(lambda k: cache.get(k + "-absent"), keys)
        half = n // 2
        result["delete"] = per_op_us(cache.delete, keys[:half])
        result["pop"] = per_op_us(lambda k: cache.pop(k, None), keys[half:])
        close = getattr(cache, "close", None)
        if close:
            close()
        return result
    finally:
        time.sleep(0.05)  # the original's close() may still be closing shards in a thread
        shutil.rmtree(root, ignore_errors=True)


def hot_order(keys):
    """5 gets a key on average, keys drawn Zipf(0.99) (the first the hottest), the same
    order for every contender."""
    rng = random.Random(99)
    weights = [1 / (rank + 1) ** 0.99 for rank in range(len(keys))]
    return rng.choices(keys, weights=weights, k=5 * len(keys))


def median_workload(make, n, value):
    runs = [workload(make, n, value) for _ in range(ROUNDS)]
    return {op: statistics.median(r[op] for r in runs) for op in runs[0]}


def subdir(root, make):
    def opener(path):
        p = os.path.join(path, "c")
        os.makedirs(p, exist_ok=True)
        return make(p)

    return opener


CLASSES = [
    # (name, keys, contenders: label -> opener)
    ("InMemoryCache (Python objects, as the original)", 5000, {
        "duckcache": lambda d: duckcache.InMemoryCache(),
        "original": lambda d: original.InMemoryCache(),
    }),
    ("NativeMemoryCache (values in the library) vs the original InMemoryCache", 5000, {
        "duckcache": lambda d: duckcache.NativeMemoryCache(),
        "original": lambda d: original.InMemoryCache(),
    }),
    ("PersistentFileCache", 3000, {
        "duckcache": lambda d: duckcache.PersistentFileCache(d),
        "original": lambda d: original.PersistentFileCache(d),
        "diskcache.Cache": lambda d: DiskcacheAdapter(d),
    }),
    ("DynamicFileCache", 3000, {
        "duckcache": lambda d: duckcache.DynamicFileCache(d),
        "original": lambda d: original.DynamicFileCache(d),
    }),
    ("EncryptedCache over PersistentFileCache", 3000, {
        "duckcache": lambda d: duckcache.encrypted.EncryptedCache(duckcache.PersistentFileCache(d), KEY),
        "original": lambda d: original_encrypted.EncryptedCache(original.PersistentFileCache(d), KEY),
    }),
    # More keys than the original keeps open (128), as in any cache of real size.
    ("KeyAsFolderCache", 300, {
        "duckcache": lambda d: duckcache.KeyAsFolderCache(d),
        "original": lambda d: original.KeyAsFolderCache(d),
    }),
]

OPS = ["open", "set", "get hit", "get hot", "get miss", "delete", "pop"]


def main():
    value = {"id": 7, "name": "duck", "payload": "x" * 1000}
    print(f"== Python level: µs per operation, median of {ROUNDS} rounds; value: a dict pickled to "
          f"~1 KiB; Python {sys.version.split()[0]}, diskcache {diskcache.__version__}")
    print("   ratio = original (or diskcache) time / duckcache time: how many times faster duckcache is")
    for name, n, contenders in CLASSES:
        figures = {label: median_workload(make, n, value) for label, make in contenders.items()}
        peers = [label for label in contenders if label != "duckcache"]
        print(f"\n  {name} ({n} keys)")
        header = f"    {'operation':<10}" + "".join(f"{label:>18}" for label in contenders)
        header += "".join(f"{'vs ' + p:>22}" for p in peers)
        print(header)
        for op in OPS:
            row = f"    {op:<10}" + "".join(f"{figures[label][op]:>15.1f} µs" for label in contenders)
            row += "".join(f"{figures[p][op] / figures['duckcache'][op]:>21.1f}x" for p in peers)
            print(row)
    version_two(value)
    redis_level(value)
    print("\n  targets: PersistentFileCache set >= 3x and get >= 2x faster than the original "
          "(get hot: the persistent classes' read cache, on by default); "
          "KeyAsFolderCache >= 100x faster than the original; EncryptedCache no slower than the original; "
          "InMemoryCache get and set within 1.1x of the original")


def version_two(value, n=3000):
    """add (absent and present keys), incr and get_many against python-diskcache's own
    add, incr and a loop of gets (it has no get_many), on a file store each."""
    print(f"\n  Version 2 calls: PersistentFileCache against diskcache.Cache ({n} keys; µs per key)")
    print(f"    {'operation':<30}{'duckcache':>15}{'diskcache.Cache':>20}{'ratio':>10}")
    rows = []
    for label, ours, theirs in [
        ("add (absent key)", lambda c, k: c.add(k, value), lambda c, k: c.add(k, value)),
        ("add (present key)", lambda c, k: c.add(k, value), lambda c, k: c.add(k, value)),
        ("incr", lambda c, k: c.incr(k + "#n"), lambda c, k: c.incr(k + "#n")),
    ]:
        rows.append((label, ours, theirs))
    figures = {}
    for side in ("duckcache", "diskcache"):
        runs = []
        for _ in range(ROUNDS):
            root = tempfile.mkdtemp(prefix="duckcache-pybench-v2-")
            try:
                cache = duckcache.PersistentFileCache(root) if side == "duckcache" else diskcache.Cache(root)
                keys = [f"key-{i:08d}" for i in range(n)]
                run = {}
                for label, ours, theirs in rows:
                    fn = ours if side == "duckcache" else theirs
                    run[label] = per_op_us(lambda k, fn=fn: fn(cache, k), keys)
                t = time.perf_counter()
                if side == "duckcache":
                    got = cache.get_many(keys)
                else:
                    got = {k: cache.get(k) for k in keys}
                run["get_many (or a loop of gets)"] = (time.perf_counter() - t) * 1e6 / n
                assert len(got) == n
                cache.close()
                runs.append(run)
            finally:
                shutil.rmtree(root, ignore_errors=True)
        figures[side] = {op: statistics.median(r[op] for r in runs) for op in runs[0]}
    for op in figures["duckcache"]:
        ours, theirs = figures["duckcache"][op], figures["diskcache"][op]
        print(f"    {op:<30}{ours:>12.1f} µs{theirs:>17.1f} µs{theirs / ours:>9.1f}x")
    print("    target: add faster than diskcache's add")


def redis_level(value, n=2000):
    """RedisCache against redis-py with pickle, as a user of redis-py would write it, on
    the same server (make bench starts one)."""
    url = os.environ.get("DUCKCACHE_REDIS_URL")
    if not url:
        print("\n  RedisCache: skipped (no DUCKCACHE_REDIS_URL; make bench starts a server)")
        return
    import pickle

    import redis as redis_py

    ours = duckcache.RedisCache(url, prefix=f"pybench-{os.getpid()}:")
    # redis-py spells a unix socket URL unix:///path?password=...
    peer_url = url.replace("redis+unix://", "unix://").replace("?pass=", "?password=").replace("&pass=", "&password=")
    peer = redis_py.Redis.from_url(peer_url)
    keys = [f"key-{i:08d}" for i in range(n)]
    prefix = f"pybench-peer-{os.getpid()}:"
    figures = {"duckcache": {}, "redis-py + pickle": {}}
    for _ in range(ROUNDS):
        run_ours = {
            "set": per_op_us(lambda k: ours.set(k, value), keys),
            "get": per_op_us(lambda k: ours.get(k), keys),
        }
        run_peer = {
            "set": per_op_us(lambda k: peer.set(prefix + k, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)), keys),
            "get": per_op_us(lambda k: pickle.loads(peer.get(prefix + k)), keys),
        }
        for op in run_ours:
            figures["duckcache"].setdefault(op, []).append(run_ours[op])
            figures["redis-py + pickle"].setdefault(op, []).append(run_peer[op])
    print(f"\n  RedisCache against redis-py with pickle ({n} keys; µs per operation; target: no slower)")
    for op in ("set", "get"):
        a = statistics.median(figures["duckcache"][op])
        b = statistics.median(figures["redis-py + pickle"][op])
        print(f"    {op:<10}{a:>12.1f} µs{b:>14.1f} µs   {b / a:.2f}x")
    ours.clear()
    ours.close()
    peer.delete(*[prefix + k for k in keys])


if __name__ == "__main__":
    main()
