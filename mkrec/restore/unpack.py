"""Putting data back: a tar stream unpacked into a mounted filesystem, a raw image written onto its
node. Both read the stream from the backup set through the RestoreSet (mkrec.restore.source)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from mkrec.backup.extract import tar_extract_argv
from mkrec.errors import MkrecError
from mkrec.progress import Progress
from mkrec.restore.source import RestoreSet
from mkrec.runner import popen, wait_checked

CHUNK = 1 << 20


def unpack_tar(reader: RestoreSet, name: str, dest: Path) -> int:
    """Feed the stream to tar -x in dest; returns the bytes unpacked."""
    progress = Progress(f"Unpacking {name}")
    done = 0
    proc = popen(tar_extract_argv(dest), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stdin is not None
    try:
        with reader.open(name) as src:
            while chunk := src.read(CHUNK):
                proc.stdin.write(chunk)
                done += len(chunk)
                progress.update(done)
    except BrokenPipeError:
        pass  # tar stopped early: wait_checked reports why
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    wait_checked(proc)
    progress.finish()
    return done


def write_raw(reader: RestoreSet, name: str, node: str) -> int:
    """Write an image back block for block; refuses an image larger than the node."""
    progress = Progress(f"Writing {name} to {node}")
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
    progress.finish()
    return done
