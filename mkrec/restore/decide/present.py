"""The disks present now, and which of them must never be written: the one holding the backup set,
the one the rescue system booted from, and any disk with something mounted or swapped on."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkrec.errors import MkrecError
from mkrec.runner import run, run_json

# The rescue system writes the device it booted from here (its medium may be unmounted by then).
BOOT_DEVICE_FILE = Path("/run/mkrec/boot-device")
# Disk types that are never chosen without an explicit --map (the rescue system's own RAM and loop
# devices, CD drives); `--map` may still name a loop device (that is how tests and images work).
AUTO_TYPES = frozenset({"disk"})


@dataclass(frozen=True)
class PresentDisk:
    path: str
    size: int
    type: str = "disk"
    model: str = ""
    serial: str = ""
    wwn: str = ""
    readonly: bool = False
    nodes: tuple[str, ...] = ()  # every device below it (partitions, md, dm), itself included
    mountpoints: tuple[str, ...] = ()  # of it and everything below it

    def describe(self) -> str:
        ident = " ".join(x for x in (self.model, self.serial) if x)
        from mkrec.sizes import format_size

        return f"{self.path} ({format_size(self.size)}{', ' + ident if ident else ''})"


def _walk(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield node
    for child in node.get("children") or []:
        yield from _walk(child)


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def parse_lsblk(data: Mapping[str, Any]) -> list[PresentDisk]:
    """`lsblk -J -O -b` -> one PresentDisk per top-level device, with what is below it."""
    disks = []
    for top in data.get("blockdevices") or []:
        below = list(_walk(top))
        mounts = tuple(m for n in below for m in (n.get("mountpoints") or [n.get("mountpoint")]) if m)
        disks.append(
            PresentDisk(
                path=_text(top.get("path")) or f"/dev/{_text(top.get('name'))}",
                size=int(top.get("size") or 0),
                type=_text(top.get("type")),
                model=_text(top.get("model")),
                serial=_text(top.get("serial")),
                wwn=_text(top.get("wwn")),
                readonly=bool(top.get("ro")),
                nodes=tuple(_text(n.get("path")) or f"/dev/{_text(n.get('name'))}" for n in below),
                mountpoints=mounts,
            )
        )
    return disks


def is_read_only(node: str) -> bool:
    """The kernel's read-only flag of a block device (a partition may be read-only on its own)."""
    flag = Path("/sys/class/block") / Path(os.path.realpath(node)).name / "ro"
    try:
        return flag.read_text().strip() == "1"
    except OSError:
        return False


def present_disks() -> list[PresentDisk]:
    return parse_lsblk(run_json(["lsblk", "-J", "-O", "-b"]))


def disk_holding(node: str, disks: list[PresentDisk]) -> list[PresentDisk]:
    """The top-level disks a device lives on (two for a RAID1 member's array)."""
    real = os.path.realpath(node) if node.startswith("/dev/") else node
    return [d for d in disks if node in d.nodes or real in d.nodes]


def source_device(path: Path) -> str:
    """The block device a path lives on (findmnt -T), "" when it is not on one (tmpfs, NFS)."""
    data = run_json(["findmnt", "-J", "-n", "-o", "SOURCE", "-T", str(path)], check=False)
    fss = data.get("filesystems") or [{}]
    source = _text(fss[0].get("source"))
    # btrfs subvolumes print /dev/sda2[/@home]
    return source.split("[", 1)[0] if source.startswith("/dev/") else ""


def swap_devices(proc_swaps: str) -> list[str]:
    return [line.split()[0] for line in proc_swaps.splitlines()[1:] if line.strip()]


def protected_disks(
    disks: list[PresentDisk],
    *,
    source_node: str = "",
    boot_node: str = "",
    swaps: list[str] | None = None,
    allowed_mount_root: str = "",
) -> dict[str, str]:
    """Disk path -> why it must not be written. A mount below allowed_mount_root (the restore's own
    target root, left mounted by an interrupted run) does not protect a disk."""
    why: dict[str, str] = {}
    for node, reason in (
        (source_node, "holds the backup set"),
        (boot_node, "the rescue system booted from it"),
    ):
        if node:
            for disk in disk_holding(node, disks):
                why.setdefault(disk.path, reason)
    for node in swaps or []:
        for disk in disk_holding(node, disks):
            why.setdefault(disk.path, f"swap is active on {node}")
    root = allowed_mount_root.rstrip("/")
    for disk in disks:
        foreign = [m for m in disk.mountpoints if not (root and (m == root or m.startswith(root + "/")))]
        if foreign:
            why.setdefault(disk.path, f"{foreign[0]} is mounted from it")
    return why


def find_protected(disks: list[PresentDisk], sources: list[Path], target_root: Path) -> dict[str, str]:
    """protected_disks() with the facts read from this machine; sources: where the backup's
    volumes are read from (block devices, or files and directories on a disk)."""
    source_nodes = [str(p) if is_block(p) else source_device(p) for p in sources]
    boot_node = BOOT_DEVICE_FILE.read_text().strip() if BOOT_DEVICE_FILE.is_file() else ""
    try:
        swaps = swap_devices(Path("/proc/swaps").read_text())
    except OSError:
        swaps = []
    why: dict[str, str] = {}
    for node in source_nodes or [""]:
        found = protected_disks(
            disks, source_node=node, boot_node=boot_node, swaps=swaps, allowed_mount_root=str(target_root)
        )
        why = {**found, **why}
    return why


def is_block(path: Path) -> bool:
    try:
        return stat.S_ISBLK(path.stat().st_mode)
    except OSError:
        return False


def fs_identity(node: str) -> tuple[str, str]:
    """(TYPE, UUID) of what is on a device now, ("", "") when blkid finds nothing."""
    proc = run(["blkid", "-c", "/dev/null", "-o", "export", node], check=False)
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return values.get("TYPE", ""), values.get("UUID", "")


def device_size(node: str) -> int:
    try:
        return int(run(["blockdev", "--getsize64", node]).stdout.strip())
    except ValueError:
        raise MkrecError(f"{node}: cannot read its size", hint="is it a block device?") from None


def devices_with_uuid(uuid: str) -> list[str]:
    """Block devices here whose file system has this UUID (btrfs: its fsid), read from the devices."""
    proc = run(["blkid", "-c", "/dev/null", "-o", "device", "-t", f"UUID={uuid}"], check=False)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def refuse_duplicate_btrfs(targets: list[tuple[str, str, str]], elsewhere: dict[str, list[str]]) -> None:
    """targets: (saved device, new node, UUID) of the btrfs file systems to make with their saved
    UUID; elsewhere: UUID -> devices already holding it. The kernel treats two devices with one
    btrfs fsid as members of one file system: mounting either can write to the other. Refused
    before anything is written."""
    for saved, node, uuid in targets:
        others = [d for d in elsewhere.get(uuid, []) if os.path.realpath(d) != os.path.realpath(node)]
        if others:
            raise MkrecError(
                f"btrfs {uuid} ({saved}) is already on {', '.join(others)} here; a copy with the same "
                "fsid on one machine can corrupt both (nothing was written)",
                hint="detach or wipe that device first, or restore onto another machine",
            )
