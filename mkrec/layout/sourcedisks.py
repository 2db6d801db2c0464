"""Which disks a backup covers: the configured [source] disks, or every disk holding a file system
mounted under [source] root. The layout capture and the preflight both ask it."""

from __future__ import annotations

from pathlib import Path

from mkrec.config import Config
from mkrec.runner import run_json

SYS_BLOCK = Path("/sys/class/block")


def slaves(path: str, sys_block: Path = SYS_BLOCK) -> set[str]:
    """The devices a stacked device (md, dm) is built on, from sysfs: lsblk -l names only one
    parent of a RAID1 on Debian 12's util-linux, which left the second disk out of the capture."""
    try:
        return {f"/dev/{d.name}" for d in (sys_block / Path(path).name / "slaves").iterdir()}
    except OSError:
        return set()


def disks_to_back_up(config: Config, sys_block: Path = SYS_BLOCK) -> list[str]:
    """The configured disks, or every disk holding a filesystem mounted under [source] root.

    Parentage comes from lsblk's PKNAME in list mode (without udev, lsblk's tree can show
    partitions flat) and, for stacked devices, from sysfs (every member of a RAID, every PV).
    """
    if config.source.disks:
        return list(config.source.disks)
    rows = run_json(["lsblk", "-J", "-l", "-p", "-o", "PATH,TYPE,PKNAME,MOUNTPOINTS"]).get("blockdevices", [])
    parents: dict[str, set[str]] = {}
    types: dict[str, str] = {}
    for row in rows:
        types[row["path"]] = row.get("type") or ""
        parents.setdefault(row["path"], set()).update(slaves(row["path"], sys_block))
        if row.get("pkname"):
            parents[row["path"]].add(row["pkname"])
    partitioned = {p for path, ps in parents.items() if types.get(path) == "part" for p in ps}

    def is_disk(path: str) -> bool:
        # A partitioned loop device is a disk image (tests, VM images); an unpartitioned one
        # (a snap, a mounted ISO) is not a disk to rebuild.
        return types.get(path) == "disk" or (types.get(path) == "loop" and path in partitioned)

    def tops(path: str, seen: frozenset[str] = frozenset()) -> set[str]:
        ups = parents.get(path, set()) - seen
        return {path} if not ups else set().union(*(tops(up, seen | {path}) for up in ups))

    root = str(config.source.root).rstrip("/")
    found: list[str] = []
    for row in rows:
        mounts = [m for m in row.get("mountpoints") or [] if isinstance(m, str)]
        if any(m == (root or "/") or m.startswith(root + "/") for m in mounts):
            found += [top for top in sorted(tops(row["path"])) if is_disk(top) and top not in found]
    return found
