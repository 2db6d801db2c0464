"""start-restore and clone-disk: whole disks rebuilt from a backup set. Each reads the set and the
saved layout, decides the plan (mkrec.restore.decide.plan), shows it, asks, and runs its journaled
steps (mkrec.restore.apply.engine)."""

from __future__ import annotations

import dataclasses
import getpass
import logging
import sys
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.remote import Source
from mkrec.restic.spec import ResticSource
from mkrec.restore import ask
from mkrec.restore.actions import TARGET
from mkrec.restore.apply.engine import restore_disks
from mkrec.restore.apply.layers import LuksKey
from mkrec.restore.decide.layout_adapter import load_saved, load_vg_metadata
from mkrec.restore.decide.mapping import parse_map
from mkrec.restore.decide.opening import open_source
from mkrec.restore.decide.plan import Plan, edit_clone_tables, make_plan, render_plan
from mkrec.restore.decide.present import (
    devices_with_uuid,
    find_protected,
    present_disks,
    refuse_duplicate_btrfs,
)
from mkrec.restore.decide.source import RestoreSet
from mkrec.runner import run

log = logging.getLogger("mkrec.restore")


def start(
    source: Source | Path | ResticSource | None,
    layout: Path | None,
    maps: list[str],
    target: Path = TARGET,
    *,
    yes: bool = False,
    after: str = "",
    luks_key: Path | None = None,
    luks_iterations: int = 0,
    identity: Path | None = None,
) -> int:
    """The disks as they were, on same-or-larger disks: the saved tables, LVM metadata and UUIDs.
    after: unattended, what to do once it is done (poweroff | reboot; else nothing)."""
    asker = ask.person(yes)
    with open_source(source, asker, identity) as reader:
        plan = _plan(reader, "start", layout, maps, target, asker)
        key = LuksKey(luks_key, pbkdf_iterations=luks_iterations)
        _confirm_and_restore(plan, reader, target, yes, asker, key)
    finish_unattended(after)
    return 0


def clone(
    source: Source | Path | ResticSource | None,
    layout: Path | None,
    maps: list[str],
    target: Path = TARGET,
    *,
    yes: bool = False,
    after: str = "",
    luks_key: Path | None = None,
    luks_iterations: int = 0,
    resize_swap: bool = False,
    identity: Path | None = None,
) -> int:
    """Saved disks onto disks of any size: partitions and LVs recomputed; on a terminal the person
    may edit the tables and LV sizes first, and skip steps."""
    asker = ask.person(yes)
    with open_source(source, asker, identity) as reader:
        plan = _plan(reader, "clone", layout, maps, target, asker, resize_swap)
        if asker is not None:
            print(render_plan(plan))
            plan = edit_clone_tables(plan, asker, resize_swap)
        key = LuksKey(luks_key, pbkdf_iterations=luks_iterations)
        _confirm_and_restore(plan, reader, target, yes, asker, key, ask_each=asker)
    finish_unattended(after)
    return 0


def _plan(
    reader: RestoreSet,
    action: str,
    layout: Path | None,
    maps: list[str],
    target: Path,
    asker: ask.Input | None,
    resize_swap: bool = False,
) -> Plan:
    """The plan for the saved layout and the disks present here; those that must not be written (the
    set's, the boot disk, disks in use) are refused. The saved LVM metadata goes along: start gives
    it back, clone makes its VGs anew."""
    system = load_saved(reader, layout)
    present = present_disks()
    plan = make_plan(
        system,
        action,
        present,
        parse_map(maps),
        find_protected(present, reader.nodes(), target),
        choose=ask.make_chooser(asker) if asker is not None else None,
        resize_swap=resize_swap,
        vg_metadata=load_vg_metadata(reader, layout, system),
    )
    btrfs = [(f.saved.device, f.node, f.saved.uuid) for f in plan.filesystems if f.saved.fstype == "btrfs"]
    refuse_duplicate_btrfs(btrfs, {uuid: devices_with_uuid(uuid) for _s, _n, uuid in btrfs if uuid})
    return plan


def _confirm_and_restore(
    plan: Plan,
    reader: RestoreSet,
    target: Path,
    yes: bool,
    asker: ask.Input | None,
    given: LuksKey,
    ask_each: ask.Input | None = None,
) -> None:
    """given: --luks-key and --luks-pbkdf-iterations as given (the passphrase is asked for here)."""
    ask.confirm_erase(render_plan(plan), yes, asker)
    restore_disks(plan, reader, target, ask_each, new_luks_key(plan, given))


def new_luks_key(plan: Plan, given: LuksKey, console: bool | None = None) -> LuksKey | None:
    """The new passphrase for the LUKS containers: the --luks-key file, else asked (twice) on the
    terminal — also with --yes, which skips confirmations but cannot make up a passphrase (an
    unattended restore from the boot menu asks on the console); None when there is no container or
    no terminal (the LUKS step stops with what to do)."""
    if not plan.system.luks:
        return None
    if given.file is not None:
        if not given.file.is_file():
            raise MkrecError(f"--luks-key {given.file}: no such file; nothing was written")
        return dataclasses.replace(given, file=given.file.resolve())
    if not (sys.stdin.isatty() if console is None else console):
        return None
    names = ", ".join(c.name for c in plan.system.luks)
    first = getpass.getpass(f"New passphrase for the LUKS container(s) {names}: ")
    if not first or first != getpass.getpass("The same passphrase again: "):
        raise MkrecError("the passphrases are empty or differ; nothing was written")
    return LuksKey(passphrase=first, pbkdf_iterations=given.pbkdf_iterations)


def finish_unattended(after: str) -> None:
    """Autorun: nobody is at the console, so end the way the config says."""
    if after in ("poweroff", "reboot"):
        log.info("Restore done: %s", after)
        run(["sync"], check=False)
        run([after, "-f"], check=False)
