"""Every method of every class, values of every kind, and bad input."""

import ctypes
import gc
import math
import os
import time

import pickle

import pytest

import duckcache
from duckcache import _native
from conftest import open_kind

VALUES = [
    b"",
    b"\x00\xffraw bytes",
    "text",
    "",
    0,
    -7,
    2**100,
    3.5,
    math.inf,
    None,
    True,
    [1, "two", 3.0],
    (1, 2),
    {"a": [1, {"b": None}]},
    {1, 2, 3},
    bytearray(b"ba"),
    b"x" * (100 << 10),
]


def test_set_get_has_delete_pop_clear(cache):
    assert cache.get("a") is None
    assert cache.get("a", "dflt") == "dflt"
    assert not cache.has("a") and "a" not in cache
    cache.set("a", 1)
    cache.set("a", 2)
    assert cache.get("a") == 2 and cache.has("a") and "a" in cache
    cache.set("b", "bee")
    assert len(cache) == 2
    cache.delete("b")
    cache.delete("b")
    assert cache.get("b") is None and len(cache) == 1
    assert cache.pop("a") == 2
    with pytest.raises(KeyError):
        cache.pop("a")
    assert cache.pop("a", None) is None
    assert cache.pop("a", 5) == 5
    cache.set("c", 3)
    cache.clear()
    assert len(cache) == 0 and cache.get("c") is None
    cache.save()
    stats = cache.stats()
    assert stats["sets"] == 4 and stats["entries"] == 0
    assert set(stats) == {"hits", "misses", "sets", "deletes", "evictions", "expirations", "entries", "bytes"}


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_values_round_trip_with_their_type(cache, value):
    cache.set("k", value)
    got = cache.get("k")
    assert got == value and type(got) is type(value)
    assert cache.pop("k") == value


def test_a_value_read_back_is_a_copy(cache):
    value = {"list": [1]}
    cache.set("k", value)
    got = cache.get("k")
    got["list"].append(2)
    assert cache.get("k") == {"list": [1]}


def test_str_and_bytes_keys_and_their_encoding(cache):
    cache.set("ключ\x00🦆", 1)
    assert cache.get("ключ\x00🦆") == 1
    assert cache.get("ключ\x00🦆".encode()) == 1, "a str key is its UTF-8 bytes"
    cache.set(b"\xff\xfe", 2)
    assert cache.get(b"\xff\xfe") == 2
    cache.set("", "empty key")
    assert cache.get("") == "empty key"
    long_key = "k" * 100_000
    cache.set(long_key, 3)
    assert cache.get(long_key) == 3 and cache.get(long_key[:-1]) is None


@pytest.mark.parametrize("bad", [1, 1.5, None, ("t",), object()], ids=repr)
def test_keys_of_other_types_raise_key_error(cache, bad):
    for call in (
        lambda: cache.set(bad, 1),
        lambda: cache.get(bad),
        lambda: cache.has(bad),
        lambda: cache.pop(bad),
    ):
        with pytest.raises(KeyError):
            call()
    # As in the original: removing a key no cache can hold does nothing.
    cache.delete(bad)
    assert cache.pop(bad, None) is None


def test_bytes_values_are_stored_byte_for_byte_for_c_readers(cache):
    """A C program reading the entry with plain cache_get sees exactly these bytes, and
    a value a C program stored with plain cache_set reads back as bytes."""
    cache.set("raw", b"\x00\x01 exact")
    cache.set("obj", {"x": 1})
    lib = _native.lib
    buf = _native.Buf()
    assert lib.cache_get(cache._handle, b"raw", 3, ctypes.byref(buf)) == 0
    assert ctypes.string_at(buf.data, buf.len) == b"\x00\x01 exact"
    lib.cache_buf_free(ctypes.byref(buf))
    flags = ctypes.c_uint32()
    assert lib.cache_get_flagged(cache._handle, b"obj", 3, ctypes.byref(buf), ctypes.byref(flags)) == 0
    assert flags.value == duckcache.FLAG_PICKLED
    lib.cache_buf_free(ctypes.byref(buf))
    assert lib.cache_set(cache._handle, b"fromc", 5, b"\x80\x05not a pickle", 14, -1.0) == 0
    assert cache.get("fromc") == b"\x80\x05not a pickle"
    assert lib.cache_set_flagged(cache._handle, b"own", 3, b"abc", 3, -1.0, 77) == 0
    assert cache.get("own") == b"abc", "flags the binding does not own read as bytes"


