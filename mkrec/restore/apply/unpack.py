"""Putting data back: a tar stream unpacked into a mounted filesystem, an image written onto its
node (block for block, or through partclone / ntfsclone for their formats) and its file system
grown to fill a larger node. Both read the stream from the backup set through the RestoreSet
(mkrec.restore.decide.source)."""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shlex
import subprocess
from pathlib import Path
from typing import BinaryIO, cast

from mkrec.backup.extract import remove_untrusted, tar_extract_argv
from mkrec.backup.imaging import NTFSRESIZE, Drain, check_tool, image_format, needed_bytes, restore_argv
from mkrec.backup.manifest import ImageFormat, StreamRecord
from mkrec.errors import MkrecError
from mkrec.progress import Progress
from mkrec.restic.restoreset import ResticSet
from mkrec.restore.decide.source import Damage, RestoreSet
from mkrec.runner import popen, run, wait_checked
from mkrec.sizes import format_size

log = logging.getLogger("mkrec.restore")

CHUNK = 1 << 20
GROW_SLACK = 1 << 20  # a node at most this much larger than the saved file system is left as it is
# file systems that grow only while mounted: the command a person runs on the mount point
GROW_MOUNTED = {"xfs": "xfs_growfs MOUNTPOINT", "btrfs": "btrfs filesystem resize max MOUNTPOINT"}


