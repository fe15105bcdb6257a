"""The original `duck.utils.caching` and its `encrypted` submodule, loaded from an
installed duckframework's files without importing the `duck` package (its __init__
patches the threading module process-wide, which breaks every thread Python did not
start, the library's workers among them). For comparisons with the original: the parity,
encryption and rollback tests and the Python benchmark."""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path
from typing import Optional


def caching_dir() -> Optional[Path]:
    """duckframework's `duck/utils/caching` folder; None when it is not installed."""
    found = importlib.util.find_spec("duck")
    if found is None:
        return None
    return Path(next(iter(found.submodule_search_locations))) / "utils" / "caching"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def load_caching():
    """The original caching module (one instance per process). ImportError when
    duckframework is not installed."""
    root = caching_dir()
    if root is None:
        raise ImportError("duckframework is not installed")
    return _load("duck_original_caching", root / "__init__.py")


@functools.lru_cache(maxsize=None)
def load_encrypted():
    """The original encrypted.py (it needs PyNaCl). Its `from duck.utils.caching import
    ...` is served by stand-in parent packages for the time of its import."""
    caching = load_caching()
    path = caching_dir() / "encrypted.py"  # before the stand-ins hide the package
    names = ("duck", "duck.utils", "duck.utils.caching")
    saved = {name: sys.modules.get(name) for name in names}
    try:
        for name in names[:2]:
            stand_in = types.ModuleType(name)
            stand_in.__path__ = []
            sys.modules[name] = stand_in
        sys.modules["duck.utils.caching"] = caching
        return _load("duck_original_encrypted", path)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
