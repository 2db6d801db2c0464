"""A newc ("070701") cpio archive built in memory and streamed out: what the kernel unpacks as an
initramfs. Written here rather than with cpio(1) so owners (root), modes and paths are set per
entry without staging a tree as root, and so the archive is streamed straight into the compressor."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import zstandard

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    mode: int  # full st_mode, type bits included
    source: Path | None = None  # regular file copied from the host
    data: bytes = b""  # regular file given as bytes, or a symlink's target
    mtime: int = 0

    def size(self) -> int:
        if stat.S_ISREG(self.mode) and self.source is not None:
            return self.source.stat().st_size
        return len(self.data) if stat.S_ISREG(self.mode) or stat.S_ISLNK(self.mode) else 0


class Archive:
    """Paths are archive-relative ("usr/bin/tar"); parents are created as 0755 directories.
    A later add of the same path replaces the earlier one."""

    def __init__(self) -> None:
        self.entries: dict[PurePosixPath, Entry] = {}

    def _put(self, path: str | PurePosixPath, entry: Entry) -> None:
        p = PurePosixPath(str(path).lstrip("/"))
        for parent in reversed(p.parents):
            if str(parent) != "." and parent not in self.entries:
                self.entries[parent] = Entry(stat.S_IFDIR | 0o755)
        self.entries[p] = entry

    def add_dir(self, path: str | PurePosixPath, mode: int = 0o755) -> None:
        self._put(path, Entry(stat.S_IFDIR | mode))

    def add_file(self, path: str | PurePosixPath, source: Path, mode: int | None = None) -> None:
        st = source.stat()
        perm = stat.S_IMODE(st.st_mode) if mode is None else mode
        # mtime kept: Python checks a .pyc against its source's mtime and size.
        self._put(path, Entry(stat.S_IFREG | perm, source=source, mtime=int(st.st_mtime)))

    def add_bytes(self, path: str | PurePosixPath, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self._put(path, Entry(stat.S_IFREG | mode, data=raw))

    def add_symlink(self, path: str | PurePosixPath, target: str) -> None:
        self._put(path, Entry(stat.S_IFLNK | 0o777, data=target.encode()))

    def add_tree(self, dest: str | PurePosixPath, source: Path, skip: frozenset[str] = frozenset()) -> None:
        """Copy a host directory: files, symlinks (as symlinks), subdirectories whose name is not in skip."""
        for item in sorted(source.iterdir()):
            if item.name in skip:
                continue
            target = PurePosixPath(str(dest)) / item.name
            if item.is_symlink():
                self.add_symlink(target, str(item.readlink()))
            elif item.is_dir():
                self.add_dir(target)
                self.add_tree(target, item, skip)
            elif item.is_file():
                self.add_file(target, item)

    def __contains__(self, path: str) -> bool:
        return PurePosixPath(path.lstrip("/")) in self.entries

    def raw_size(self) -> int:
        return sum(e.size() for e in self.entries.values())

    def sorted_entries(self) -> list[tuple[PurePosixPath, Entry]]:
        # Sorting by path components puts every directory before what it holds.
        return sorted(self.entries.items(), key=lambda item: item[0].parts)


def _header(name: bytes, ino: int, entry: Entry, size: int) -> bytes:
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, entry.mtime, size, 0, 0, 0, 0, len(name) + 1, 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    return _pad(head + name + b"\0")


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _file_chunks(entry: Entry) -> Iterator[bytes]:
    if entry.source is None:
        yield entry.data
        return
    with open(entry.source, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def write_newc(archive: Archive, out: BinaryIO) -> int:
    """Write the archive as newc cpio; returns the bytes written (uncompressed)."""
    written = 0
    for ino, (path, entry) in enumerate(archive.sorted_entries(), start=1):
        size = entry.size()
        out.write(head := _header(str(path).encode(), ino, entry, size))
        written += len(head)
        done = 0
        for chunk in _file_chunks(entry):
            out.write(chunk)
            done += len(chunk)
        if done != size:
            raise OSError(f"{entry.source} changed size while being archived")
        pad = b"\0" * (-size % 4)
        out.write(pad)
        written += size + len(pad)
    trailer = _header(b"TRAILER!!!", 0, Entry(0), 0)
    out.write(trailer)
    return written + len(trailer)


def write_zstd(archive: Archive, out: Path, level: int = 10, threads: int = 0) -> tuple[int, int]:
    """Write archive as a zstd-compressed newc cpio; returns (uncompressed, compressed) sizes.
    One zstd frame with the default window: the kernel's unzstd reads it (CONFIG_RD_ZSTD)."""
    cctx = zstandard.ZstdCompressor(level=level, threads=threads or -1)
    with open(out, "wb") as raw, cctx.stream_writer(raw, closefd=False) as zw:
        size = write_newc(archive, zw)
    return size, out.stat().st_size
