"""The binding's hand-written ctypes declarations, checked against include/duckcache.h.

ctypes trusts whatever it is told: a declaration that drifts from the header (an argument
added, a width changed) corrupts the stack or truncates values silently. This reads the
header cbindgen generates and checks every declared function, callback type, status
constant and struct field against it.
"""

import ctypes
import pathlib
import re

import pytest

from duckcache import _native

HEADER = pathlib.Path(__file__).resolve().parents[3] / "include" / "duckcache.h"

# The C types of the header and the ctypes types the binding may declare for each.
# Pointers the binding passes as plain addresses (c_void_p, c_char_p) are accepted for
# byte and out-parameter pointers: the width is the same, only the Python side differs.
ADDRESS = {ctypes.c_void_p, ctypes.c_char_p}
ACCEPTED = {
    "void": {None},
    "cache_status": {ctypes.c_int32},
    "int32_t": {ctypes.c_int32},
    "uint32_t": {ctypes.c_uint32},
    "uint64_t": {ctypes.c_uint64},
    "size_t": {ctypes.c_size_t},
    "double": {ctypes.c_double},
    "struct cache_t *": {_native.HANDLE},
    "struct cache_t **": {ctypes.POINTER(_native.HANDLE)},
    "const uint8_t *": ADDRESS,
    "uint8_t *": ADDRESS,
    "void *": {ctypes.c_void_p},
    "const char *": {ctypes.c_char_p},
    "char *": {ctypes.c_char_p},
    "size_t *": {ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p},
    "uint32_t *": {ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p},
    "uint64_t *": {ctypes.POINTER(ctypes.c_uint64)},
    "struct cache_buf *": {ctypes.POINTER(_native.Buf)},
    "struct cache_stats *": {ctypes.POINTER(_native.Stats)},
    "cache_callback": {_native.PLAIN_CALLBACK},
    "cache_flagged_callback": {_native.FLAGGED_CALLBACK},
    # Version 2.
    "int": {ctypes.c_int},
    "int64_t": {ctypes.c_int64},
    "int64_t *": {ctypes.POINTER(ctypes.c_int64)},
    "double *": {ctypes.POINTER(ctypes.c_double)},
    "cache_status *": {ctypes.POINTER(ctypes.c_int32)},
    "struct cache_sink *": {ctypes.c_void_p},
    "const struct cache_slice *": {ctypes.POINTER(_native.Slice)},
    "const struct cache_entry *": {ctypes.POINTER(_native.Entry)},
    "struct cache_slice": {_native.Slice},
    "cache_compute_fn": {_native.COMPUTE_FN},
    "cache_key_visitor": {_native.KEY_VISITOR},
    # Version 3 additions.
    "cache_many_callback": {_native.MANY_CALLBACK},
    "const cache_status *": {ctypes.POINTER(ctypes.c_int32)},
    "const uint32_t *": {ctypes.POINTER(ctypes.c_uint32)},
}


def _code():
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _type_of(declaration):
    """'const uint8_t *key' -> 'const uint8_t *'; 'double ttl' -> 'double'."""
    declaration = " ".join(declaration.split())
    match = re.fullmatch(r"(.*?)(\**)\s*(\w+)", declaration)
    assert match, declaration
    base, stars, _name = match.groups()
    if not base:  # 'void' alone, as in f(void)
        return declaration
    return f"{base.strip()} {stars}".strip() if stars else base.strip()


def _functions():
    """name -> (return type, [argument types]) for every function in the header."""
    found = {}
    for match in re.finditer(r"^([\w ]+?\**)\s*(\w+)\(([^)]*)\);", _code(), re.M):
        result, name, arguments = match.groups()
        result = " ".join(result.replace("*", " *").split()).replace("* *", "**")
        arguments = [] if arguments.strip() in ("", "void") else arguments.split(",")
        found[name] = (result, [_type_of(a) for a in arguments])
    return found


