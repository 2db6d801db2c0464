"""`mkrec drill [SET]`: boot the set's rescue disc in QEMU with blank sparse disks of the saved
disks' sizes, restore unattended, then boot the restored disks alone; PASS when the restored
system's serial console shows a login prompt (or [drill] expect). The run, readable in one place."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path
from types import FrameType

from mkrec.config import DrillConfig
from mkrec.context import Context
from mkrec.drill.console import Guest, Seen, Ticker
from mkrec.drill.machine import (
    QEMU,
    Accel,
    Firmware,
    Machine,
    VirtualDisk,
    choose_firmware,
    find_ovmf,
    first_boot_argv,
    kvm_works,
    rescue_argv,
    virtual_disks,
)
from mkrec.drill.report import (
    FATAL,
    Phase,
    Report,
    clean_console,
    last_lines,
    lines_around,
    render,
    report_paths,
    write_private,
)
from mkrec.drill.scratch import needed_space, scratch
from mkrec.drill.setfiles import DrillSet, copy_boot_files, newest_set, open_drill_set
from mkrec.errors import die
from mkrec.runner import which
from mkrec.sizes import format_size

log = logging.getLogger("mkrec.drill")

RESCUE_UP = "mkrec: starting the rescue system"  # templates/init.sh.j2, as it hands over to init
RESTORE_DONE = r"Restore finished[^\n]*"  # mkrec/restore/engine.py, the last step's line
SHUTDOWN_WAIT = 60  # seconds for the rescue system to power off after the restore


def drill(ctx: Context, set_path: Path | None, firmware: str | None) -> int:
    # A stopped service or a killed terminal must not leave QEMU running or the scratch files behind:
    # SIGTERM unwinds like Ctrl-C, through the guests' and the scratch directory's clean-up.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _drill(ctx, set_path, firmware)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _drill(ctx: Context, set_path: Path | None, firmware: str | None) -> int:
    cfg = ctx.config.drill
    started, t0 = datetime.now(), time.monotonic()
    dset = open_drill_set(set_path or newest_set(ctx), ctx.config.build.output)
    if which(QEMU) is None:
        die(f"{QEMU} is not installed", hint="apt-get install qemu-system-x86")
    if not os.access(dset.directory, os.W_OK):
        die(f"cannot write the drill's report into {dset.directory}", hint="copy the set somewhere writable")
    fw = choose_firmware(firmware)
    ovmf = find_ovmf() if fw is Firmware.UEFI else None
    held = f"{len(dset.volumes)} volume(s)" if dset.volumes else f"shared from {dset.share}"
    log.info("Drill of %s: %s, %d disk(s)", dset.name, held, len(dset.layout.disks))
    expect = cfg.expect or "login:"
    started_text = started.isoformat(timespec="seconds")
    report = Report(dset.name, str(dset.directory), started_text, str(fw), "", expect)
    consoles: list[tuple[str, str]] = []
    log_file, json_file = report_paths(dset.directory, started)
    with scratch(cfg.workdir, needed_space(dset.restore_bytes)) as work:
        kernel, initrd = copy_boot_files(dset, work)
        machine = prepare_machine(cfg, fw, ovmf, kernel, work)
        report.accel = str(machine.accel)
        disks = make_disks(dset, work)
        ticker = Ticker()
        try:
            with Guest(rescue_argv(machine, disks, kernel, initrd, dset)) as guest:
                try:
                    restored = rescue_and_restore(guest, report, cfg, ticker)
                finally:
                    consoles.append(("rescue disc: boot and restore", guest.text()))
            if restored:
                with Guest(first_boot_argv(machine, disks)) as guest:
                    try:
                        first_boot(guest, report, cfg, ticker, expect)
                    finally:
                        consoles.append(("restored disks: first boot", guest.text()))
        finally:
            ticker.done()
            report.wall_seconds = round(time.monotonic() - t0, 1)
            report.log = str(log_file)
            _write(log_file, consoles)
    write_private(json_file, report.to_json())
    for line in render(report):
        log.info("%s", line)
    log.info("Report: %s, console log: %s", json_file, log_file)
    return 0 if report.passed else 1


def prepare_machine(
    cfg: DrillConfig, fw: Firmware, ovmf: tuple[Path, Path] | None, kernel: Path, work: Path
) -> Machine:
    """KVM if it really runs the rescue kernel here, else TCG (said once); UEFI with the drill's own
    copy of the firmware variables, where the restore's boot entry lands."""
    accel = Accel.KVM if kvm_works(kernel) else Accel.TCG
    if accel is Accel.TCG:
        log.info("note: KVM is not usable here: QEMU emulates the CPU (TCG), several times slower")
    if ovmf is None:
        return Machine(accel, fw, cfg.memory // 1024**2, cfg.cpus)
    code, template = ovmf
    shutil.copyfile(template, work / "OVMF_VARS.fd")
    return Machine(accel, fw, cfg.memory // 1024**2, cfg.cpus, code, work / "OVMF_VARS.fd")


def make_disks(dset: DrillSet, work: Path) -> list[VirtualDisk]:
    """The blank disks, sparse: only what the restore writes takes room."""
    disks = virtual_disks(dset.layout, work)
    for d in disks:
        with open(d.path, "wb") as fh:
            fh.truncate(d.size)
    names = ", ".join(f"vd{chr(ord('a') + i)} for saved {d.saved}" for i, d in enumerate(disks))
    log.info("    virtual disks: %s (%s in all, sparse)", names, format_size(sum(d.size for d in disks)))
    return disks


def rescue_and_restore(guest: Guest, report: Report, cfg: DrillConfig, ticker: Ticker) -> bool:
    """Phases 1 and 2: the rescue system comes up, then the unattended restore runs to its end."""
    start = time.monotonic()
    seen = guest.wait(
        {"up": re.escape(RESCUE_UP), **FATAL}, cfg.timeout, tick=ticker.for_phase("rescue boot")
    )
    if not _phase(report, "rescue boot", start, guest, seen, "up", "the rescue system starting"):
        return False
    start = time.monotonic()
    seen = guest.wait(
        {"done": RESTORE_DONE, **FATAL}, cfg.timeout, since=seen.at, tick=ticker.for_phase("restore")
    )
    if seen.name == "done" and guest.wait({}, SHUTDOWN_WAIT).name == "timeout":
        # [restore] after = "shell": the shell on the console is the drill's to end.
        guest.send("sync; poweroff -f")
        guest.wait({}, SHUTDOWN_WAIT)
    return _phase(report, "restore", start, guest, seen, "done", "the end of the restore")


def first_boot(guest: Guest, report: Report, cfg: DrillConfig, ticker: Ticker, expect: str) -> bool:
    """Phase 3: the restored disks boot on their own until the console shows `expect`."""
    start = time.monotonic()
    seen = guest.wait({"up": re.escape(expect), **FATAL}, cfg.timeout, tick=ticker.for_phase("first boot"))
    return _phase(report, "first boot", start, guest, seen, "up", repr(expect))


def _phase(report: Report, name: str, start: float, guest: Guest, seen: Seen, ok: str, what: str) -> bool:
    seconds = round(time.monotonic() - start, 1)
    passed = seen.name == ok
    report.phases.append(Phase(name, seconds, passed))
    log.info("    %s: %s after %.1f s", name, "done" if passed else "FAILED", seconds)
    if passed:
        return True
    text = guest.text()
    if seen.name == "timeout":
        error, lines = f"no {what} on the console within {seen.text} s ([drill] timeout)", last_lines(text)
    elif seen.name == "exit":
        why = guest.errors().splitlines()[-1:] or [f"exit status {seen.text}"]
        error, lines = f"the virtual machine stopped before {what} ({why[0]})", last_lines(text)
    else:
        error, lines = seen.text.strip(), lines_around(text, seen.at)
    report.fail(name, error, lines)
    return False


def _write(log_file: Path, consoles: list[tuple[str, str]]) -> None:
    parts = [f"===== {title} =====\n{clean_console(text)}\n" for title, text in consoles]
    write_private(log_file, "".join(parts))


__all__ = ["drill"]