def unpack_tar(reader: RestoreSet, name: str, dest: Path, lost: list[str] | None = None) -> int:
    """Feed the stream to tar -x in dest; returns the bytes unpacked. A damaged frame costs only the
    files it holds: they are left out, added to lost (paths below dest), and the rest unpacks."""
    if isinstance(reader, ResticSet):  # a restic set's file system is restored by restic itself
        reader.restore_tree(name, dest)
        return reader.streams[name].size or 0
    progress = Progress(f"Unpacking {name}")
    damage = Damage()
    proc = popen(tar_extract_argv(dest), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    done = _stream_into(reader.open(name, damage), proc, progress)
    # tar goes on past a member it cannot make (a hard link to a file left out): exit 2 then
    wait_checked(proc, ok_codes=(0, 2) if damage else (0,))
    progress.finish()
    record = reader.streams[name]
    for path in damage.zeroed + record.unreadable:
        remove_untrusted(dest / path)
    if lost is not None:
        mountpoint = record.mountpoint or "/"
        lost += [posixpath.normpath(posixpath.join(mountpoint, p)) for p in damage.lost + record.unreadable]
    return done


def require_nothing_lost(lost: list[str]) -> None:
    """After a restore that went on past damaged frames: every file left out named in the log, and
    the run fails (a restore with holes must not look like a good one)."""
    if not lost:
        return
    for path in lost:
        log.error("lost: %s", path)
    raise MkrecError(
        f"{len(lost)} file(s) could not be restored: their bytes in the backup are damaged, or were "
        "unreadable when it was made (each named above with 'lost:', and in the log); everything "
        "else is in place",
        hint="take them from another set: mkrec extract OTHER_SET PATH",
    )


def node_capacity(node: str) -> int:
    fd = os.open(node, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def check_image_fits(record: StreamRecord, node: str) -> int:
    """Refuse a target smaller than the saved file system before anything is written; returns
    the target's size."""
    capacity, need = node_capacity(node), needed_bytes(record)
    if capacity < need:
        raise MkrecError(
            f"{node} ({format_size(capacity)}) is too small for the image {record.name} "
            f"({format_size(need)} needed); nothing was written",
            hint="choose a partition at least as large as the saved one",
        )
    return capacity


def write_image(reader: RestoreSet, name: str, node: str) -> int:
    """Write an image stream onto node in the way its format needs; returns the stream bytes."""
    record = reader.streams.get(name)
    if record is None:
        raise MkrecError(f"stream {name} is not in {reader.set_name}")
    check_image_fits(record, node)
    fmt = image_format(record)
    progress = Progress(f"Writing {name} to {node}", record.size or 0)
    if fmt is ImageFormat.RAW:
        done = _write_blocks(reader, name, node, progress)
    else:
        done = _feed_tool(reader, name, restore_argv(fmt, node), progress)
    progress.finish()
    grow_to_node(record.fstype, node, needed_bytes(record))
    return done


def grow_to_node(fstype: str, node: str, fs_size: int) -> None:
    """An image brings its file system back at the saved size: on a node larger by more than
    GROW_SLACK (restore-fs onto a larger partition or LV, an LV given more room in clone-disk's
    table) ext2/3/4 and NTFS are grown to fill it. Never shrinks; xfs and btrfs grow only while
    mounted (images are not), so a warning names the command; other images keep their size."""
    extra = node_capacity(node) - fs_size
    if extra <= GROW_SLACK:
        return
    unused = format_size(extra)
    if fstype in ("ext2", "ext3", "ext4"):
        code = run(["e2fsck", "-f", "-p", node], check=False).returncode
        if code > 1:  # 1: errors corrected
            raise MkrecError(
                f"{node}: e2fsck -f -p found errors it could not repair (exit {code}); {fstype} not grown",
                hint=f"run e2fsck -f {node} by hand, then resize2fs {node}",
            )
        _grow(fstype, node, ["resize2fs", node])
    elif fstype == "ntfs":
        # one --force skips the question, the other lets a volume flagged for chkdsk be resized
        _grow(fstype, node, [NTFSRESIZE, "--force", "--force", "--no-progress-bar", node])
    elif fstype in GROW_MOUNTED:
        log.warning(
            "warning: %s: the %s file system keeps its saved size (%s unused); once mounted: %s",
            node, fstype, unused, GROW_MOUNTED[fstype],
        )  # fmt: skip
        return
    else:
        log.info("    %s: the %s image keeps its saved size (%s unused)", node, fstype, unused)
        return
    log.info("    %s: %s grown by %s to fill it", node, fstype, unused)


def _grow(fstype: str, node: str, argv: list[str]) -> None:
    try:
        run(argv)
    except MkrecError as err:
        raise MkrecError(
            f"{node}: growing its {fstype} file system to fill it failed: {err.message}",
            hint=f"the image is written at its saved size; to grow it run {shlex.join(argv)}",
        ) from None


def _write_blocks(reader: RestoreSet, name: str, node: str, progress: Progress) -> int:
    """Block for block; refuses an image larger than the node."""
    done = 0
    fd = os.open(node, os.O_WRONLY)
    try:
        capacity = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        with reader.open(name) as src:
            while chunk := src.read(CHUNK):
                if done + len(chunk) > capacity:
                    raise MkrecError(
                        f"{node}: the image {name} is larger than the partition ({capacity} bytes)"
                    )
                os.write(fd, chunk)
                done += len(chunk)
                progress.update(done)
        os.fsync(fd)
    finally:
        os.close(fd)
    return done


def _feed_tool(reader: RestoreSet, name: str, argv: list[str], progress: Progress) -> int:
    """The decompressed image into the restoring tool's stdin; its messages (ntfsclone prints
    them on stdout when writing a device) are drained and its failure is one line."""
    proc = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    drains = [Drain(cast(BinaryIO, proc.stdout)), Drain(cast(BinaryIO, proc.stderr))]
    for d in drains:
        d.start()
    done = _stream_into(reader.open(name), proc, progress)
    check_tool(proc, drains)
    return done


def _stream_into(src: BinaryIO, proc: subprocess.Popen[bytes], progress: Progress) -> int:
    """The decompressed stream into proc's stdin; the bytes written. A damaged stream kills proc:
    tar or the imaging tool must not finish (and report success on) what it was given."""
    assert proc.stdin is not None
    done = 0
    try:
        with src:
            while chunk := src.read(CHUNK):
                proc.stdin.write(chunk)
                done += len(chunk)
                progress.update(done)
    except BrokenPipeError:
        pass  # the tool stopped reading: its exit status says why
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    return done