def _callbacks():
    """name -> (return type, [argument types]) for every callback type."""
    found = {}
    for match in re.finditer(r"typedef (\w+) \(\*(\w+)\)\(([^)]*)\);", _code()):
        result, name, arguments = match.groups()
        found[name] = (result, [_type_of(a) for a in arguments.split(",")])
    return found


def test_the_header_is_there():
    assert HEADER.is_file(), HEADER
    assert len(_functions()) >= len(_native._SIGNATURES)


@pytest.mark.parametrize("name", sorted(_native._SIGNATURES))
def test_each_declared_function_matches_the_header(name):
    functions = _functions()
    assert name in functions, f"{name} is declared in the binding but not in the header"
    c_result, c_arguments = functions[name]
    restype, argtypes = _native._SIGNATURES[name]
    assert restype in ACCEPTED[c_result], f"{name} returns {c_result}, binding says {restype}"
    assert len(argtypes) == len(c_arguments), (
        f"{name} takes {len(c_arguments)} arguments ({c_arguments}), binding declares "
        f"{len(argtypes)}"
    )
    for position, (declared, c_type) in enumerate(zip(argtypes, c_arguments)):
        assert c_type in ACCEPTED, f"{name}: no ctypes rule for C type {c_type!r}"
        assert declared in ACCEPTED[c_type], (
            f"{name} argument {position} is {c_type} in the header, {declared} in the binding"
        )


@pytest.mark.parametrize(
    "name, ctypes_type",
    [
        ("cache_callback", _native.PLAIN_CALLBACK),
        ("cache_flagged_callback", _native.FLAGGED_CALLBACK),
        ("cache_compute_fn", _native.COMPUTE_FN),
        ("cache_key_visitor", _native.KEY_VISITOR),
        ("cache_many_callback", _native.MANY_CALLBACK),
    ],
)
def test_callback_types_match_the_header(name, ctypes_type):
    c_result, c_arguments = _callbacks()[name]
    declared = list(ctypes_type._argtypes_)
    assert ctypes_type._restype_ in ACCEPTED[c_result], (name, c_result)
    assert len(declared) == len(c_arguments), (name, c_arguments, declared)
    for c_type, ctype in zip(c_arguments, declared):
        if c_type == "const uint8_t *":
            assert ctype == ctypes.POINTER(ctypes.c_uint8), (name, c_type, ctype)
        else:
            assert ctype in ACCEPTED[c_type], (name, c_type, ctype)


def test_status_constants_match_the_header():
    enum = re.search(r"enum cache_status.*?\{(.*?)\};", _code(), re.S).group(1)
    values = dict((n, int(v)) for n, v in re.findall(r"(CACHE_\w+)\s*=\s*(-?\d+)", enum))
    assert values, "no status constants found"
    for name, value in values.items():
        assert getattr(_native, name, None) == value, f"{name} is {value} in the header"
    no_ttl = re.search(r"#define CACHE_NO_TTL \((-?[\d.]+)\)", _code()).group(1)
    assert _native.CACHE_NO_TTL == float(no_ttl)


@pytest.mark.parametrize(
    "name, structure",
    [
        ("cache_buf", _native.Buf),
        ("cache_stats", _native.Stats),
        ("cache_slice", _native.Slice),
        ("cache_entry", _native.Entry),
    ],
)
def test_struct_layouts_match_the_header(name, structure):
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (name, name), _code(), re.S).group(1)
    fields = [_type_of(f) for f in body.split(";") if f.strip()]
    names = [f.split()[-1].lstrip("*") for f in body.split(";") if f.strip()]
    assert [n for n, _ in structure._fields_] == names
    for (field, ctype), c_type in zip(structure._fields_, fields):
        expected = {"uint8_t *": {ctypes.POINTER(ctypes.c_uint8)}}.get(c_type) or ACCEPTED[c_type]
        assert ctype in expected, (name, field, c_type, ctype)
