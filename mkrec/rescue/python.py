"""The Python runtime on the root RAM disk: the interpreter that runs mkrec (sys.base_prefix),
its standard library without tests, GUI and build leftovers, and mkrec with its runtime
dependencies from this environment's site-packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.rescue.cpio import Archive

PREFIX = "usr/lib/mkrec/python"  # on the RAM disk; /usr/bin/python3 points into it
PACKAGES = ("mkrec", "pycdlib", "jinja2", "markupsafe", "psutil", "zstandard", "cryptography", "pyrage")
MODULES = ("_cffi_backend",)  # single-file extension modules (cryptography's Rust bindings load it)
# Left out of the standard library: tests, GUI, installers, the static library and build files.
STDLIB_SKIP = frozenset(
    {
        "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages", "dist-packages",
        "__pycache__", "distutils", "pydoc_data", "venv",
        f"config-{sys.version_info.major}.{sys.version_info.minor}-x86_64-linux-gnu",
    }
)  # fmt: skip
DYNLOAD_SKIP_PREFIX = ("_tkinter", "_test", "_ctypes_test", "xxlimited")


def _version() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def packages_dir() -> str:
    """Where mkrec and its dependencies go on the RAM disk."""
    return f"{PREFIX}/lib/{_version()}"


def add_python(archive: Archive, base: Path = Path(sys.base_prefix)) -> list[Path]:
    """Add the runtime; returns the ELF files (interpreter, extension modules) whose libraries
    the caller must add."""
    ver = _version()
    exe = base / "bin" / ver
    stdlib = base / "lib" / ver
    if not exe.is_file() or not (stdlib / "os.py").is_file():
        raise MkrecError(
            f"{base}: no {ver} interpreter with its standard library", hint="check sys.base_prefix"
        )
    archive.add_file(f"{PREFIX}/bin/{ver}", exe, mode=0o755)
    archive.add_symlink("usr/bin/python3", f"/{PREFIX}/bin/{ver}")
    archive.add_symlink(f"usr/bin/{ver}", f"/{PREFIX}/bin/{ver}")
    archive.add_tree(f"{PREFIX}/lib/{ver}", stdlib, skip=STDLIB_SKIP | {"lib-dynload"})
    elves = [exe]
    for so in sorted((stdlib / "lib-dynload").iterdir()):
        if so.name.startswith(DYNLOAD_SKIP_PREFIX):
            continue
        archive.add_file(f"{PREFIX}/lib/{ver}/lib-dynload/{so.name}", so)
        elves.append(so)
    # The packages go into the standard library's directory, which is on sys.path whatever the
    # interpreter's site module thinks: Debian's python3 adds dist-packages and never site-packages,
    # so a rescue disc built with it could not import mkrec.
    site = packages_dir()
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise MkrecError(f"python package {name} is not installed", hint="run 'make deps'")
        pkg = Path(next(iter(spec.submodule_search_locations)))
        archive.add_tree(f"{site}/{name}", pkg, skip=frozenset({"__pycache__", "tests"}))
        elves += sorted(pkg.rglob("*.so"))
    for name in MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise MkrecError(f"python module {name} is not installed", hint="run 'make deps'")
        module = Path(spec.origin)
        archive.add_file(f"{site}/{module.name}", module)
        elves.append(module)
    return elves
