"""Which shared libraries a program needs, read from its ELF headers (PT_INTERP, DT_NEEDED,
DT_RPATH/DT_RUNPATH) and resolved the way the dynamic loader would, recursively. Read directly
rather than through ldd, which runs the program's loader on it."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mkrec.errors import MkrecError

# The loader's built-in search path on Debian amd64 (after RPATH/LD_LIBRARY_PATH/RUNPATH, before
# nothing else: the rescue system places every library in the first of these).
SYSTEM_DIRS = (
    Path("/lib/x86_64-linux-gnu"),
    Path("/usr/lib/x86_64-linux-gnu"),
    Path("/lib64"),
    Path("/usr/lib64"),
    Path("/lib"),
    Path("/usr/lib"),
)

PT_INTERP = 3
PT_DYNAMIC = 2
PT_LOAD = 1
DT_NEEDED = 1
DT_STRTAB = 5
DT_RPATH = 15
DT_RUNPATH = 29


@dataclass(frozen=True)
class ElfInfo:
    interp: str | None
    needed: tuple[str, ...]
    search: tuple[str, ...]  # RPATH/RUNPATH entries, $ORIGIN not yet expanded


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def read_elf(path: Path) -> ElfInfo:
    """Parse a 64-bit little-endian ELF file's program headers and dynamic section."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        raise MkrecError(f"{path}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise MkrecError(f"{path}: not a 64-bit little-endian ELF file", hint="only x86-64 is supported")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    interp = None
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == PT_INTERP:
            interp = data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode()
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
    if dynamic is None:
        return ElfInfo(interp, (), ())  # static
    tags: list[tuple[int, int]] = []
    off, size = dynamic
    for pos in range(off, off + size, 16):
        tag, val = struct.unpack_from("<qQ", data, pos)
        if tag == 0:
            break
        tags.append((tag, val))
    strtab_vaddr = next((v for t, v in tags if t == DT_STRTAB), None)
    if strtab_vaddr is None:
        raise MkrecError(f"{path}: ELF dynamic section without a string table")
    strtab = _vaddr_to_offset(loads, strtab_vaddr, path)

    def string(at: int) -> str:
        end = data.index(b"\0", strtab + at)
        return data[strtab + at : end].decode()

    needed = tuple(string(v) for t, v in tags if t == DT_NEEDED)
    search = tuple(
        entry for t, v in tags if t in (DT_RPATH, DT_RUNPATH) for entry in string(v).split(":") if entry
    )
    return ElfInfo(interp, needed, search)


def _vaddr_to_offset(loads: Sequence[tuple[int, int, int]], vaddr: int, path: Path) -> int:
    for start, offset, size in loads:
        if start <= vaddr < start + size:
            return vaddr - start + offset
    raise MkrecError(f"{path}: ELF string table outside the loaded segments")


def find_library(name: str, search: Iterable[Path], system: Sequence[Path] = SYSTEM_DIRS) -> Path | None:
    for directory in (*search, *system):
        candidate = directory / name
        if candidate.exists():
            return candidate
    return None


def resolve_libraries(programs: Iterable[Path], system: Sequence[Path] = SYSTEM_DIRS) -> dict[str, Path]:
    """Every shared library the programs need, directly or through other libraries:
    {soname: host path}. The dynamic loader itself is included under its file name."""
    found: dict[str, Path] = {}
    queue = [p for p in programs if is_elf(p)]
    done: set[Path] = set()
    while queue:
        path = queue.pop()
        real = path.resolve()
        if real in done:
            continue
        done.add(real)
        info = read_elf(real)
        if info.interp and Path(info.interp).name not in found:
            found[Path(info.interp).name] = Path(info.interp)
        dirs = [
            Path(d.replace("$ORIGIN", str(real.parent)).replace("${ORIGIN}", str(real.parent)))
            for d in info.search
        ]
        for name in info.needed:
            if name in found:
                continue
            lib = find_library(name, dirs, system)
            if lib is None:
                raise MkrecError(
                    f"{path}: needs {name}, which is not installed",
                    hint="reinstall the package that provides it (dpkg -S)",
                )
            found[name] = lib
            queue.append(lib)
    return found
