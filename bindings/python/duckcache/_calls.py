"""How a Python call crosses into the library and back: the per-thread read buffer of
get, key slices, the compute function of get_or_set, library buffers, and the completions
of the async calls (delivered to the awaiting event loop)."""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import threading
from ctypes import byref, c_uint32, c_uint64, c_void_p

from . import _native as native
from ._codec import _decode_value, _encode_value
from ._native import lib

# The values a get reads land in a buffer of the reading thread, reused from call to
# call: one C call and no allocation per get (cache_get_into_flagged).
_READ_BUFFER_KEPT = 1 << 20  # a larger value is read straight into its bytes object


class _ReadBuffer(threading.local):
    def __init__(self):
        self.length = ctypes.c_size_t()
        self.flags = c_uint32()
        self.length_at = ctypes.addressof(self.length)
        self.flags_at = ctypes.addressof(self.flags)
        self.use(ctypes.create_string_buffer(16 << 10))

    def use(self, buf):
        self.buf = buf  # keeps the memory alive
        self.at = ctypes.addressof(buf)
        self.cap = len(buf)
        self.view = memoryview(buf).cast("B")


_reader = _ReadBuffer()
_get_into = lib.cache_get_into_flagged


def _read_value(handle, k, missing, decode=_decode_value):
    """The value under the encoded key `k` (decoded by `decode(data, flags)`), or
    `missing`."""
    r = _reader
    status = _get_into(handle, k, len(k), r.at, r.cap, r.length_at, r.flags_at)
    while True:
        if status == 0:
            # Copied out before unpickling: a nested get (from a __setstate__) reuses
            # the buffer.
            data = r.view[: r.length.value].tobytes()
            return decode(data, r.flags.value)
        if status == 1:
            return missing
        if status != native.CACHE_ERR_BUFFER_TOO_SMALL:
            raise native.error_for(status)
        needed = r.length.value
        if needed > _READ_BUFFER_KEPT:
            return _read_large_value(handle, k, missing, needed, decode)
        # Larger than the buffer: grow it and ask again (the value may change meanwhile).
        r.use(ctypes.create_string_buffer(needed))
        status = _get_into(handle, k, len(k), r.at, r.cap, r.length_at, r.flags_at)


# A bytes object of a given size whose bytes are still to be written: the library reads
# a large value straight into the object returned, so a 200 MB value costs 200 MB, not
# a buffer and then a copy (issue 30 item 17).
_uninitialised_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_uninitialised_bytes.restype = ctypes.py_object
_uninitialised_bytes.argtypes = (c_void_p, ctypes.c_ssize_t)


def _read_large_value(handle, k, missing, size, decode):
    r = _reader
    while True:
        # Nothing else holds `data` yet, so writing into it is safe.
        data = _uninitialised_bytes(None, size)
        status = _get_into(handle, k, len(k), _address(data), size, r.length_at, r.flags_at)
        if status == 0:
            length = r.length.value
            if length != size:  # replaced by a smaller value meanwhile
                data = data[:length]
            return decode(data, r.flags.value)
        if status == 1:
            return missing
        if status != native.CACHE_ERR_BUFFER_TOO_SMALL:
            raise native.error_for(status)
        size = r.length.value  # replaced by a larger value meanwhile


def _address(data: bytes) -> int:
    """The address of a bytes object's own buffer (valid while it lives)."""
    return ctypes.cast(ctypes.c_char_p(data), c_void_p).value or 0


def _slices(encoded):
    """A cache_slice array over encoded keys (which the caller keeps alive)."""
    array = (native.Slice * len(encoded))()
    for i, k in enumerate(encoded):
        array[i].data = _address(k)
        array[i].len = len(k)
    return array



def _read_many(handle, encoded, decode=_decode_value):
    """[(index, value)] for the encoded keys found, read in one call (one transaction on
    the persistent kinds). Every buffer is freed; the first value that cannot be
    decoded is raised after."""
    n = len(encoded)
    bufs = (native.Buf * n)()
    statuses = (ctypes.c_int32 * n)()
    flags = (c_uint32 * n)()
    native.check(lib.cache_get_many(handle, _slices(encoded), n, bufs, statuses, flags))
    found = []
    error = None
    for i in range(n):
        if statuses[i] != native.CACHE_OK:
            continue
        data = _buf_bytes(bufs[i])  # frees every buffer, even after a failure
        try:
            found.append((i, decode(data, flags[i])))
        except Exception as e:
            error = error or e
    if error is not None:
        raise error
    return found


def _entries(items, ttl):
    """A cache_entry array over the encoded `items` [(key, data, flags)] (which the
    caller keeps alive), each with the C `ttl`."""
    entries = (native.Entry * len(items))()
    for i, (k, data, flags) in enumerate(items):
        entries[i].key.data, entries[i].key.len = _address(k), len(k)
        entries[i].value.data, entries[i].value.len = _address(data), len(data)
        entries[i].ttl_seconds = ttl
        entries[i].flags = flags
    return entries


def _delete_many(handle, encoded):
    """Removes the encoded keys in one call; how many were live."""
    deleted = c_uint64()
    native.check(lib.cache_delete_many(handle, _slices(encoded), len(encoded), byref(deleted)))
    return deleted.value


