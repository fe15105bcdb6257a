"""duckcache.encrypted: the original module's API, PyNaCl's format both ways, and the
original EncryptedCache (duckframework 2.3.2) on the same stored bytes."""

import asyncio
import hashlib
import os
import pickle
import sys

import pytest

import duckcache
from duckcache import _original, encrypted
from duckcache.encrypted import (
    DUCK_NACL_DERIVE_KEY_ENV,
    NACL_KEY_SIZE,
    NONCE_SIZE,
    CryptoError,
    EncryptedCache,
    NaClEncryptor,
    generate_secret_key,
    resolve_nacl_key,
)

from conftest import open_kind


def _skip_under_asan():
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        # PyNaCl's cffi module keeps objects alive past exit, which LeakSanitizer
        # reports as Python's leaks; the plain and valgrind runs check the format.
        pytest.skip("PyNaCl (cffi) under AddressSanitizer")


@pytest.fixture(scope="module")
def nacl_secret():
    _skip_under_asan()
    return pytest.importorskip("nacl.secret")


def load_original():
    """The original caching module and its encrypted submodule (duckframework 2.3.2)."""
    if _original.caching_dir() is None:
        pytest.skip("duckframework is not installed")
    return _original.load_caching(), _original.load_encrypted()


@pytest.fixture(scope="module")
def originals():
    """(the original caching module, its encrypted module); it imports PyNaCl."""
    _skip_under_asan()
    pytest.importorskip("nacl.secret")
    return load_original()

KEY = b"0123456789abcdef0123456789abcdef"
VALUE = {"user_id": 42, "marker": "PLAINTEXT-MARKER", "list": [1, 2.5, None]}


def test_constants_match_the_original_and_pynacl(nacl_secret, originals):
    original = originals[1]
    assert NONCE_SIZE == original.NONCE_SIZE == nacl_secret.SecretBox.NONCE_SIZE == 24
    assert NACL_KEY_SIZE == original.NACL_KEY_SIZE == nacl_secret.SecretBox.KEY_SIZE == 32
    assert DUCK_NACL_DERIVE_KEY_ENV == original.DUCK_NACL_DERIVE_KEY_ENV


def test_values_sealed_here_open_with_pynacl_and_the_other_way(nacl_secret):
    ours = NaClEncryptor(KEY)
    box = nacl_secret.SecretBox(KEY)
    sealed = ours.encrypt(VALUE)
    assert len(sealed) == NONCE_SIZE + 16 + len(pickle.dumps(VALUE))
    assert pickle.loads(box.decrypt(sealed)) == VALUE
    assert ours.decrypt(bytes(box.encrypt(pickle.dumps(VALUE)))) == VALUE
    assert ours.open(bytes(box.encrypt(b""))) == b""


def test_the_original_encrypted_cache_and_ours_share_stored_bytes(originals):
    original_caching, original = originals
    # The original crashes on a bytes key (it calls .encode on bytes); Duck passes its
    # SECRET_KEY setting, a str, which works when it is 32 characters long.
    backend = original_caching.InMemoryCache()
    with pytest.raises(AttributeError):
        original.EncryptedCache(backend, KEY)
    theirs = original.EncryptedCache(backend, KEY.decode())
    ours = EncryptedCache(backend, KEY.decode())
    theirs.set("written by the original", VALUE)
    assert ours.get("written by the original") == VALUE
    ours.set("written by duckcache", VALUE)
    assert theirs.get("written by duckcache") == VALUE
    assert ours.pop("written by the original") == VALUE
    assert theirs.get("written by the original") is None


def test_every_kind_round_trips_and_stores_only_sealed_bytes(kind, tmp_path):
    raw = open_kind(kind, tmp_path)
    cache = EncryptedCache(raw, KEY)
    cache.set("k", VALUE)
    assert cache.get("k") == VALUE
    stored = raw.get("k")
    assert isinstance(stored, bytes) and b"PLAINTEXT-MARKER" not in stored
    assert NaClEncryptor(KEY).open(stored) == pickle.dumps(VALUE)
    cache.set("bytes", b"\x00raw bytes")
    assert cache.get("bytes") == b"\x00raw bytes"
    assert cache.pop("bytes") == b"\x00raw bytes"
    with pytest.raises(KeyError):
        cache.pop("bytes")
    assert cache.pop("bytes", "default") == "default"
    cache.delete("k")
    assert cache.get("k", "gone") == "gone"
    cache.set("a", 1)
    cache.clear()
    assert cache.get("a") is None
    cache.close()


