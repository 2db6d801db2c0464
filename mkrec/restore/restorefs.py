"""restore-fs: one saved filesystem onto a chosen partition or LV, optionally as another type;
nothing else is touched. An imaged filesystem (NTFS, [source] raw) is written back as its image,
as the type it was. The saved UUID is kept when the new type can carry it and no other device
here has it (two filesystems with one UUID confuse mount and GRUB); the mounted system's fstab
follows the new UUID and type. The work runs as journaled steps, like start and clone: a rerun
after a failure skips what finished."""

from __future__ import annotations

import logging
import tempfile
import uuid as uuidlib
from functools import partial
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.remote import Source
from mkrec.restic.spec import ResticSource
from mkrec.restore import ask
from mkrec.restore.actions import TARGET
from mkrec.restore.apply.argv import MKFS_TYPES, mkfs_argv, uuid_fits
from mkrec.restore.apply.engine import fix_system_files
from mkrec.restore.apply.journal import Journal, journal_in_tmp
from mkrec.restore.apply.mounts import mount_argv
from mkrec.restore.apply.steps import Steps
from mkrec.restore.apply.unpack import check_image_fits, require_nothing_lost, unpack_tar, write_image
from mkrec.restore.decide.layout_adapter import load_saved
from mkrec.restore.decide.mapping import parse_map
from mkrec.restore.decide.model import SavedFs, SavedSystem
from mkrec.restore.decide.opening import open_source
from mkrec.restore.decide.plan import stable_id
from mkrec.restore.decide.present import (
    device_size,
    disk_holding,
    find_protected,
    fs_identity,
    is_read_only,
    present_disks,
)
from mkrec.restore.decide.resize import min_fs_bytes
from mkrec.restore.decide.source import RestoreSet
from mkrec.runner import run
from mkrec.sizes import format_size

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
        if disk.readonly or is_read_only(node):
            raise MkrecError(f"refusing to write {node}: it is read-only", hint="choose a writable partition")
        reason = protected.get(disk.path, "")
        if reason in ("holds the backup set", "the rescue system booted from it"):
            raise MkrecError(f"refusing to write {node}: its disk {disk.path} {reason}")
    mounted = run(["findmnt", "-n", "-o", "TARGET", "-S", node], check=False).stdout.strip()
    if mounted:
        raise MkrecError(f"refusing to write {node}: it is mounted on {mounted}", hint=f"umount {mounted}")


def restore_fs(
    source: Source | Path | ResticSource | None,
    layout: Path | None,
    maps: list[str],
    target: Path = TARGET,
    *,
    yes: bool = False,
    as_type: str = "",
    identity: Path | None = None,
) -> int:
    """maps: exactly one SAVED=DEV (a saved device or mount point, and the node to write); target:
    where the system whose fstab follows is mounted; as_type: make it as another filesystem type."""
    if len(maps) != 1:
        raise MkrecError("restore fs needs exactly one --map SAVED=DEV", hint="e.g. --map sda3=/dev/vdb1")
    ((name, node),) = parse_map(maps).items()
    asker = ask.person(yes)
    with open_source(source, asker, identity) as reader:
        saved = find_saved_fs(load_saved(reader, layout), name)
        if saved.raw:
            _restore_image(reader, saved, name, node, as_type, yes, asker)
        else:
            _restore_files(reader, saved, name, node, target, as_type or saved.fstype, yes, asker)
    return 0


def fs_steps(set_id: str, saved: SavedFs, node: str, fstype: str) -> Steps:
    """The journal of restoring saved onto node as fstype: a rerun of the same finds what finished."""
    job = stable_id({"set": set_id, "action": "fs", "saved": saved.device, "node": node, "fstype": fstype})
    return Steps(Journal(job, [journal_in_tmp(job)]), "fs")


def _restore_files(
    reader: RestoreSet,
    saved: SavedFs,
    name: str,
    node: str,
    target: Path,
    fstype: str,
    yes: bool,
    asker: ask.Input | None,
) -> None:
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
    steps = fs_steps(reader.set_id, saved, node, fstype)
    made = f"mkfs:{node}"
    # Resumed after the filesystem was made: it keeps the UUID it got then (a new one may be random).
    uuid = (
        fs_identity(node)[1]
        if steps.journal.done(made)
        else new_uuid(fstype, saved.uuid, present_uuids(node))
    )
    ask.confirm_erase(
        f"ERASE {node} ({format_size(size)}): make {fstype} label={saved.label or '-'} uuid={uuid}, "
        f"unpack {saved.stream} ({saved.mountpoint or name}, {format_size(saved.used)} used)",
        yes,
        asker,
    )
    steps.run(made, f"{fstype} on {node}", partial(_make_fs, node, fstype, uuid, saved.label))
    lost: list[str] = []
    steps.run(
        f"unpack:{node}", f"Unpack {saved.stream}", partial(_unpack, reader, saved.stream, node, fstype, lost)
    )
    if (target / "etc" / "fstab").is_file():
        specs = {saved.device: f"UUID={uuid}"}
        if saved.uuid:
            specs[f"UUID={saved.uuid}"] = f"UUID={uuid}"
        types = {saved.mountpoint: fstype} if saved.mountpoint else {}
        steps.run("fstab", "fstab and crypttab", partial(fix_system_files, target, specs, types))
    else:
        log.info("    no mounted system at %s: fstab left alone", target)
    steps.journal.complete()
    require_nothing_lost(lost)
    log.info("Restored %s onto %s as %s (UUID %s)", name, node, fstype, uuid)


def _make_fs(node: str, fstype: str, uuid: str, label: str) -> None:
    run(["wipefs", "-a", "-q", node])
    run(mkfs_argv(fstype, node, uuid, label))


def _unpack(reader: RestoreSet, stream: str, node: str, fstype: str, lost: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="mkrec-fs-") as tmp:
        run(mount_argv(fstype, node, tmp))
        try:
            unpack_tar(reader, stream, Path(tmp), lost)
        finally:
            run(["umount", tmp])


def _restore_image(
    reader: RestoreSet, saved: SavedFs, name: str, node: str, as_type: str, yes: bool, asker: ask.Input | None
) -> None:
    """The image goes back as it was: same type, UUID and label; fstab needs no change."""
    if as_type and as_type != saved.fstype:
        raise MkrecError(
            f"--as-type {as_type}: {name} was saved as a {saved.fstype} image and restores only as that",
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
        yes,
        asker,
    )
    steps = fs_steps(reader.set_id, saved, node, saved.fstype)
    steps.run(f"raw:{node}", f"Image {saved.raw} onto {node}", partial(write_image, reader, saved.raw, node))
    steps.journal.complete()
    log.info("Restored %s onto %s (%s image, UUID %s)", name, node, record.image or "raw", saved.uuid or "-")