def test_expiry(cache):
    cache.set("short", 1, expiry=0.15)
    cache.set("now", 1, expiry=0)
    cache.set("past", 1, expiry=-5)
    cache.set("long", 1, expiry=3600)
    cache.set("never", 1, expiry=None)
    assert cache.get("short") == 1
    assert cache.get("now") is None and cache.get("past") is None
    time.sleep(0.3)
    assert cache.get("short") is None and not cache.has("short")
    assert cache.get("long") == 1 and cache.get("never") == 1
    cache.set("long", 2)
    assert cache.get("long") == 2, "a set replaces the expiry too"


@pytest.mark.parametrize("bad", ["10", [1], b"1"], ids=repr)
def test_expiry_of_the_wrong_type_is_a_type_error(cache, bad):
    with pytest.raises(TypeError):
        cache.set("k", 1, expiry=bad)


def test_nan_expiry_is_a_value_error(cache):
    with pytest.raises(ValueError):
        cache.set("k", 1, expiry=math.nan)
    cache.set("k", 1, expiry=math.inf)
    assert cache.get("k") == 1


def test_unpicklable_values_raise_and_store_nothing(cache):
    with pytest.raises(Exception):
        cache.set("k", lambda: 1)
    assert cache.get("k") is None


def test_after_close_every_call_raises_runtime_error(cache):
    cache.set("k", 1)
    cache.close()
    cache.close()
    assert cache.closed
    for call in (
        lambda: cache.set("k", 1),
        lambda: cache.get("k"),
        lambda: cache.has("k"),
        lambda: cache.delete("k"),
        lambda: cache.pop("k", None),
        cache.clear,
        cache.save,
        lambda: len(cache),
        cache.stats,
    ):
        with pytest.raises(RuntimeError) as info:
            call()
        assert isinstance(info.value, duckcache.ClosedError)
        assert info.value.status == _native.CACHE_ERR_CLOSED
        assert "closed" in str(info.value)


def test_context_manager_closes(kind, tmp_path):
    with open_kind(kind, tmp_path) as c:
        c.set("k", 1)
    with pytest.raises(RuntimeError):
        c.get("k")


def test_garbage_collection_frees_the_handle(persistent_kind, tmp_path):
    c = open_kind(persistent_kind, tmp_path)
    c.set("k", "kept")
    del c
    gc.collect()
    with open_kind(persistent_kind, tmp_path) as again:
        assert again.get("k") == "kept"


def test_persistent_kinds_keep_values_across_handles(persistent_kind, tmp_path):
    with open_kind(persistent_kind, tmp_path) as c:
        for i in range(50):
            c.set(f"k{i}", {"i": i})
        c.set("raw", b"bytes")
        c.save()
    with open_kind(persistent_kind, tmp_path) as c:
        assert [c.get(f"k{i}") for i in range(50)] == [{"i": i} for i in range(50)]
        assert c.get("raw") == b"bytes"
        assert len(c) == 51


def test_two_handles_see_each_other(persistent_kind, tmp_path):
    a = open_kind(persistent_kind, tmp_path)
    b = open_kind(persistent_kind, tmp_path)
    a.set("k", 1)
    assert b.get("k") == 1
    assert b.pop("k") == 1
    assert a.get("k") is None
    a.close()
    b.close()


@pytest.mark.parametrize("memory_class", [duckcache.InMemoryCache, duckcache.NativeMemoryCache])
def test_in_memory_lru_bound(memory_class):
    with memory_class(maxkeys=3) as c:
        for k in "abc":
            c.set(k, k)
        c.get("a")
        c.set("d", "d")
        assert c.get("b") is None, "the least recently used key goes first"
        assert [c.get(k) for k in "acd"] == ["a", "c", "d"]
        assert len(c) == 3 and c.maxkeys == 3
    assert memory_class(maxkeys=0).maxkeys == 0


def test_file_cache_size_bound_and_too_large(tmp_path):
    with duckcache.PersistentFileCache(str(tmp_path), cache_size=10_000) as c:
        for i in range(40):
            c.set(f"k{i}", b"x" * 1000)
        assert c.stats()["bytes"] <= 10_000 and c.get("k39") == b"x" * 1000
        with pytest.raises(duckcache.TooLargeError) as info:
            c.set("huge", b"x" * 20_000)
        assert isinstance(info.value, ValueError)
        assert info.value.status == _native.CACHE_ERR_TOO_LARGE
        assert "20" in info.value.detail


