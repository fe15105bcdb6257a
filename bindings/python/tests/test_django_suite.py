"""Django's own cache tests (BaseCacheTests, from the tests/ of the Django release
installed, taken from its source distribution on PyPI and kept under build/) on
duckcache.django.DuckCache: memory, file, a plain directory, sharded, folder, and Redis
when make test provides a server. See django_suite/duckcache_tests.py."""

import atexit
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

django = pytest.importorskip("django")

REPO = Path(__file__).resolve().parents[3]
SUITE = Path(__file__).resolve().parent / "django_suite" / "duckcache_tests.py"


def django_tests_dir():
    """Django's tests/ folder for the installed version, fetched once."""
    version = django.__version__
    root = REPO / "build" / "django-tests" / version
    tests = root / f"django-{version}" / "tests"
    if (tests / "runtests.py").exists():
        return tests
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--no-deps", "--no-binary", ":all:", f"django=={version}", "-d", str(root)],
        check=True, timeout=300,
    )
    with tarfile.open(root / f"django-{version}.tar.gz") as sdist:
        members = [m for m in sdist.getmembers() if m.name.startswith(f"django-{version}/tests/")]
        sdist.extractall(root, members=members, filter="data")
    return tests


def _start_suite():
    """Django's suite on every kind, started when pytest collects this module: it spends
    most of its half minute sleeping in its expiry tests, so it runs beside the rest of
    the Python tests rather than after them. Four workers."""
    tests = django_tests_dir()
    shutil.copy(SUITE, tests / "cache" / "duckcache_tests.py")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONMALLOC")}
    return subprocess.Popen(
        [sys.executable, "runtests.py", "cache.duckcache_tests", "--parallel", "4", "-v", "2"],
        cwd=tests, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


_suite = _start_suite()
# Not waited for (the test deselected): stopped with pytest.
atexit.register(lambda: _suite.poll() is None and _suite.kill())


def test_djangos_cache_tests_pass_on_every_kind():
    try:
        output, _ = _suite.communicate(timeout=900)
    finally:
        if _suite.poll() is None:
            _suite.kill()
    assert _suite.returncode == 0, output[-6000:]
    ran = int(re.search(r"Ran (\d+) tests", output).group(1))
    kinds = 6 if os.environ.get("DUCKCACHE_REDIS_URL") else 5
    assert ran >= 50 * kinds, output[-3000:]  # 54 a kind in Django 5.2
    print(f"Django {django.__version__}'s BaseCacheTests: {ran} tests on {kinds} kinds, passed")
