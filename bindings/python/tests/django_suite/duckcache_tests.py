"""Django's own BaseCacheTests (tests/cache/tests.py of the Django release installed)
on duckcache.django.DuckCache, one class per kind. test_django.py copies this module
into Django's tests/cache/ and runs it with Django's runtests.py.

The `cull` and `zero_cull` aliases are left out, as Django leaves them out for its
Redis backend: Django's culling (MAX_ENTRIES, CULL_FREQUENCY) is not the stores' own
bound (max_keys, size_limit), and those tests count what Django's algorithm keeps."""

import os
import tempfile

from django.test import TestCase, override_settings

from .tests import BaseCacheTests, caches_setting_for_tests

_ROOT = tempfile.mkdtemp(prefix="duckcache-django-")


def duck(location):
    return caches_setting_for_tests(
        base={"BACKEND": "duckcache.django.DuckCache"},
        exclude={"cull", "zero_cull"},
        LOCATION=location,
    )


@override_settings(CACHES=duck("memory:"))
class DuckMemoryCacheTests(BaseCacheTests, TestCase):
    pass


@override_settings(CACHES=duck("file:" + os.path.join(_ROOT, "file")))
class DuckFileCacheTests(BaseCacheTests, TestCase):
    pass


@override_settings(CACHES=duck(os.path.join(_ROOT, "plain-directory")))
class DuckDirectoryCacheTests(BaseCacheTests, TestCase):
    pass


@override_settings(CACHES=duck("sharded:" + os.path.join(_ROOT, "sharded")))
class DuckShardedCacheTests(BaseCacheTests, TestCase):
    pass


@override_settings(CACHES=duck("folder:" + os.path.join(_ROOT, "folder")))
class DuckFolderCacheTests(BaseCacheTests, TestCase):
    pass


if os.environ.get("DUCKCACHE_REDIS_URL"):

    # A prefix of its own: clear() removes every key under the store's prefix, and the
    # server is shared with the Python tests running beside this suite.
    _URL = os.environ["DUCKCACHE_REDIS_URL"]
    _URL += ("&" if "?" in _URL else "?") + f"prefix=django-suite-{os.getpid()}:"

    @override_settings(CACHES=duck(_URL))
    class DuckRedisCacheTests(BaseCacheTests, TestCase):
        pass