def _write_many(handle, items, ttl):
    """Stores the encoded `items` [(key, data, flags)] with the C `ttl`, all or nothing
    (one transaction on the persistent kinds)."""
    native.check(lib.cache_set_many(handle, _entries(items, ttl), len(items)))


def _compute_function(compute, ttl, raised):
    """The C compute function of get_or_set: stores what `compute()` returns (encoded as
    set does) with `ttl`; an exception goes to `raised` (for the caller) and the library
    gets CACHE_ERR_INTERNAL, so nothing is stored. Keep it alive while the call runs."""

    def run(_user, _key, _len, sink):
        try:
            data, flags = _encode_value(compute())
            return lib.cache_sink_put(sink, data, len(data), ttl, flags)
        except BaseException as e:  # noqa: B036 - handed back to the caller
            raised.append(e)
            return native.CACHE_ERR_INTERNAL

    return native.COMPUTE_FN(run)


def _buf_bytes(buf):
    """Copies a cache_buf's bytes and frees it."""
    try:
        return ctypes.string_at(buf.data, buf.len) if buf.len else b""
    finally:
        lib.cache_buf_free(byref(buf))



# Async operations in flight: token -> (loop, future, keep, restore). The C callback gets
# the token as user_data and hands the outcome to the future's loop. `keep` holds what the
# library calls back into until the operation is over (a get_or_set's compute function:
# collected while queued, it would be called freed); `restore(data, flags)`, when given,
# puts back a popped value whose awaiting task was cancelled.
_pending = {}
_tokens = itertools.count(1)
_set_flagged = lib.cache_set_flagged


async def _submit(handle, submit, *args, flagged=False, many=False, keep=None, restore=None,
                  decode=_decode_value):
    """Queues the async C call `submit(handle, *args, callback, token)` and waits for its
    completion on this event loop: (found, value decoded by `decode`) for a get-like
    call; found is False for CACHE_NOT_FOUND and CACHE_EXISTS (an add that did not
    store). With `many` (cache_get_many_async): [(index, decoded value)] of the keys
    found. The operation is not cancelled with the awaiting task; it completes."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    token = next(_tokens)
    _pending[token] = (loop, future, keep, restore, decode)
    callback = _on_many_done if many else _on_done_flagged if flagged else _on_done
    try:
        status = submit(handle, *args, callback, c_void_p(token))
    except BaseException:
        _pending.pop(token, None)
        raise
    if status != native.CACHE_OK:
        _pending.pop(token, None)  # not queued: the callback never runs
        raise native.error_for(status)
    return await future


def _settle(future, status, data, flags, detail, restore=None, decode=_decode_value):
    """Runs on the awaiting loop: completes the future unless it was cancelled; a value
    taken for a cancelled task is handed to `restore`."""
    if future.done():
        if restore is not None and status == native.CACHE_OK:
            restore(data, flags)
        return
    if status < 0:
        future.set_exception(native.error_for(status, detail))
    elif status in (native.CACHE_NOT_FOUND, native.CACHE_EXISTS):  # a has, or an add
        future.set_result((False, None))
    else:
        try:
            future.set_result((True, decode(data, flags)))
        except Exception as e:  # a damaged pickle
            future.set_exception(e)


def _complete(token, status, value, length, flags):
    entry = _pending.pop(token or 0, None)
    if entry is None:
        return
    loop, future, _keep, restore, decode = entry
    data = ctypes.string_at(value, length) if length else b""
    detail = native.last_error() if status < 0 else ""
    try:
        loop.call_soon_threadsafe(_settle, future, status, data, flags, detail, restore, decode)
    except RuntimeError:
        # The loop is closed: nobody is waiting any more.
        if restore is not None and status == native.CACHE_OK:
            restore(data, flags)


@native.PLAIN_CALLBACK
def _on_done(token, status, value, length):
    _complete(token, status, value, length, 0)


@native.FLAGGED_CALLBACK
def _on_done_flagged(token, status, value, length, flags):
    _complete(token, status, value, length, flags)



def _settle_many(future, status, found, detail, decode):
    """As _settle, for a cache_get_many_async: [(index, value)] of the keys found."""
    if future.done():
        return
    if status < 0:
        future.set_exception(native.error_for(status, detail))
        return
    try:
        future.set_result([(i, decode(data, flags)) for i, data, flags in found])
    except Exception as e:  # a damaged pickle
        future.set_exception(e)


@native.MANY_CALLBACK
def _on_many_done(token, status, n, statuses, values, flags):
    entry = _pending.pop(token or 0, None)
    if entry is None:
        return
    loop, future, _keep, _restore, decode = entry
    found = []
    if status == native.CACHE_OK:
        for i in range(n):
            if statuses[i] == native.CACHE_OK:
                value = values[i]
                data = ctypes.string_at(value.data, value.len) if value.len else b""
                found.append((i, data, flags[i]))
    detail = native.last_error() if status < 0 else ""
    try:
        loop.call_soon_threadsafe(_settle_many, future, status, found, detail, decode)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more
