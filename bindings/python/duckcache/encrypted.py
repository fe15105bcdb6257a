"""Encryption at rest with the original `duck.utils.caching.encrypted` API.

`EncryptedCache(backend, secret_key)` wraps any cache (one of duckcache's classes or any
other `CacheBase`): values are pickled, then sealed in NaCl's `crypto_secretbox` format
(XSalsa20-Poly1305: a random 24-byte nonce, the 16-byte tag, the ciphertext), exactly what
PyNaCl's `SecretBox.encrypt` produces, so data the original `EncryptedCache` stored with
the same key reads back here and the other way round. Sealing runs in the duckcache
library (RustCrypto's implementation): PyNaCl is not needed.

Keys, TTLs and which keys exist stay in the clear, as in the original. A value that fails
authentication (changed on disk, or sealed with another key) is evicted and reads as the
default; it is never returned.

Key rules, as the original documents them: a 32-byte key is used as is; a shorter one is
derived to 32 bytes with BLAKE2b; a longer one is refused unless the environment variable
`DUCK_NACL_DERIVE_KEY` is "1", then derived the same way. A `str` key (Duck passes its
`SECRET_KEY` setting) is taken as its UTF-8 bytes. (The original crashes on these paths:
it calls `.encode` on bytes and uses `hashlib` without importing it.)
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import pickle

# Absolute imports: an application that puts this package in place of the original
# (`sys.modules["duck.utils.caching"] = duckcache`, as a drop-in) imports this file as
# `duck.utils.caching.encrypted`; these must still be duckcache's own modules, not copies.
from duckcache import _native
from typing import Any, Union

from duckcache._base import CacheBase
from duckcache._codec import MISSING, Expiry, Key

# SecretBox nonce size (24 bytes), as PyNaCl's SecretBox.NONCE_SIZE.
NONCE_SIZE = 24

# NaCl SecretBox key size (32 bytes), as PyNaCl's SecretBox.KEY_SIZE.
NACL_KEY_SIZE = 32

# The environment variable that allows keys longer than 32 bytes (derived with BLAKE2b).
DUCK_NACL_DERIVE_KEY_ENV = "DUCK_NACL_DERIVE_KEY"


class CryptoError(_native.CorruptError):
    """A sealed value failed authentication: it was changed, or sealed with another key.
    (The counterpart of `nacl.exceptions.CryptoError`; a `duckcache.CorruptError`.)"""


def resolve_nacl_key(secret_key: Union[bytes, str]) -> bytes:
    """A 32-byte key from `secret_key` (bytes, or str taken as UTF-8).

    - exactly 32 bytes: returned as is;
    - fewer: derived to 32 bytes with BLAKE2b (stable: the same input always gives the
      same key, so earlier data stays readable);
    - more: ValueError, unless the environment variable DUCK_NACL_DERIVE_KEY is "1", in
      which case it is derived with BLAKE2b too.

    Raises ValueError for an empty key and TypeError for anything but bytes or str.
    """
    if isinstance(secret_key, str):
        secret_key = secret_key.encode("utf-8")
    if not isinstance(secret_key, (bytes, bytearray, memoryview)):
        raise TypeError(f"the secret key must be bytes or str, not {type(secret_key).__name__}")
    secret_key = bytes(secret_key)
    if not secret_key:
        raise ValueError("Secret key is empty. Please provide a non-empty secret key.")
    if len(secret_key) == NACL_KEY_SIZE:
        return secret_key
    if len(secret_key) > NACL_KEY_SIZE and os.environ.get(DUCK_NACL_DERIVE_KEY_ENV) != "1":
        raise ValueError(
            f"Secret key is {len(secret_key)} bytes but NaCl requires exactly "
            f"{NACL_KEY_SIZE}. Set the environment variable {DUCK_NACL_DERIVE_KEY_ENV}=1 to "
            f"allow automatic key derivation via BLAKE2b, or provide a key that is "
            f"{NACL_KEY_SIZE} bytes or fewer."
        )
    return hashlib.blake2b(secret_key, digest_size=NACL_KEY_SIZE).digest()


def generate_secret_key() -> bytes:
    """32 random bytes from the operating system's generator, for a new key. Store it in
    an environment variable or a secrets manager; never commit it."""
    return os.urandom(NACL_KEY_SIZE)


def _sealed_call(function, key, data):
    buf = _native.Buf()
    status = function(key, len(key), data, len(data), ctypes.byref(buf))
    if status == _native.CACHE_ERR_CORRUPT:
        raise CryptoError(status, _native.last_error())
    _native.check(status)
    try:
        return ctypes.string_at(buf.data, buf.len) if buf.len else b""
    finally:
        _native.lib.cache_buf_free(ctypes.byref(buf))


class NaClEncryptor:
    """Seals and opens values with one key (XSalsa20-Poly1305, PyNaCl's SecretBox format).

    Raises ValueError for a key that resolve_nacl_key refuses.
    """

    def __init__(self, secret_key: Union[bytes, str]):
        self.secret_key = resolve_nacl_key(secret_key)

    def seal(self, data: bytes) -> bytes:
        """nonce + tag + ciphertext of the bytes `data`, with a fresh random nonce."""
        return _sealed_call(_native.lib.cache_secretbox_seal, self.secret_key, bytes(data))

    def open(self, sealed: bytes) -> bytes:
        """The bytes sealed in `sealed`; CryptoError when it fails authentication."""
        return _sealed_call(_native.lib.cache_secretbox_open, self.secret_key, bytes(sealed))

    def encrypt(self, value: Any) -> bytes:
        """Pickles `value` and seals it (a fresh nonce each call)."""
        return self.seal(pickle.dumps(value))

    def decrypt(self, data: bytes) -> Any:
        """The value `encrypt` sealed in `data`; CryptoError when `data` was changed or
        sealed with another key (never bad data)."""
        return pickle.loads(self.open(data))


async def _call(backend, name, *args, **kwargs):
    """backend.async_<name>(...) when the backend has it, else <name> on a thread."""
    method = getattr(backend, "async_" + name, None)
    if method is not None:
        return await method(*args, **kwargs)
    return await asyncio.to_thread(getattr(backend, name), *args, **kwargs)


class EncryptedCache(CacheBase):
    """Transparent encryption around any cache backend: the backend only ever sees
    sealed bytes. Tampered or wrong-key entries are evicted and read as the default.

    Args:
        backend: the cache that stores the sealed values.
        secret_key: bytes or str; see resolve_nacl_key.
    """

    def __init__(self, backend: CacheBase, secret_key: Union[bytes, str]):
        self.backend = backend
        self.encryptor = NaClEncryptor(secret_key)

    def _open(self, raw):
        """(True, value) for a value that opens, (False, None) for one that does not."""
        try:
            return True, self.encryptor.decrypt(raw)
        except CryptoError:
            return False, None

    def _popped(self, key, raw, default):
        """What pop returns for the stored bytes `raw` it took (None: nothing there)."""
        if raw is not None:
            ok, value = self._open(raw)
            if ok:
                return value
        if default is MISSING:
            raise KeyError(key)
        return default

    def set(self, key: Key, value: Any, expiry: Expiry = None) -> None:
        """Seals `value` and stores it under `key` (expiry in seconds, None = never)."""
        self.backend.set(key, self.encryptor.encrypt(value), expiry)

    def get(self, key: Key, default: Any = None) -> Any:
        """The value of `key`, or `default` when absent, expired or failing
        authentication (then the entry is evicted)."""
        raw = self.backend.get(key)
        if raw is None:
            return default
        ok, value = self._open(raw)
        if not ok:
            self.backend.delete(key)
            return default
        return value

    def delete(self, key: Key) -> None:
        """Removes `key`; silent when absent."""
        self.backend.delete(key)

    def pop(self, key: Key, default: Any = MISSING) -> Any:
        """Removes `key` and returns its value; `default` (KeyError when not given) when
        absent or failing authentication (the entry is gone either way)."""
        return self._popped(key, self.backend.pop(key, default=None), default)

    def clear(self) -> None:
        """Removes every entry of the backend."""
        self.backend.clear()

    def save(self) -> None:
        self.backend.save()

    def close(self) -> None:
        """Closes the backend."""
        self.backend.close()

    async def async_set(self, key: Key, value: Any, expiry: Expiry = None) -> None:
        await _call(self.backend, "set", key, self.encryptor.encrypt(value), expiry)

    async def async_get(self, key: Key, default: Any = None) -> Any:
        raw = await _call(self.backend, "get", key)
        if raw is None:
            return default
        ok, value = self._open(raw)
        if not ok:
            await self.async_delete(key)
            return default
        return value

    async def async_pop(self, key: Key, default: Any = MISSING) -> Any:
        return self._popped(key, await _call(self.backend, "pop", key, default=None), default)

    async def async_delete(self, key: Key) -> None:
        await _call(self.backend, "delete", key)

    async def async_clear(self) -> None:
        await _call(self.backend, "clear")


__all__ = [
    "DUCK_NACL_DERIVE_KEY_ENV",
    "NACL_KEY_SIZE",
    "NONCE_SIZE",
    "CryptoError",
    "EncryptedCache",
    "NaClEncryptor",
    "generate_secret_key",
    "resolve_nacl_key",
]
