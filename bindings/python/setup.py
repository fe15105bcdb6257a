"""The wheel's tags: the package is pure Python over ctypes, but it carries the compiled
library, so the wheel is for one platform (py3-none-linux_x86_64, say), not py3-none-any.
And the library is always copied afresh into the build, never a stale copy left there by
an earlier build (setuptools otherwise copies a file only when it is newer).

From a checkout, `pip install ./bindings/python` builds the library itself: when the
package folder holds no libduckcache.so (`make python` puts one there), the build runs
`cargo build --release --lib` on the repository two folders up (CARGO_TARGET_DIR is
honoured) and packages what it made. The sdist (`make sdist`) carries the library's
sources in `rust/` beside this file, and builds the same way. Without cargo, or without
the sources, it stops saying what to do."""

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel


class CarriesALibrary(Distribution):
    """The compiled library makes this a platform package: its files go to platlib (as
    auditwheel requires of a wheel it can check and tag manylinux)."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        # Any Python 3 (ctypes, no extension module), this platform only.
        platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        return "py3", "none", platform


HERE = Path(__file__).resolve().parent
# The library's sources: the checkout this package sits in, or the sdist's copy.
REPOSITORY = next(
    (root for root in (HERE.parent.parent, HERE / "rust") if (root / "Cargo.toml").is_file()),
    HERE.parent.parent,
)
LIBRARY = "libduckcache.so"


def _build_library() -> Path:
    """The library built by cargo from the repository this package sits in."""
    manifest = REPOSITORY / "Cargo.toml"
    if not manifest.is_file():
        raise SystemExit(
            f"duckcache: no {LIBRARY} in the package and no Rust sources at {REPOSITORY}: "
            "build from a checkout of the repository, or run `make python` there first"
        )
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        raise SystemExit(
            "duckcache: building the library needs a Rust toolchain (cargo): install it "
            "from https://rustup.rs, or run `make python` where one is installed"
        )
    subprocess.run(
        [cargo, "build", "--release", "--lib", "--manifest-path", str(manifest)], check=True
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPOSITORY / "target")
    return target / "release" / LIBRARY


class FreshBuild(build_py):
    def initialize_options(self):
        super().initialize_options()
        self.force = True

    def run(self):
        super().run()
        if not (HERE / "duckcache" / LIBRARY).is_file():
            built = _build_library()
            self.copy_file(str(built), str(Path(self.build_lib) / "duckcache" / LIBRARY))


setup(distclass=CarriesALibrary, cmdclass={"bdist_wheel": PlatformWheel, "build_py": FreshBuild})
