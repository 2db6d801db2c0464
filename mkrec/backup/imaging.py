"""Used-blocks images of the file systems tar cannot carry and of the partitions in [source] raw.

Which tool images what (ntfsclone for NTFS, partclone.<fs> for what partclone knows, else every
block read by mkrec itself), the exact commands to save and restore an image, and what the image
says about itself: the tools' own headers (the first bytes of the stream) give the file system's
size and the bytes in use, so no progress text is parsed. The tools' messages are drained while
they run (their progress lines would fill the pipe and stall them) and the meaningful last ones
become the error when they fail."""

from __future__ import annotations

import io
import logging
import os
import struct
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from mkrec.backup.catalog import entry_line
from mkrec.backup.manifest import ImageFormat, StreamRecord
from mkrec.backup.tarscan import Entry
from mkrec.errors import CommandError, MkrecError
from mkrec.runner import popen, which

log = logging.getLogger("mkrec.backup")

# blkid's TYPE -> the partclone program that images it (never partclone.dd/.imager: those copy
# every block, which mkrec does itself). NTFS goes to ntfsclone first.
PARTCLONE = {
    "ext2": "partclone.ext2",
    "ext3": "partclone.ext3",
    "ext4": "partclone.ext4",
    "xfs": "partclone.xfs",
    "btrfs": "partclone.btrfs",
    "vfat": "partclone.vfat",
    "exfat": "partclone.exfat",
    "f2fs": "partclone.f2fs",
    "hfsplus": "partclone.hfsplus",
    "minix": "partclone.minix",
    "ntfs": "partclone.ntfs",
}
PARTCLONE_RESTORE = "partclone.restore"  # one program restores every partclone image
NTFSCLONE = "ntfsclone"
NTFSRESIZE = "ntfsresize"  # grows a restored NTFS to fill a larger partition

HEAD = 4096  # bytes read before the stream goes on: every header fits
PARTCLONE_MAGIC = b"partclone-image\0"
NTFSCLONE_MAGIC = b"\0ntfsclone-image"
NTFS_BACKUP_BOOT = 512  # ntfsclone wants room for the backup boot sector after the last cluster
# banners, progress and farewell lines the tools print; an error message is what is left
NOISE = ("Partclone v", "ntfsclone v", "Elapsed:", "percent completed", "current block:", "error exit",
         "Partclone fail, please check")  # fmt: skip


@dataclass(frozen=True)
class ImageInfo:
    fs_size: int  # bytes a target must hold
    used: int  # bytes in use, as the tool counts them


def mounted_on(device: str, mounts: Path = Path("/proc/self/mounts")) -> list[tuple[str, bool]]:
    """(mount point, read-only) of every mount of device, by device number (any name of it)."""
    try:
        rdev = os.stat(device).st_rdev
    except OSError:
        return []
    found = []
    for line in mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].startswith("/dev/"):
            continue
        try:
            same = os.stat(fields[0]).st_rdev == rdev
        except OSError:
            continue
        if same:
            target = fields[1].encode().decode("unicode_escape")  # \040 for a space
            found.append((target, "ro" in fields[3].split(",")))
    return found


def choose(device: str, fstype: str, mounts: list[tuple[str, bool]]) -> ImageFormat:
    """How to image device: a mounted read-write file system is refused (its image would not be
    consistent); ntfsclone for NTFS (it accepts a read-only mount); partclone for what it knows
    (it refuses any mount); else every block."""
    busy = [target for target, readonly in mounts if not readonly]
    if busy:
        raise MkrecError(
            f"cannot image {device}: it is mounted read-write on {busy[0]}",
            hint="unmount it or mount it read-only for the backup, or exclude its mount point in [source]",
        )
    if fstype == "ntfs" and which(NTFSCLONE):
        return ImageFormat.NTFSCLONE
    tool = PARTCLONE.get(fstype)
    if tool and which(tool):
        if not mounts:
            return ImageFormat.PARTCLONE
        log.info("    %s is mounted on %s: partclone refuses that, every block is read", device, mounts[0][0])
    return ImageFormat.RAW


def save_argv(fmt: ImageFormat, fstype: str, device: str) -> list[str]:
    """The command writing the image of device to its stdout."""
    if fmt is ImageFormat.PARTCLONE:
        return [PARTCLONE[fstype], "--clone", "--source", device, "--output", "-", "--quiet",
                "--logfile", "/dev/null"]  # fmt: skip
    if fmt is ImageFormat.NTFSCLONE:
        return [NTFSCLONE, "--save-image", "--output", "-", "--quiet", device]
    raise ValueError(f"{fmt}: mkrec reads every block itself")


def restore_argv(fmt: ImageFormat, node: str) -> list[str]:
    """The command writing the image on its stdin onto node."""
    if fmt is ImageFormat.PARTCLONE:
        return [PARTCLONE_RESTORE, "--source", "-", "--output", node, "--quiet", "--logfile", "/dev/null"]
    if fmt is ImageFormat.NTFSCLONE:
        return [NTFSCLONE, "--restore-image", "--overwrite", node, "--quiet", "-"]
    raise ValueError(f"{fmt}: written back block for block")


