"""The ELF library resolver, checked against the real dynamic loader (ldd) on this machine's tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mkrec.errors import MkrecError
from mkrec.rescue.elf import read_elf, resolve_libraries


def ldd_sonames(program: Path) -> set[str]:
    out = subprocess.run(["ldd", str(program)], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        first = line.strip().split()[0]
        if first.startswith("linux-vdso"):
            continue
        names.add(Path(first).name)
    return names


@pytest.mark.parametrize(
    "program",
    ["/usr/sbin/sfdisk", "/usr/sbin/cryptsetup", "/usr/sbin/lvm", "/usr/sbin/mkfs.xfs", "/usr/bin/tar"],
)
def test_same_libraries_as_the_loader(program: str) -> None:
    found = resolve_libraries([Path(program)])
    assert set(found) == ldd_sonames(Path(program))
    assert all(path.exists() for path in found.values())


def test_runpath_of_the_python_interpreter_is_followed() -> None:
    exe = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    info = read_elf(exe.resolve())
    found = resolve_libraries([exe])
    if any(n.startswith("libpython") for n in info.needed):
        lib = next(p for n, p in found.items() if n.startswith("libpython"))
        assert str(lib).startswith(sys.base_prefix), "found through RUNPATH, not a system copy"
    assert "libc.so.6" in found and "ld-linux-x86-64.so.2" in found


def test_read_elf_fields() -> None:
    info = read_elf(Path("/usr/sbin/sfdisk"))
    assert info.interp == "/lib64/ld-linux-x86-64.so.2"
    assert "libfdisk.so.1" in info.needed and "libc.so.6" in info.needed


def test_static_program_needs_nothing() -> None:
    assert read_elf(Path("/bin/busybox")).needed == ()
    assert resolve_libraries([Path("/bin/busybox")]) == {}


def test_scripts_are_ignored_and_non_elf_is_an_error(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\n")
    assert resolve_libraries([script]) == {}
    with pytest.raises(MkrecError, match=r"s\.sh: not an ELF file"):
        read_elf(script)


def test_missing_library_names_program_and_library(tmp_path: Path) -> None:
    # A copy of sfdisk whose library search finds nothing: the message names both.
    with pytest.raises(MkrecError, match=r"sfdisk: needs lib\S+, which is not installed"):
        resolve_libraries([Path("/usr/sbin/sfdisk")], system=(tmp_path,))
