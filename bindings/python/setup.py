"""The wheel's tags: the package is pure Python over ctypes, but it carries the compiled
library, so the wheel is for one platform (py3-none-linux_x86_64, say), not py3-none-any.
And the library is always copied afresh into the build, never a stale copy left there by
an earlier build (setuptools otherwise copies a file only when it is newer)."""

import sysconfig

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel


class PlatformWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        # Any Python 3 (ctypes, no extension module), this platform only.
        platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        return "py3", "none", platform


class FreshBuild(build_py):
    def initialize_options(self):
        super().initialize_options()
        self.force = True


setup(cmdclass={"bdist_wheel": PlatformWheel, "build_py": FreshBuild})
