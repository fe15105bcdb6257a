"""A large value costs its size to read, once: no buffer in the library that is then
copied into the caller's (issue 30 item 17: a 200 MB value cost 400 MB). Measured as the
growth of the process's peak resident memory across one read, in a fresh process, on
every kind that keeps large values in files of their own, through the binding (which
reads into the bytes it returns) and through cache_get (a buffer the library hands
over)."""

import subprocess
import sys
import textwrap

import pytest

from conftest import PERSISTENT

MIB = 1 << 20
VALUE_MIB = 96

READER = textwrap.dedent(
    """
    import ctypes, sys
    import duckcache
    from duckcache import _native as native
    from conftest import open_kind

    kind, directory, how = sys.argv[1:4]

    def peak_kib():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    cache = open_kind(kind, directory)
    cache.get("warm-up")
    reset_peak()
    before = peak_kib()
    if how == "binding":
        value = cache.get("big")
        size = len(value)
    else:
        buf = native.Buf()
        key = b"big"
        status = native.lib.cache_get(cache._handle, key, len(key), ctypes.byref(buf))
        assert status == 0, status
        size = buf.len
        native.lib.cache_buf_free(ctypes.byref(buf))
    print(size, peak_kib() - before)
    """
)


@pytest.mark.parametrize("how", ["binding", "cache_get"])
@pytest.mark.parametrize("kind", PERSISTENT)
def test_reading_a_large_value_costs_its_size_once(kind, how, tmp_path):
    writer = f"""
import sys; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
from conftest import open_kind
cache = open_kind({kind!r}, {str(tmp_path)!r})
cache.set("big", b"v" * ({VALUE_MIB} << 20))
cache.close()
"""
    subprocess.run([sys.executable, "-c", writer], check=True)
    tests = str(__import__("pathlib").Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {tests!r})\n" + READER,
         kind, str(tmp_path), how],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    size, grown_kib = int(out[0]), int(out[1])
    assert size >= VALUE_MIB * MIB
    # One copy of the value (and its pickle framing), not two.
    assert grown_kib * 1024 < 1.5 * size, f"peak grew {grown_kib >> 10} MiB for {size >> 20} MiB"
