"""Hit ratios of duckcache's memory cache (LRU and S3-FIFO, through the C ABI) against
libCacheSim's LRU and S3FIFO (the simulator of the S3-FIFO paper, from PyPI) on the same
traces: Zipf 0.6, 0.8, 1.0, 1.2 over 20,000 objects at 0.1%, 1% and 10% of them, and a
Zipf 1.0 trace with a one-pass scan mixed in. Every request is a get, and a miss is
followed by a set (libCacheSim's get does both). Run by `make bench`:

    python benches/hit_ratio.py [--objects N] [--requests N]
"""

import argparse
import sys

import numpy as np

import duckcache

try:
    import libcachesim
except ImportError:
    sys.exit("hit_ratio.py needs libcachesim (pip install libcachesim); make bench installs it")


def zipf_trace(objects, requests, alpha, rng):
    weights = 1.0 / np.arange(1, objects + 1) ** alpha
    ids = rng.choice(objects, size=requests, p=weights / weights.sum())
    return rng.permutation(objects)[ids]  # hot objects not numbered in order


def scan_trace(objects, requests, rng):
    """Zipf 1.0 with a one-pass scan in the middle third: every other request there is
    an object never requested before or after."""
    trace = zipf_trace(objects, requests, 1.0, rng)
    third = requests // 3
    middle = trace[third : 2 * third].copy()
    middle[::2] = objects + np.arange(len(middle[::2]))  # new ids, each requested once
    trace[third : 2 * third] = middle
    return trace


def duckcache_hits(trace, size, policy):
    cache = duckcache.NativeMemoryCache(maxkeys=size, policy=policy)
    hits = 0
    get, set_ = cache.get, cache.set
    for obj in trace.tolist():
        key = str(obj)
        if get(key) is not None:
            hits += 1
        else:
            set_(key, b"")
    cache.close()
    return hits / len(trace)


def libcachesim_hits(trace, size, algorithm):
    cache = algorithm(cache_size=size)
    req = libcachesim.Request()
    req.obj_size = 1
    hits = 0
    for obj in trace.tolist():
        req.obj_id = obj
        hits += cache.get(req)
    return hits / len(trace)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    traces = [(f"zipf {a}", zipf_trace(args.objects, args.requests, a, rng)) for a in (0.6, 0.8, 1.0, 1.2)]
    traces.append(("zipf 1.0 + scan", scan_trace(args.objects, args.requests, rng)))
    print(
        f"hit ratio, {args.objects} objects, {args.requests} requests, libcachesim "
        f"{libcachesim.__version__}; columns: duckcache lru, libCacheSim LRU, duckcache "
        "s3fifo, libCacheSim S3FIFO, s3fifo minus S3FIFO (points)"
    )
    print(f"  {'trace':<16}{'size':>7}{'lru':>8}{'LRU':>8}{'s3fifo':>8}{'S3FIFO':>8}{'diff':>7}")
    worst = 0.0
    for name, trace in traces:
        for share in (0.001, 0.01, 0.1):
            size = max(1, int(args.objects * share))
            ours_lru = duckcache_hits(trace, size, "lru")
            ref_lru = libcachesim_hits(trace, size, libcachesim.LRU)
            ours_s3 = duckcache_hits(trace, size, "s3fifo")
            ref_s3 = libcachesim_hits(trace, size, libcachesim.S3FIFO)
            diff = 100 * (ours_s3 - ref_s3)
            worst = max(worst, abs(diff))
            print(
                f"  {name:<16}{f'{share:.1%}':>7}{ours_lru:8.2%}{ref_lru:8.2%}"
                f"{ours_s3:8.2%}{ref_s3:8.2%}{diff:+7.2f}"
            )
    print(f"  largest |s3fifo - S3FIFO|: {worst:.2f} points (target: at most 1)")


if __name__ == "__main__":
    main()
