"""How Python values and keys become the library's bytes, and back.

Keys are `str` (stored as UTF-8) or `bytes` (as they are). Values are any picklable
object; `bytes` values are stored byte for byte with flags 0, everything else is
pickled and stored with FLAG_PICKLED in the entry's flags word, so a C or C++ program
sees exactly the bytes Python stored, and Python always knows how to read them back.
"""

from __future__ import annotations

import math
import pickle
from typing import Any, Hashable, Optional, Union

# Sentinel for "no default given", as in the original module.
MISSING: Any = object()

# A key of the library-backed classes; InMemoryCache takes any Hashable.
Key = Union[str, bytes, Hashable]
# Seconds until an entry expires; None: never.
Expiry = Optional[float]

# The flags word of an entry whose value is a pickle. Flags 0 is raw bytes; any other
# value (a C program's own flags) is also returned as raw bytes.
FLAG_PICKLED = 1


def _encode_value(value):
    if type(value) is bytes:
        return value, 0
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), FLAG_PICKLED


class ValueDecodeError(pickle.UnpicklingError):
    """A stored pickle that cannot be loaded (damaged, or naming a class this process
    cannot import). Nothing is lost: `data` holds the stored bytes and `flags` their
    flags word, so a caller can inspect them. Raised by get and by pop, which both leave
    the entry in the cache (a pop puts it back, without its expiry).

    What is raised is also of the type unpickling raised (AttributeError for a class that
    is gone, ModuleNotFoundError, EOFError, ...), as the original module let those
    through: `except AttributeError` in an application still catches it."""

    def __init__(self, data, flags, cause):
        super().__init__(f"cannot unpickle the stored value ({len(data)} bytes): {cause!r}")
        self.data = data
        self.flags = flags


# ValueDecodeError combined with each unpickling error type met so far.
_decode_errors = {}


def _decode_error(data, flags, cause):
    """A ValueDecodeError that is also of `cause`'s type (see ValueDecodeError)."""
    kind = type(cause)
    combined = _decode_errors.get(kind)
    if combined is None:
        try:
            combined = type(f"ValueDecodeError[{kind.__name__}]", (ValueDecodeError, kind), {})
        except TypeError:  # a type that cannot be a second base: the library's alone
            combined = ValueDecodeError
        _decode_errors[kind] = combined
    try:
        return combined(data, flags, cause)
    except Exception:
        return ValueDecodeError(data, flags, cause)


def _decode_value(data, flags):
    if flags == FLAG_PICKLED:
        try:
            return pickle.loads(data)
        except Exception as e:
            raise _decode_error(data, flags, e) from e
    return data


def _encode_key(key):
    if type(key) is str:
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, str):  # a str subclass (a str Enum): its text, as the original
        return str.encode(key, "utf-8", "surrogatepass")
    if isinstance(key, bytes):
        return bytes(key)
    raise KeyError(f"Key must be str or bytes, got {type(key).__name__}.")


def _holds_no_such_key(key):
    """True for a key no cache of these classes can hold (not str or bytes): a delete of
    it does nothing and a pop of it finds nothing, as in the original."""
    return not isinstance(key, (str, bytes))


def _ttl(expiry):
    """The original module's `expiry` (seconds, None = never) as the C ttl. A negative expiry is in
    the past, as in the seed: the entry expires at once."""
    if expiry is None:
        return -1.0
    if isinstance(expiry, bool) or not isinstance(expiry, (int, float)):
        raise TypeError(f"expiry must be a number of seconds or None, not {type(expiry).__name__}")
    if math.isnan(expiry):
        raise ValueError("expiry is NaN")
    return max(float(expiry), 0.0)


def _positive_int(name, value, limit, fraction_ok=False):
    """`value` as an int from 1 to `limit`; a whole float (1e9) is taken, and with
    `fraction_ok` (a byte count, as the original took any number) any finite float,
    truncated; anything else, or out of range, is a ValueError naming `name`."""
    if isinstance(value, float) and math.isfinite(value) and (fraction_ok or value.is_integer()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise ValueError(f"{name} must be an integer from 1 to {limit}, not {value!r}")
    return value



def _decode_key(k: bytes):
    """A stored key as the caller most likely wrote it: str when it is UTF-8."""
    try:
        return k.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return k


_INT64 = (-(2**63), 2**63 - 1)
