"""start-restore and clone-disk once the plan is confirmed: the steps in order, readable in one
place. Each step is journaled; a rerun skips what finished."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.layout.model import BootLoader, VolumeGroup
from mkrec.restore.apply.argv import MKFS_TYPES, mkfs_argv
from mkrec.restore.apply.bootloader import install_boot
from mkrec.restore.apply.fstab import fix_crypttab, fix_fstab
from mkrec.restore.apply.journal import ON_DISK, Journal, journal_in_tmp, read_steps
from mkrec.restore.apply.layers import LuksKey, activate_layer, make_layer
from mkrec.restore.apply.mounts import mount_all, mount_argv, mounts_below, umount_all, where
from mkrec.restore.apply.runlog import RunLog
from mkrec.restore.apply.steps import Steps
from mkrec.restore.apply.tables import write_table
from mkrec.restore.apply.unpack import require_nothing_lost, unpack_tar, write_image
from mkrec.restore.ask import Input
from mkrec.restore.decide.plan import FsTarget, Plan
from mkrec.restore.decide.present import fs_identity
from mkrec.restore.decide.source import RestoreSet
from mkrec.restore.decide.stack import layers
from mkrec.runner import run

log = logging.getLogger("mkrec.restore")


def steps_on_disk(plan: Plan, root: Path) -> list[str]:
    """After a power loss /tmp is empty: the journal on the restored root filesystem (recognised by
    its saved UUID) tells what finished."""
    target = plan.target("/")
    if target is None or not target.saved.uuid:
        return []
    if fs_identity(target.node) != (target.saved.fstype, target.saved.uuid):
        return []
    if str(root) in mounts_below(root):
        return read_steps(root / ON_DISK, plan.id)
    with tempfile.TemporaryDirectory(prefix="mkrec-journal-") as tmp:
        if run(mount_argv(target.saved.fstype, target.node, tmp, "ro"), check=False).returncode:
            return []
        try:
            return read_steps(Path(tmp) / ON_DISK, plan.id)
        finally:
            run(["umount", tmp], check=False)


def open_journal(plan: Plan, root: Path) -> Journal:
    tmp = journal_in_tmp(plan.id)
    resumed = [] if read_steps(tmp, plan.id) else steps_on_disk(plan, root)
    journal = Journal(plan.id, [tmp], resumed)
    if not journal.steps:
        umount_all(root)  # a fresh start: nothing of an older attempt stays mounted
    return journal


def make_fs(target: FsTarget) -> None:
    saved = target.saved
    run(mkfs_argv(saved.fstype, target.node, saved.uuid, saved.label))


def uuid_specs(plan: Plan) -> dict[str, str]:
    """Device names in fstab/crypttab may not exist any more: they become the saved UUIDs."""
    return {f.saved.device: f"UUID={f.saved.uuid}" for f in plan.filesystems if f.saved.uuid}


def fix_system_files(
    root: Path, specs: Mapping[str, str], new_types: Mapping[str, str] | None = None
) -> None:
    """The restored system's fstab and crypttab follow what changed. specs: old first field -> new
    one ("/dev/sda3" -> "UUID=..."); new_types: mount point -> the type it was made as now."""
    for name in ("fstab", "crypttab"):
        path = root / "etc" / name
        if not path.is_file():
            continue
        old = path.read_text()
        text, changes = fix_fstab(old, specs, new_types) if name == "fstab" else fix_crypttab(old, specs)
        for change in changes:
            log.info("    %s: %s", name, change)
        if changes:
            path.write_text(text)


def restore_disks(
    plan: Plan, reader: RestoreSet, root: Path, ask_each: Input | None = None, key: LuksKey | None = None
) -> None:
    with RunLog() as runlog:
        journal = open_journal(plan, root)
        steps = Steps(journal, plan.action, ask_each)
        try:
            _run(plan, reader, root, steps, journal, runlog, key)
        finally:
            if str(root) in mounts_below(root):
                runlog.detach()
                umount_all(root)


def _run(
    plan: Plan,
    reader: RestoreSet,
    root: Path,
    steps: Steps,
    journal: Journal,
    runlog: RunLog,
    key: LuksKey | None,
) -> None:
    for d in plan.disks:
        steps.run(
            f"table:{d.device}", f"Partition table on {d.device}", partial(write_table, d.device, d.table)
        )
    nodes = plan.nodes()
    for layer in layers(plan.system.raids, plan.vgs, plan.system.luks):
        kind = type(layer).__name__
        metadata = plan.vg_metadata.get(layer.name, "") if isinstance(layer, VolumeGroup) else ""
        steps.run(
            f"layer:{kind}:{layer.name}",
            f"{kind} {layer.name}",
            partial(make_layer, layer, nodes, key, run, metadata),
            again=partial(activate_layer, layer, nodes, key, run),
        )
    for f in plan.filesystems:
        if f.saved.raw:
            steps.run(
                f"raw:{f.node}",
                f"Image {f.saved.raw} onto {f.node}",
                partial(write_image, reader, f.saved.raw, f.node),
            )
        elif f.saved.fstype in MKFS_TYPES:
            steps.run(f"mkfs:{f.node}", f"{f.saved.fstype} on {f.node}", partial(make_fs, f))
        else:
            log.warning("warning: %s: %s is not recreated (no tool for it)", f.node, f.saved.fstype)
    mounted = [t for fs in plan.system.mounted_in_order() if (t := plan.target(fs.mountpoint)) and fs.stream]
    if plan.target("/") is None or not mounted:
        raise MkrecError("the saved layout has no root filesystem with a backup stream")
    mount_all(mounted, root)
    journal.add_path(root / ON_DISK)
    runlog.to_disk(root)
    lost: list[str] = []
    for t in mounted:
        dest = where(root, t.saved.mountpoint)
        steps.run(
            f"unpack:{t.saved.mountpoint}",
            f"Unpack {t.saved.mountpoint}",
            partial(unpack_tar, reader, t.saved.stream, dest, lost),
        )
    steps.run("fstab", "fstab and crypttab", partial(fix_system_files, root, uuid_specs(plan)))
    for boot in plan.system.boots:
        steps.run(*boot_step(boot), partial(install_boot, plan, boot, root))
    journal.complete()
    require_nothing_lost(lost)
    log.info("Restore finished; log in %s", runlog.file)


def boot_step(boot: BootLoader) -> tuple[str, str]:
    """The journal id and title of a boot loader's step: one per disk (or ESP, or directory), so
    that two disks each booting with extlinux are two steps, each resumed on its own."""
    where = boot.disk or boot.esp or boot.directory or ""
    return f"boot:{boot.kind}:{where}", f"Boot loader {boot.kind}" + (f" on {where}" if where else "")