def test_tampered_and_wrong_key_entries_read_as_the_default_and_are_evicted(kind, tmp_path):
    raw = open_kind(kind, tmp_path)
    cache = EncryptedCache(raw, KEY)
    cache.set("k", VALUE)
    stored = bytearray(raw.get("k"))
    stored[-1] ^= 1
    raw.set("k", bytes(stored))
    assert cache.get("k", "default") == "default"
    assert raw.get("k") is None, "evicted"
    cache.set("k", VALUE)
    other = EncryptedCache(raw, b"another key")
    assert other.get("k") is None
    assert raw.get("k") is None
    cache.set("k", VALUE)
    assert other.pop("k", "default") == "default"
    assert raw.get("k") is None
    raw.set("never sealed", b"plain")
    assert cache.get("never sealed") is None


def test_async_forms(cache):
    sealed = EncryptedCache(cache, KEY)

    async def main():
        await sealed.async_set("k", VALUE)
        assert await sealed.async_get("k") == VALUE
        assert await sealed.async_pop("k") == VALUE
        with pytest.raises(KeyError):
            await sealed.async_pop("k")
        await sealed.async_set("k", 1)
        await sealed.async_delete("k")
        assert await sealed.async_get("k", "d") == "d"
        await sealed.async_set("k", 1)
        await sealed.async_clear()
        assert await sealed.async_get("k") is None

    asyncio.run(main())


def test_async_forms_over_a_cache_without_them():
    from conftest import DictCache

    sealed = EncryptedCache(DictCache(), KEY)

    async def main():
        await sealed.async_set("k", VALUE)
        assert await sealed.async_get("k") == VALUE
        assert await sealed.async_pop("k") == VALUE

    asyncio.run(main())


def test_key_rules(monkeypatch):
    assert resolve_nacl_key(KEY) == KEY
    assert resolve_nacl_key(KEY.decode()) == KEY
    short = b"short key"
    assert resolve_nacl_key(short) == hashlib.blake2b(short, digest_size=32).digest()
    assert resolve_nacl_key("short key") == resolve_nacl_key(short)
    long = b"k" * 64
    monkeypatch.delenv(DUCK_NACL_DERIVE_KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=DUCK_NACL_DERIVE_KEY_ENV):
        resolve_nacl_key(long)
    monkeypatch.setenv(DUCK_NACL_DERIVE_KEY_ENV, "1")
    assert resolve_nacl_key(long) == hashlib.blake2b(long, digest_size=32).digest()
    with pytest.raises(ValueError):
        resolve_nacl_key(b"")
    with pytest.raises(TypeError):
        resolve_nacl_key(12345)
    key = generate_secret_key()
    assert isinstance(key, bytes) and len(key) == 32 and key != generate_secret_key()


def test_a_derived_key_is_the_one_pynacl_users_derive(nacl_secret):
    short = b"short key"
    sealed = NaClEncryptor(short).seal(b"x")
    assert nacl_secret.SecretBox(hashlib.blake2b(short, digest_size=32).digest()).decrypt(sealed) == b"x"


def test_open_refuses_damage_with_crypto_error():
    box = NaClEncryptor(KEY)
    sealed = bytearray(box.seal(b"payload"))
    sealed[NONCE_SIZE] ^= 0x40
    with pytest.raises(CryptoError) as info:
        box.open(bytes(sealed))
    assert "authentication failed" in info.value.detail
    assert isinstance(info.value, duckcache.CorruptError)
    with pytest.raises(CryptoError):
        box.open(b"too short")
    assert encrypted.__all__


def test_duck_finds_it_where_it_imports_the_original(tmp_path):
    """Duck's session connector does `from duck.utils.caching.encrypted import
    EncryptedCache`; with duckcache in place of duck.utils.caching that is this module,
    sharing duckcache's classes (checked in a child: importing duck patches threading)."""
    import subprocess

    script = f"""
import sys
import duckcache
sys.modules["duck.utils.caching"] = duckcache
from duck.utils.caching.encrypted import EncryptedCache, CryptoError
assert issubclass(CryptoError, duckcache.CorruptError)
cache = EncryptedCache(duckcache.KeyAsFolderCache({str(tmp_path)!r}), "s" * 32)
cache.set("sid", {{"user": 1}})
assert cache.get("sid") == {{"user": 1}}
print("ok")
"""
    env = dict(os.environ)
    if "libasan" in env.get("LD_PRELOAD", ""):
        del env["LD_PRELOAD"]  # Duck's dependencies keep memory past exit (see test_inmemory)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
