"""restore-fs: one saved filesystem onto a chosen partition or LV, optionally as another type;
nothing else is touched. An imaged filesystem (NTFS, [source] raw) is written back as its image,
as the type it was. The saved UUID is kept when the new type can carry it and no other device
here has it (two filesystems with one UUID confuse mount and GRUB); the mounted system's fstab
follows the new UUID and type."""

from __future__ import annotations

import logging
import tempfile
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING

from mkrec.errors import MkrecError
from mkrec.restore import ask
from mkrec.restore.apply.argv import MKFS_TYPES, mkfs_argv, uuid_fits
from mkrec.restore.apply.fstab import fix_fstab
from mkrec.restore.apply.unpack import check_image_fits, unpack_tar, write_image
from mkrec.restore.decide.layout_adapter import load_saved
from mkrec.restore.decide.mapping import parse_map
from mkrec.restore.decide.model import SavedFs, SavedSystem
from mkrec.restore.decide.present import device_size, disk_holding, find_protected, present_disks
from mkrec.restore.decide.resize import min_fs_bytes
from mkrec.restore.decide.source import RestoreSet, open_restore_set
from mkrec.runner import run
from mkrec.sizes import format_size

if TYPE_CHECKING:
    from mkrec.restore.command import Request

log = logging.getLogger("mkrec.restore")


def find_saved_fs(system: SavedSystem, name: str) -> SavedFs:
    """A saved filesystem by its device ("sda3", "/dev/sda3") or its mount point ("/data")."""
    for fs in system.filesystems:
        if name.startswith("/") and not name.startswith("/dev/") and fs.mountpoint == name:
            return fs
        if fs.device.removeprefix("/dev/") == name.removeprefix("/dev/"):
            return fs
    known = ", ".join(
        f"{f.device.removeprefix('/dev/')} ({f.mountpoint or f.fstype})" for f in system.filesystems
    )
    raise MkrecError(f"there is no saved filesystem {name}", hint=f"saved: {known}")


def new_uuid(fstype: str, saved_uuid: str, taken: set[str]) -> str:
    if saved_uuid and uuid_fits(fstype, saved_uuid) and saved_uuid.lower() not in taken:
        return saved_uuid
    if fstype == "vfat":
        return uuidlib.uuid4().hex[:8].upper()
    return str(uuidlib.uuid4())


def present_uuids(exclude: str) -> set[str]:
    out = run(["blkid", "-c", "/dev/null", "-s", "UUID", "-o", "export"], check=False).stdout
    taken: set[str] = set()
    device = ""
    for line in out.splitlines():
        if line.startswith("DEVNAME="):
            device = line.split("=", 1)[1]
        elif line.startswith("UUID=") and device != exclude:
            taken.add(line.split("=", 1)[1].lower())
    return taken


def check_target(node: str, sources: list[Path]) -> None:
    """Only the chosen node is written: it must not be in use, nor on the backup's or boot disk."""
    disks = present_disks()
    holders = disk_holding(node, disks)
    if not holders:
        raise MkrecError(f"{node} is not a block device here", hint="see lsblk")
    protected = find_protected(disks, sources, Path("/nonexistent"))
    for disk in holders:
        reason = protected.get(disk.path, "")
        if reason in ("holds the backup set", "the rescue system booted from it"):
            raise MkrecError(f"refusing to write {node}: its disk {disk.path} {reason}")
    mounted = run(["findmnt", "-n", "-o", "TARGET", "-S", node], check=False).stdout.strip()
    if mounted:
        raise MkrecError(f"refusing to write {node}: it is mounted on {mounted}", hint=f"umount {mounted}")


def restore_fs(req: Request, asker: ask.Input | None) -> int:
    if len(req.maps) != 1:
        raise MkrecError("restore fs needs exactly one --map SAVED=DEV", hint="e.g. --map sda3=/dev/vdb1")
    reader = open_restore_set(req.source, asker)
    try:
        return _restore_fs(req, asker, reader)
    finally:
        reader.close()


