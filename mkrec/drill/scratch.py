"""The drill's scratch directory: locked against a second drill, checked for free space, holding
only the drill's own sparse files, and removed afterwards."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from mkrec.errors import die
from mkrec.sizes import format_size

LOCK = "drill.lock"
RUN = "run"
SLACK = 256 * 1024**2  # boot files, firmware variables, file system metadata of the restore


def needed_space(restore_bytes: int) -> int:
    """What the sparse disks grow to: the restored data (the streams' uncompressed size) plus a tenth
    for the file systems' own blocks, plus the boot files."""
    return restore_bytes + restore_bytes // 10 + SLACK


@contextlib.contextmanager
def scratch(workdir: Path, need: int) -> Iterator[Path]:
    """Yield an empty directory below workdir; refuse when another drill holds workdir's lock or
    when the file system lacks `need` bytes. Everything the drill made is removed on the way out."""
    created = not workdir.exists()
    try:
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(workdir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        die(f"cannot use {workdir} for the drill: {exc.strerror}", hint="set [drill] workdir")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            die(
                f"another mkrec drill (pid {other}) is running in {workdir}",
                hint="wait for it, or give this one another [drill] workdir",
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        run_dir = workdir / RUN
        shutil.rmtree(run_dir, ignore_errors=True)  # left by a drill that was killed: the lock is ours
        free = shutil.disk_usage(workdir).free
        if free < need:
            die(
                f"{workdir} has {format_size(free)} free; the drill needs {format_size(need)}",
                hint="free some space or set [drill] workdir to a larger file system",
            )
        run_dir.mkdir(mode=0o700)
        try:
            yield run_dir
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            if created:
                (workdir / LOCK).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    workdir.rmdir()
    finally:
        os.close(fd)
