"""Mounting the restored filesystems under the target root in mount-point order, and unmounting
everything below it again (also what an interrupted run left mounted)."""

from __future__ import annotations

import os
from pathlib import Path

from mkrec.restore.decide.plan import FsTarget
from mkrec.runner import run


def _unescape(path: str) -> str:
    # /proc/mounts writes spaces and friends as octal escapes
    return path.encode().decode("unicode_escape") if "\\" in path else path


def mounts_below(root: Path, proc_mounts: str | None = None) -> list[str]:
    """Mount points at or below root, deepest first."""
    text = proc_mounts if proc_mounts is not None else Path("/proc/mounts").read_text()
    base = os.path.realpath(root)
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            target = _unescape(fields[1])
            if target == base or target.startswith(base.rstrip("/") + "/"):
                found.append(target)
    return sorted(set(found), key=lambda m: (m.count("/"), m), reverse=True)


def where(root: Path, mountpoint: str) -> Path:
    return root / mountpoint.lstrip("/")


def mount_all(targets: list[FsTarget], root: Path) -> None:
    """Mount each filesystem (parents first); those already mounted there are left as they are."""
    root.mkdir(parents=True, exist_ok=True)
    for t in targets:
        path = where(root, t.saved.mountpoint)
        path.mkdir(parents=True, exist_ok=True)
        if os.path.realpath(path) in mounts_below(path):
            continue
        run(mount_argv(t.saved.fstype, t.node, path))


def mount_argv(fstype: str, node: str, path: Path | str, *options: str) -> list[str]:
    """The restore's own mount of a file system it made. xfs refuses a second file system with a
    UUID already mounted ("duplicate UUID"), which is exactly the case when a running system is
    cloned onto a new disk: nouuid lets the copy mount; its UUID is unchanged."""
    opts = [*options, *(["nouuid"] if fstype == "xfs" else [])]
    return ["mount", *(["-o", ",".join(opts)] if opts else []), "-t", fstype, node, str(path)]


def umount_all(root: Path) -> None:
    for target in mounts_below(root):
        run(["umount", target])


def bind_system(root: Path) -> list[Path]:
    """/dev, /proc, /sys inside the restored root, for commands run in its chroot."""
    done = []
    for name in ("dev", "proc", "sys"):
        path = root / name
        path.mkdir(exist_ok=True)
        run(["mount", "--bind", f"/{name}", path])
        done.append(path)
    return done


def unbind(paths: list[Path]) -> None:
    for path in reversed(paths):
        run(["umount", "-l", path], check=False)