def _restore_fs(req: Request, asker: ask.Input | None, reader: RestoreSet) -> int:
    system = load_saved(reader, req.layout)
    ((name, node),) = parse_map(list(req.maps)).items()
    saved = find_saved_fs(system, name)
    if saved.raw:
        return _restore_image(req, asker, reader, saved, name, node)
    fstype = req.as_type or saved.fstype
    if fstype not in MKFS_TYPES or fstype == "swap":
        raise MkrecError(
            f"--as-type {fstype}: cannot restore files into it", hint="use ext2/3/4, xfs, btrfs or vfat"
        )
    if not saved.stream:
        raise MkrecError(
            f"saved {name} has no stream in the set", hint="it was not backed up (see mkrec ls SET)"
        )
    check_target(node, reader.nodes())
    size, need = device_size(node), min_fs_bytes(fstype, saved.used)
    if size < need:
        raise MkrecError(
            f"{node} ({format_size(size)}) is too small for {name} as {fstype} ({format_size(need)} needed); "
            "nothing was written",
            hint="choose a larger partition or LV",
        )
    uuid = new_uuid(fstype, saved.uuid, present_uuids(node))
    ask.confirm_erase(
        f"ERASE {node} ({format_size(size)}): make {fstype} label={saved.label or '-'} uuid={uuid}, "
        f"unpack {saved.stream} ({saved.mountpoint or name}, {format_size(saved.used)} used)",
        req.yes,
        asker,
    )
    run(["wipefs", "-a", "-q", node])
    run(mkfs_argv(fstype, node, uuid, saved.label))
    with tempfile.TemporaryDirectory(prefix="mkrec-fs-") as tmp:
        run(["mount", "-t", fstype, node, tmp])
        try:
            unpack_tar(reader, saved.stream, Path(tmp))
        finally:
            run(["umount", tmp])
    update_fstab(req.target, saved, uuid, fstype)
    log.info("Restored %s onto %s as %s (UUID %s)", name, node, fstype, uuid)
    return 0


def _restore_image(
    req: Request, asker: ask.Input | None, reader: RestoreSet, saved: SavedFs, name: str, node: str
) -> int:
    """The image goes back as it was: same type, UUID and label; fstab needs no change."""
    if req.as_type and req.as_type != saved.fstype:
        raise MkrecError(
            f"--as-type {req.as_type}: {name} was saved as a {saved.fstype} image and restores only as that",
            hint="leave out --as-type",
        )
    check_target(node, reader.nodes())
    record = reader.streams[saved.raw]
    size = check_image_fits(record, node)
    if saved.uuid and saved.uuid.lower() in present_uuids(node):
        log.warning("warning: UUID %s is on another device here too: mount by device name", saved.uuid)
    ask.confirm_erase(
        f"ERASE {node} ({format_size(size)}): write the {record.image or 'raw'} image {saved.raw} "
        f"({saved.fstype} label={saved.label or '-'} uuid={saved.uuid or '-'})",
        req.yes,
        asker,
    )
    write_image(reader, saved.raw, node)
    log.info("Restored %s onto %s (%s image, UUID %s)", name, node, record.image or "raw", saved.uuid or "-")
    return 0


def update_fstab(root: Path, saved: SavedFs, uuid: str, fstype: str) -> None:
    fstab = root / "etc" / "fstab"
    if not fstab.is_file():
        log.info("    no mounted system at %s: fstab left alone", root)
        return
    specs = {saved.device: f"UUID={uuid}"}
    if saved.uuid:
        specs[f"UUID={saved.uuid}"] = f"UUID={uuid}"
    types = {saved.mountpoint: fstype} if saved.mountpoint else {}
    text, changes = fix_fstab(fstab.read_text(), specs, types)
    for change in changes:
        log.info("    fstab: %s", change)
    if changes:
        fstab.write_text(text)
