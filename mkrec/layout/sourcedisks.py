"""Which disks a backup covers: the configured [source] disks, or every disk holding a file system
mounted under [source] root. The layout capture and the preflight both ask it."""

from __future__ import annotations

from pathlib import Path

from mkrec.config import Config
from mkrec.layout import parse
from mkrec.runner import run_json

SYS_BLOCK = parse.SYS_BLOCK
LSBLK = ["lsblk", "-J", "-b", "-O", "-l"]


def block_devices(sys_block: Path = SYS_BLOCK) -> dict[str, parse.BlockDev]:
    """Every block device with all its parents: lsblk's, the kernel's (every member of a RAID, every
    PV: Debian 12's lsblk -l names one) and a degraded array's members that are here but out of it."""
    devs = parse.parse_lsblk(run_json(LSBLK))
    parse.add_slaves(devs, sys_block)
    parse.add_absent_members(devs, sys_block)
    return devs


def disks_to_back_up(config: Config, sys_block: Path = SYS_BLOCK) -> list[str]:
    """The configured disks, or every disk holding a filesystem mounted under [source] root."""
    if config.source.disks:
        return list(config.source.disks)
    devs = block_devices(sys_block)
    partitioned = {p for dev in devs.values() if dev.type == "part" for p in dev.parents}

    def is_disk(k: str) -> bool:
        # A partitioned loop device is a disk image (tests, VM images); an unpartitioned one
        # (a snap, a mounted ISO) is not a disk to rebuild.
        return devs[k].type == "disk" or (devs[k].type == "loop" and k in partitioned)

    def tops(k: str, seen: frozenset[str] = frozenset()) -> set[str]:
        ups = [p for p in devs[k].parents if p in devs and p not in seen]
        return {k} if not ups else set().union(*(tops(up, seen | {k}) for up in ups))

    root = str(config.source.root).rstrip("/")
    found: list[str] = []
    for dev in devs.values():
        if any(m == (root or "/") or m.startswith(root + "/") for m in dev.mountpoints):
            found += [f"/dev/{top}" for top in sorted(tops(dev.kname)) if is_disk(top)]
    return list(dict.fromkeys(found))
