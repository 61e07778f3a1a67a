"""Builds the native kernels along with the package (pyproject.toml has the metadata).

With no C compiler, or on an architecture without kernels yet, the build prints a one-
line notice and the package installs anyway: Lila then runs on its numba kernels.
"""
import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def _native_build():
    path = Path(__file__).parent / "lila" / "native" / "build.py"
    spec = importlib.util.spec_from_file_location("lila_native_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithNative(build_py):
    def run(self):
        super().run()
        native = _native_build()
        out = native.PACKAGE_DIR if self.editable_mode else Path(self.build_lib) / "lila" / "native"
        native.main(["--out", str(out)])


setup(cmdclass={"build_py": BuildWithNative})
