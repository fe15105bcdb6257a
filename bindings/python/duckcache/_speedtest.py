"""CacheSpeedTest: the original `duck.utils.caching` speed test (same shape: execute_all, print_summary,
compare_performance, results), timing this package's classes with a monotonic clock
in a fresh temporary directory instead of ./test."""

import random
import shutil
import string
import tempfile
import time

from ._caches import DynamicFileCache, KeyAsFolderCache, PersistentFileCache
from ._memory import InMemoryCache

OPERATIONS = ["create", "set", "get", "delete", "clear"]


class CacheSpeedTest:
    """Times create, set, get, delete and clear on each cache class, `repeat` times,
    and reports the mean time of each operation per class and the fastest class."""

    instances = [InMemoryCache, PersistentFileCache, DynamicFileCache, KeyAsFolderCache]

    def __init__(self, repeat=1, value_size=1024, directory=None):
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be a positive integer, not {repeat!r}")
        self.repeat = repeat
        self.value_size = value_size
        self.directory = directory
        self.key = self.generate_random_string(32)
        self.results = {}

    @staticmethod
    def generate_random_string(length):
        return "".join(random.choice(string.ascii_lowercase) for _ in range(length))

    @staticmethod
    def _open(cls, directory):
        return cls() if cls is InMemoryCache else cls(directory)

    @staticmethod
    def _timed(call):
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    def run_test(self, cls):
        """Times every operation of `cls` `repeat` times; stores the means in results."""
        totals = dict.fromkeys(OPERATIONS, 0.0)
        root = tempfile.mkdtemp(prefix="duckcache-speedtest-", dir=self.directory)
        try:
            data = self.generate_random_string(self.value_size)
            for _ in range(self.repeat):
                opened = []
                totals["create"] += self._timed(lambda: opened.append(self._open(cls, root)))
                cache = opened[0]
                totals["set"] += self._timed(lambda: cache.set(self.key, data))
                totals["get"] += self._timed(lambda: cache.get(self.key))
                totals["delete"] += self._timed(lambda: cache.delete(self.key))
                totals["clear"] += self._timed(cache.clear)
                cache.close()
                self.key = self.generate_random_string(32)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        self.results[cls.__name__] = {op: t / self.repeat for op, t in totals.items()}

    def execute_all(self):
        print("Running caching speed tests...")
        for cls in self.instances:
            self.run_test(cls)
        self.print_summary()
        self.compare_performance()

    def print_summary(self):
        print("\nOverall Performance Summary:")
        for name, result in self.results.items():
            print(f"\n[{name}]")
            for op in OPERATIONS:
                label = op.capitalize()
                print(f"{label:<7} for {self.repeat} item(s): {result[op]:.9f} seconds")

    def compare_performance(self):
        """Prints and returns the fastest class for each operation."""
        fastest = {}
        for op in OPERATIONS:
            name = min(self.results, key=lambda n: self.results[n][op])
            fastest[op] = (name, self.results[name][op])
        print("\nFastest Instances for Each Operation:")
        for op, (name, seconds) in fastest.items():
            print(f"{op.capitalize():<6}: {name} with {seconds:.6f} seconds")
        return fastest
