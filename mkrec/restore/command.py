"""`mkrec restore start|clone|fs|compare`: from the command line to a confirmed plan and its run.
The CLI handler only builds a Request; this module reads the facts, decides, asks, and runs."""

from __future__ import annotations

import argparse
import getpass
import logging
from dataclasses import dataclass
from pathlib import Path

from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.restore import ask
from mkrec.restore.apply.engine import restore_disks
from mkrec.restore.apply.layers import LuksKey
from mkrec.restore.decide.layout_adapter import load_saved, load_vg_metadata
from mkrec.restore.decide.mapping import parse_map
from mkrec.restore.decide.plan import Plan, edit_clone_tables, make_plan, render_plan
from mkrec.restore.decide.present import find_protected, present_disks
from mkrec.restore.decide.source import RestoreSet, open_restore_set
from mkrec.runner import run

log = logging.getLogger("mkrec.restore")

DEFAULT_TARGET = Path("/mnt/target")


@dataclass(frozen=True)
class Request:
    action: str  # start | clone | fs | compare
    source: Path | None = None
    layout: Path | None = None
    maps: tuple[str, ...] = ()
    yes: bool = False
    target: Path = DEFAULT_TARGET
    as_type: str = ""
    output: Path = Path("/tmp/changed.txt")
    resize_swap: bool = False
    after: str = ""  # unattended: poweroff | reboot | shell once it is done
    luks_key: Path | None = None  # the new LUKS passphrase as a key file
    luks_iterations: int = 0


def request_from_args(ctx: Context, args: argparse.Namespace) -> Request:
    return Request(
        action=args.action,
        source=args.source,
        layout=args.layout,
        maps=tuple(args.map),
        yes=args.yes or args.unattended,
        target=args.target or DEFAULT_TARGET,
        as_type=args.as_type,
        output=args.output or Path("/tmp/changed.txt"),
        resize_swap=args.resize_swap,
        after=str(ctx.config.restore.after) if args.unattended else "",
        luks_key=args.luks_key,
        luks_iterations=args.luks_pbkdf_iterations,
    )


def finish_unattended(after: str) -> None:
    """Autorun: nobody is at the console, so end the way the config says."""
    if after in ("poweroff", "reboot"):
        log.info("Restore done: %s", after)
        run(["sync"], check=False)
        run([after, "-f"], check=False)


def build_plan(req: Request, asker: ask.Input | None) -> tuple[Plan, RestoreSet]:
    reader = open_restore_set(req.source, asker)
    system = load_saved(reader, req.layout)
    present = present_disks()
    protected = find_protected(present, reader.nodes(), req.target)
    chooser = ask.make_chooser(asker) if asker is not None else None
    plan = make_plan(
        system,
        req.action,
        present,
        parse_map(list(req.maps)),
        protected,
        choose=chooser,
        resize_swap=req.resize_swap,
        vg_metadata=load_vg_metadata(reader, req.layout, system) if req.action == "start" else None,
    )
    return plan, reader


def luks_key(req: Request, plan: Plan, asker: ask.Input | None) -> LuksKey | None:
    """The new passphrase for the LUKS containers: --luks-key, else asked (twice) on the terminal."""
    if not plan.system.luks:
        return None
    if req.luks_key is not None:
        if not req.luks_key.is_file():
            raise MkrecError(f"--luks-key {req.luks_key}: no such file; nothing was written")
        return LuksKey(req.luks_key.resolve(), pbkdf_iterations=req.luks_iterations)
    if asker is None:
        return None  # the LUKS step stops with what to do
    names = ", ".join(c.name for c in plan.system.luks)
    first = getpass.getpass(f"New passphrase for the LUKS container(s) {names}: ")
    if not first or first != getpass.getpass("The same passphrase again: "):
        raise MkrecError("the passphrases are empty or differ; nothing was written")
    return LuksKey(passphrase=first, pbkdf_iterations=req.luks_iterations)


def run_restore(req: Request) -> int:
    asker = None if req.yes or not ask.interactive() else input
    if req.action in ("start", "clone"):
        plan, reader = build_plan(req, asker)
        if req.action == "clone" and asker is not None:
            print(render_plan(plan))
            plan = edit_clone_tables(plan, asker, req.resize_swap)
        ask.confirm_erase(render_plan(plan), req.yes, asker)
        key = luks_key(req, plan, asker)
        try:
            restore_disks(plan, reader, req.target, asker if req.action == "clone" else None, key)
        finally:
            reader.close()
        finish_unattended(req.after)
        return 0
    if req.action == "fs":
        from mkrec.restore.restorefs import restore_fs

        return restore_fs(req, asker)
    if req.action == "compare":
        from mkrec.restore.compare import compare_command

        return compare_command(req)
    raise MkrecError(f"unknown restore action {req.action}")
