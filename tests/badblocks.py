"""A disk with bad sectors, for the fault suite, without device-mapper: a one-file FUSE file system
serves an image as disk.img and fails reads of one byte range with EIO; a read-only loop device over
it gives the kernel (ext4, tar above it) real I/O errors there.

Run as a program by BadSectors (fusepy in its own process: FUSE's loop owns the thread):
    python badblocks.py IMAGE MOUNTPOINT START END"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from fuse import FUSE, FuseOSError, Operations
from support import LoopDisks, sh


class BadBlocks(Operations):  # type: ignore[misc]
    """disk.img: the image's bytes, but reads touching [start, end) fail with EIO."""

    def __init__(self, image: str, start: int, end: int) -> None:
        self.fd = os.open(image, os.O_RDONLY)
        self.start, self.end = start, end

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path != "/disk.img":
            raise FuseOSError(errno.ENOENT)
        return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": os.fstat(self.fd).st_size}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", "disk.img"]

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if offset < self.end and offset + size > self.start:
            raise FuseOSError(errno.EIO)
        return os.pread(self.fd, size, offset)


def first_block_of(image: Path, path: str) -> tuple[int, int]:
    """(byte offset, length) of the first file system block of a file on an ext4 image."""
    block = int(sh("debugfs", "-R", f"blocks {path}", str(image)).split()[0])
    size = int(next(line for line in sh("dumpe2fs", "-h", str(image)).splitlines()
                    if line.startswith("Block size:")).split()[-1])  # fmt: skip
    return block * size, size


class BadSectors:
    """`with BadSectors(image, start, end, disks, mnt) as root:` the ext4 image mounted read-only at
    mnt through a loop device whose bytes [start, end) cannot be read."""

    def __init__(self, image: Path, start: int, end: int, disks: LoopDisks, mnt: Path) -> None:
        self.image, self.start, self.end, self.disks, self.mnt = image, start, end, disks, mnt
        self.fuse_dir = image.parent / "fuse"

    def __enter__(self) -> Path:
        self.fuse_dir.mkdir(exist_ok=True)
        argv = [sys.executable, __file__, str(self.image), str(self.fuse_dir), str(self.start), str(self.end)]
        self.proc = subprocess.Popen(argv)
        deadline = time.monotonic() + 20
        while not (self.fuse_dir / "disk.img").exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("the FUSE file system did not come up")
            time.sleep(0.1)
        dev = sh("losetup", "-f", "-r", "--show", str(self.fuse_dir / "disk.img")).strip()
        self.disks.devices.append(dev)
        self.mnt.mkdir(exist_ok=True)
        sh("mount", "-o", "ro,noload", dev, str(self.mnt))  # noload: no journal replay writes
        self.disks.mounts.append(self.mnt)
        return self.mnt

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disks.cleanup()  # the mount and the loop device first: they hold the FUSE file open
        subprocess.run(["umount", "-l", str(self.fuse_dir)], capture_output=True)
        self.proc.terminate()
        self.proc.wait(timeout=20)


if __name__ == "__main__":
    image, mountpoint, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    FUSE(BadBlocks(image, start, end), mountpoint, foreground=True, ro=True, direct_io=True)