def restore_hint(fmt: ImageFormat, image: str) -> str:
    """How a person restores an extracted image file by hand."""
    if fmt is ImageFormat.PARTCLONE:
        return f"{PARTCLONE_RESTORE} --source {image} --output /dev/TARGET"
    if fmt is ImageFormat.NTFSCLONE:
        return f"{NTFSCLONE} --restore-image --overwrite /dev/TARGET {image}"
    return f"dd if={image} of=/dev/TARGET bs=1M conv=fsync (or loop-mount it read-only)"


def parse_header(fmt: ImageFormat, head: bytes) -> ImageInfo | None:
    """Size and use from the image's own header (partclone image format 2, ntfsclone 10.x)."""
    if fmt is ImageFormat.PARTCLONE and head.startswith(PARTCLONE_MAGIC) and head[30:34] == b"0002":
        if len(head) < 88:
            return None
        device_size, _blocks, used_blocks, _bitmap, block_size = struct.unpack_from("<QQQQI", head, 52)
        return ImageInfo(device_size, used_blocks * block_size)
    if fmt is ImageFormat.NTFSCLONE and head.startswith(NTFSCLONE_MAGIC):
        if len(head) < 50:
            return None
        _major, _minor, cluster, _device, clusters, inuse, _data = struct.unpack_from("<BBIqqqI", head, 16)
        return ImageInfo(clusters * cluster + NTFS_BACKUP_BOOT, inuse * cluster)
    return None


def needed_bytes(record: StreamRecord) -> int:
    """What a target partition must hold for an image stream (sets from before fs_size was
    recorded hold raw images: the stream itself)."""
    return record.fs_size or record.size or 0


def image_format(record: StreamRecord) -> ImageFormat:
    return record.image or ImageFormat.RAW


class Drain(threading.Thread):
    """Reads a tool's messages while it works; keeps the last meaningful lines."""

    def __init__(self, stream: BinaryIO, keep: int = 20) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: deque[str] = deque(maxlen=keep)

    def run(self) -> None:
        for raw in self.stream:
            for part in raw.replace(b"\r", b"\n").split(b"\n"):
                line = part.decode(errors="replace").strip()
                if line and not any(n in line for n in NOISE):
                    self.lines.append(line)

    def text(self) -> str:
        self.join()
        return "\n".join(self.lines)


def check_tool(proc: subprocess.Popen[bytes], drains: list[Drain]) -> None:
    """Wait for an imaging tool; its failure becomes one line with its last meaningful message."""
    code = proc.wait()
    text = "\n".join(d.text() for d in drains)
    argv = [str(a) for a in proc.args] if isinstance(proc.args, list) else [str(proc.args)]
    if code != 0:
        raise CommandError(argv, code, text)
    if text:
        log.debug("%s: %s", argv[0], text.replace("\n", "; "))


class _Prefixed(io.RawIOBase):
    """The header read ahead, then the rest of the tool's output."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any, /) -> int:
        if not self._head:
            return self._rest.readinto(buffer) or 0  # type: ignore[attr-defined]
        n = min(len(buffer), len(self._head))
        buffer[:n] = self._head[:n]
        self._head = self._head[n:]
        return n

    def read(self, size: int = -1, /) -> bytes:
        """Whole reads: the header and what follows it in one."""
        head, self._head = self._head, b""
        if 0 <= size < len(head):
            self._head = head[size:]
            return head[:size]
        return head + (self._rest.read(size - len(head) if size >= 0 else -1) if size != len(head) else b"")

    def close(self) -> None:
        self._rest.close()
        super().close()


@dataclass
class ImageStream:
    """One image being made: read `reader` to its end, then call finish()."""

    format: ImageFormat
    reader: BinaryIO
    info: ImageInfo
    proc: subprocess.Popen[bytes] | None = None
    drain: Drain | None = None

    def catalog_line(self, stream: str) -> str:
        """The image's one catalog line: size is the bytes in use (the member is the whole stream)."""
        used = self.info.used
        return entry_line(stream, Entry(".", "image", used, 0o600, 0, 0, time.time(), "", 0, used))

    def finish(self) -> None:
        if self.proc is not None and self.drain is not None:
            check_tool(self.proc, [self.drain])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _device_size(device: str) -> int:
    with open(device, "rb") as fh:
        return fh.seek(0, os.SEEK_END)


def open_image(device: str, fstype: str) -> ImageStream:
    """Start imaging device (file system type fstype, "raw" when it has none)."""
    fmt = choose(device, fstype, mounted_on(device))
    if fmt is ImageFormat.RAW:
        size = _device_size(device)
        # every block, read by mkrec: the caller closes the device with the stream
        return ImageStream(fmt, open(device, "rb"), ImageInfo(size, size))
    argv = save_argv(fmt, fstype, device)
    proc = popen(argv)
    assert proc.stdout is not None and proc.stderr is not None
    drain = Drain(cast(BinaryIO, proc.stderr))
    drain.start()
    head = proc.stdout.read(HEAD)
    reader = cast(BinaryIO, _Prefixed(head, cast(BinaryIO, proc.stdout)))
    info = parse_header(fmt, head)
    image = ImageStream(fmt, reader, info or ImageInfo(0, 0), proc, drain)
    if info is None:
        if not head:
            image.finish()  # it failed before writing anything: its own error says why
        image.kill()
        raise MkrecError(
            f"{argv[0]} on {device}: the image does not start with the {fmt} header mkrec knows",
            hint=f"command: {' '.join(argv)}",
        )
    log.info("    %s image of %s: %d of %d bytes in use", fmt, device, info.used, info.fs_size)
    return image
