"""Django cache backends, same workload, same run: duckcache.django.DuckCache on the file
kind against python-diskcache's DjangoCache (SQLite too), and on the Redis kind against
Django's own RedisCache (redis-py) on the same server (make bench starts one). Prints
microseconds per operation and ratios (peer time / ours: how many times faster
duckcache is). Targets: >= 2x diskcache's DjangoCache on get and set, >= 1.2x Django's
RedisCache. Run by `make bench`."""

import os
import random
import shutil
import statistics
import tempfile
import time

import django
from django.conf import settings

settings.configure(USE_TZ=True)
django.setup()

from django.core.cache.backends.redis import RedisCache  # noqa: E402
from diskcache import DjangoCache  # noqa: E402

from duckcache.django import DuckCache  # noqa: E402

ROUNDS = 5
N = 2000
VALUE = {"user": 42, "name": "a session", "items": list(range(20))}


def per_op_us(fn, items):
    t = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - t) / len(items) * 1e6


def hot_order(keys):
    rng = random.Random(99)
    weights = [1 / (rank + 1) ** 0.99 for rank in range(len(keys))]
    return rng.choices(keys, weights=weights, k=5 * len(keys))


def workload(cache):
    keys = [f"key-{i:06d}" for i in range(N)]
    batches = [keys[i:i + 100] for i in range(0, N, 100)]
    cache.clear()
    result = {
        "set": per_op_us(lambda k: cache.set(k, VALUE, 300), keys),
        "get": per_op_us(cache.get, keys),
        # A web cache's reads: hot keys again and again (Zipf 0.99), 5 gets a key.
        "get hot": per_op_us(cache.get, hot_order(keys)),
        "get miss": per_op_us(lambda k: cache.get(k + "-absent"), keys),
        "get_many (per key)": per_op_us(cache.get_many, batches) / 100,
        "incr": 0.0,
    }
    cache.set("counter", 0)
    result["incr"] = per_op_us(lambda _: cache.incr("counter"), keys)
    assert cache.get("counter") == N
    return result


def compare(title, ours, peer, peer_name):
    runs = {"duckcache": [], peer_name: []}
    for _ in range(ROUNDS):
        runs["duckcache"].append(workload(ours))
        runs[peer_name].append(workload(peer))
    print(f"\n  {title} ({N} keys; µs per operation, median of {ROUNDS} rounds)")
    print(f"    {'operation':<22}{'duckcache':>12}{peer_name:>26}{'ratio':>9}")
    for op in runs["duckcache"][0]:
        a = statistics.median(r[op] for r in runs["duckcache"])
        b = statistics.median(r[op] for r in runs[peer_name])
        print(f"    {op:<22}{a:>9.1f} µs{b:>23.1f} µs{b / a:>8.1f}x")


def main():
    print("== Django cache backends (duckcache.django.DuckCache against peers, same run)")
    root = tempfile.mkdtemp(prefix="duckcache-djbench-")
    try:
        ours = DuckCache(f"file:{root}/duck", {})
        peer = DjangoCache(f"{root}/diskcache", {})
        compare("file kind against diskcache.DjangoCache; target >= 2x on get and set",
                ours, peer, "diskcache.DjangoCache")
        peer.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    url = os.environ.get("DUCKCACHE_REDIS_URL")
    if not url:
        print("\n  Redis: skipped (no DUCKCACHE_REDIS_URL; make bench starts a server)")
        return
    # redis-py spells a unix socket URL unix:///path?password=...
    peer_url = url.replace("redis+unix://", "unix://").replace("?pass=", "?password=")
    ours = DuckCache(url, {"KEY_PREFIX": f"djbench-ours-{os.getpid()}"})
    peer = RedisCache(peer_url, {"KEY_PREFIX": f"djbench-peer-{os.getpid()}"})
    compare("Redis kind against Django's RedisCache; target >= 1.2x", ours, peer, "django RedisCache")


if __name__ == "__main__":
    main()
