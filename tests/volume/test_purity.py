"""brats.volume is pure math: importing any of it loads no framework and no I/O library."""

import pkgutil
import subprocess
import sys

import brats.volume

HEAVY = ("ray", "tensorflow", "keras", "nibabel", "fsspec", "s3fs", "pyarrow")


def test_every_volume_module_imports_alone_without_heavy_libraries():
    modules = sorted(f"brats.volume.{m.name}" for m in pkgutil.iter_modules(brats.volume.__path__))
    assert {"brats.volume.labels", "brats.volume.metrics", "brats.volume.normalize"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {['brats.volume', *modules]!r}:\n"
        "    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "print(len(sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_check_sees_a_heavy_import():
    """The subprocess check can fail: a module that pulls in pyarrow is caught."""
    code = (
        "import sys, brats.volume.labels, brats.storage\n"
        f"assert [m for m in {HEAVY!r} if m in sys.modules] == ['fsspec']\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