def test_sharded_cache_rolls_over(tmp_path):
    with duckcache.DynamicFileCache(str(tmp_path), cache_limit=5_000, cached_objs_limit=2) as c:
        for i in range(30):
            c.set(f"k{i}", b"y" * 1000)
        assert all(c.get(f"k{i}") == b"y" * 1000 for i in range(30))
    shards = [n for n in os.listdir(tmp_path) if n.startswith("shard-")]
    assert len(shards) >= 6


def test_folder_cache_keys_that_look_like_paths_stay_inside(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    with duckcache.KeyAsFolderCache(str(root)) as c:
        for key in ["../escape", "/etc/passwd", ".", "..", "a/b/c", "x" * 5000]:
            c.set(key, key)
            assert c.get(key) == key
    assert sorted(os.listdir(tmp_path)) == ["cache"]


@pytest.mark.parametrize(
    "make",
    [
        lambda d: duckcache.InMemoryCache(maxkeys=-1),
        lambda d: duckcache.InMemoryCache(maxkeys="3"),
        lambda d: duckcache.NativeMemoryCache(maxkeys=-1),
        lambda d: duckcache.NativeMemoryCache(maxkeys="3"),
        lambda d: duckcache.PersistentFileCache(str(d), cache_size=0),
        lambda d: duckcache.PersistentFileCache(str(d), cache_size=-1),
        lambda d: duckcache.DynamicFileCache(str(d), cache_limit=0),
        lambda d: duckcache.DynamicFileCache(str(d), cached_objs_limit=0),
        lambda d: duckcache.DynamicFileCache(str(d), cached_objs_limit=2**32),
        lambda d: duckcache.KeyAsFolderCache(str(d), cached_objs_limit=-3),
        lambda d: duckcache.KeyAsFolderCache(str(d), cached_objs_limit=1.5),
    ],
)
def test_bad_options_are_value_errors(tmp_path, make):
    with pytest.raises(ValueError):
        make(tmp_path)


def test_path_errors(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError):
        duckcache.PersistentFileCache(str(a_file))
    for cls in (duckcache.DynamicFileCache, duckcache.KeyAsFolderCache):
        with pytest.raises(FileNotFoundError):
            cls(str(tmp_path / "missing"))
        with pytest.raises(FileNotFoundError):
            cls(str(a_file))
    with duckcache.PersistentFileCache(str(tmp_path / "created" / "deep")) as c:
        c.set("k", 1)
    with pytest.raises(ValueError):
        duckcache.PersistentFileCache("")


def test_a_damaged_store_raises_with_status_and_detail(tmp_path):
    with duckcache.PersistentFileCache(str(tmp_path)) as c:
        c.set("k", 1)
    db = tmp_path / "cache.db"
    for leftover in ("cache.db-wal", "cache.db-shm"):
        (tmp_path / leftover).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(duckcache.CacheError) as info:
        duckcache.PersistentFileCache(str(tmp_path))
    assert info.value.status in (_native.CACHE_ERR_CORRUPT, _native.CACHE_ERR_IO)
    assert "cache.db" in info.value.detail


def test_a_damaged_pickle_raises_and_the_cache_stays_usable(cache):
    lib = _native.lib
    assert lib.cache_set_flagged(cache._handle, b"bad", 3, b"\x80\x05garbage", 9, -1.0, 1) == 0
    with pytest.raises(duckcache.ValueDecodeError) as info:
        cache.get("bad")
    assert info.value.data == b"\x80\x05garbage" and info.value.flags == 1
    assert isinstance(info.value, pickle.UnpicklingError)
    assert cache.has("bad")  # a get leaves it
    cache.set("good", 1)
    assert cache.get("good") == 1


def test_a_pop_that_cannot_unpickle_hands_over_the_stored_bytes(cache):
    """Its bytes travel in the exception, for the caller to inspect, and the entry is put
    back: a pop that raises must not lose the value."""
    unloadable = pickle.dumps(Unimportable())
    unloadable = unloadable.replace(b"Unimportable", b"Nonexistent_")
    lib = _native.lib
    assert lib.cache_set_flagged(cache._handle, b"gone", 4, unloadable, len(unloadable), -1.0, 1) == 0
    with pytest.raises(duckcache.ValueDecodeError) as info:
        cache.pop("gone")
    assert info.value.data == unloadable and info.value.flags == 1
    assert cache.has("gone"), "put back"


def test_library_facts():
    assert duckcache.version() == duckcache.__version__
    assert duckcache.library_path.name == "libduckcache.so"
    assert issubclass(duckcache.CacheIOError, OSError)
    assert issubclass(duckcache.ClosedError, RuntimeError)


class Unimportable:
    pass


class Nested:
    """Reads from the cache while being unpickled: the outer read must not be damaged."""

    cache = None

    def __init__(self, payload):
        self.payload = payload

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.inner = Nested.cache.get("inner")


def test_reads_of_every_size_and_nested_reads(cache):
    for size in (0, 1, 16 << 10, (16 << 10) + 1, 3 << 20):
        value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        cache.set(f"v{size}", value)
        assert cache.get(f"v{size}") == value
    assert cache.get("v1") == b"x", "a small read after a large one"
    Nested.cache = cache
    cache.set("inner", b"i" * 50_000)
    cache.set("outer", Nested("o" * 30_000))
    got = cache.get("outer")
    Nested.cache = None
    assert got.payload == "o" * 30_000 and got.inner == b"i" * 50_000


def test_every_cache_is_true_even_when_empty(cache):
    """Duck writes `cache_backend or DEFAULT`: an empty cache must not read as false."""
    cache.clear()
    assert len(cache) == 0
    assert bool(cache) is True


@pytest.mark.parametrize("memory_class", [duckcache.InMemoryCache, duckcache.NativeMemoryCache])
def test_has_is_a_peek(tmp_path, memory_class):
    """As the original InMemoryCache: has() does not make a key the most recent, so LRU
    evicts the same key as the original does."""
    c = memory_class(maxkeys=2)
    c.set("a", 1)
    c.set("b", 2)
    assert c.has("a")
    c.set("c", 3)  # evicts a, the least recently used, whatever has() asked
    assert not c.has("a")
    assert c.get("b") == 2 and c.get("c") == 3


def test_public_signatures_are_annotated_and_the_package_is_typed():
    import importlib.resources
    import inspect

    from duckcache import encrypted

    assert importlib.resources.files("duckcache").joinpath("py.typed").is_file()
    classes = [
        duckcache.InMemoryCache,
        duckcache.NativeMemoryCache,
        duckcache.PersistentFileCache,
        duckcache.DynamicFileCache,
        duckcache.KeyAsFolderCache,
        encrypted.EncryptedCache,
        encrypted.NaClEncryptor,
    ]
    names = ["set", "get", "delete", "pop", "clear", "has", "async_set", "async_get",
             "async_pop", "async_delete", "async_clear", "encrypt", "decrypt", "__init__"]
    checked = 0
    for cls in classes:
        for name in names:
            method = getattr(cls, name, None)
            if method is None or method is getattr(object, name, None):
                continue
            signature = inspect.signature(method)
            for parameter in list(signature.parameters.values())[1:]:
                if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                    continue
                assert parameter.annotation is not parameter.empty, f"{cls.__name__}.{name}({parameter.name})"
            if name != "__init__":
                assert signature.return_annotation is not signature.empty, f"{cls.__name__}.{name}"
            checked += 1
    assert checked > 40
    for fn in (encrypted.resolve_nacl_key, encrypted.generate_secret_key):
        assert inspect.signature(fn).return_annotation is not inspect.Signature.empty


def test_folder_and_shard_paths_as_the_original_names_them(tmp_path):
    folder_dir = tmp_path / "folder"
    folder_dir.mkdir()
    c = duckcache.KeyAsFolderCache(str(folder_dir))
    keys = ["user:42", "", ".hidden", "ключ", b"\x00\xff", "x" * 150, "long:" + "é" * 150]
    for k in keys:
        c.set(k, 1)
        assert os.path.isdir(c.get_key_dir(k)), k  # the same folder the library made
    assert os.path.basename(c.get_key_dir("user:42")) == "user%3A42"
    assert os.path.basename(c.get_key_dir("long:" + "é" * 150)).startswith("%%")
    c.set("short-lived", 1, expiry=0.2)
    assert len(c.live_key_dirs()) == len(keys) + 1
    time.sleep(0.3)
    live = c.live_key_dirs()
    assert len(live) == len(keys) and all(p.is_dir() for p in live)
    c.close()
    with pytest.raises(RuntimeError):  # closed, as every other call (was a path)
        c.get_key_dir("user:42")

    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    d = duckcache.DynamicFileCache(str(shard_dir), cache_limit=4000)
    assert d.shard_paths == [] or len(d.shard_paths) == 1
    for i in range(10):
        d.set(f"k{i}", b"x" * 1000)
    d.reload_shard_paths()
    names = [p.name for p in d.shard_paths]
    assert len(names) >= 3 and names == sorted(names) and all(n.startswith("shard-") for n in names)
    d.close()


def test_copies_share_the_store_and_never_free_it_under_each_other(cache):
    """copy.copy and copy.deepcopy give another object on the same store; dropping one
    must not free the handle the other uses (it did: SIGSEGV on the next call)."""
    import copy
    import gc
    import pickle

    cache.set("a", 1)
    twin = copy.copy(cache)
    deep = copy.deepcopy(cache)
    twin.set("b", 2)
    assert cache.get("b") == 2 and deep.get("a") == 1
    del twin, deep
    gc.collect()
    assert cache.get("a") == 1
    cache.set("c", 3)
    assert cache.get("c") == 3
    with pytest.raises(TypeError):
        pickle.dumps(cache)


class Vanishing:
    """Pickled by a test, then removed from this module, as a class renamed between
    deployments: its stored pickles no longer load."""


def test_a_value_that_no_longer_unpickles_raises_its_own_type_and_stays(cache):
    global Vanishing
    cache.set("obj", Vanishing())
    cls = Vanishing
    del Vanishing
    try:
        with pytest.raises(AttributeError) as raised:  # as the original let through
            cache.get("obj")
        assert isinstance(raised.value, duckcache.ValueDecodeError)
        assert raised.value.data and raised.value.flags
        with pytest.raises(AttributeError):
            cache.pop("obj")
        assert cache.has("obj"), "the pop put the value back"
    finally:
        Vanishing = cls
    assert isinstance(cache.pop("obj"), Vanishing)


def test_drop_in_details_of_the_original(cache, tmp_path):
    """Where the original let calls through, these classes do too: a str subclass (a str
    Enum) is a key by its text, delete and pop of a key no cache holds are silent."""
    import enum

    class Colour(str, enum.Enum):
        RED = "red"

    cache.set(Colour.RED, 1)
    assert cache.get("red") == 1 and cache.get(Colour.RED) == 1
    cache.delete(5)
    assert cache.pop(5, None) is None
    with pytest.raises(KeyError):
        cache.pop(5)


def test_float_sizes_are_taken_as_the_original_took_them(tmp_path):
    c = duckcache.PersistentFileCache(str(tmp_path / "p"), cache_size=1e6)
    assert c.cache_size == 1_000_000
    c.close()
    (tmp_path / "d").mkdir()
    d = duckcache.DynamicFileCache(str(tmp_path / "d"), cache_limit=1e6, cached_objs_limit=8.0)
    assert (d.cache_limit, d.cached_objs_limit) == (1_000_000, 8)
    d.close()
    with pytest.raises(ValueError):
        duckcache.PersistentFileCache(str(tmp_path / "q"), cache_size=float("nan"))


def test_the_decorator_recurses_as_deep_as_the_original(cache):
    import sys

    @cache.cache()
    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)

    # The original reached 494 levels under the default limit of 1000; going through
    # get_or_set stopped at 165.
    assert sys.getrecursionlimit() >= 1000
    assert depth(400) == 400


def test_the_decorator_on_a_subclass_whose_get_takes_no_default():
    """A CacheBase subclass written for the original (get(key) alone, None = absent)."""
    from duckcache import CacheBase

    class Plain(CacheBase):
        def __init__(self):
            self.d = {}

        def get(self, key):
            return self.d.get(key)

        def set(self, key, value, expiry=None):
            self.d[key] = value

    c = Plain()
    calls = []

    @c.cache()
    def f(x):
        calls.append(x)
        return x * 2

    assert f(2) == 4 and f(2) == 4 and calls == [2]
