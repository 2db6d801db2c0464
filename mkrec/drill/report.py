"""The drill's result: phases with their times, PASS or FAIL, the first error with the console
lines around it; printed for the person and written next to the set (drill-<date>.log and .json)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

# Console lines that end a phase as failed at once (rather than at the timeout).
FATAL = {
    "mkrec error": r"mkrec: error: [^\n]*",
    "rescue RAM disk missing": r"mkrec: the root RAM disk [^\n]*",  # templates/init.sh.j2
    "kernel panic": r"Kernel panic - not syncing[^\n]*",
    "no boot device": r"No bootable device[^\n]*|No bootable option[^\n]*",
    "GRUB rescue prompt": r"grub rescue>",
    # GRUB's menu entry failed (its kernel or initrd is missing): it would only loop back to the menu.
    "GRUB error": r"error: you need to load the kernel first[^\n]*",
}
CONTEXT = 12  # console lines shown with an error


@dataclass
class Phase:
    name: str  # "rescue boot", "restore", "first boot"
    seconds: float
    ok: bool


@dataclass
class Report:
    set_name: str
    set_dir: str
    started: str  # ISO 8601, local time
    firmware: str
    accel: str
    expect: str
    phases: list[Phase] = field(default_factory=list)
    failed_phase: str = ""
    error: str = ""
    error_lines: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    log: str = ""

    @property
    def passed(self) -> bool:
        return not self.failed_phase and len(self.phases) == 3

    def fail(self, phase: str, error: str, lines: list[str]) -> None:
        if not self.failed_phase:  # the first error is the one that matters
            self.failed_phase, self.error, self.error_lines = phase, error, lines

    def to_json(self) -> str:
        data = asdict(self)
        data["result"] = "PASS" if self.passed else "FAIL"
        return json.dumps(data, indent=2) + "\n"


def lines_around(text: str, offset: int, before: int = CONTEXT, after: int = 3) -> list[str]:
    """The console lines before (and a few after) the one holding offset: what led to an error."""
    line = text.count("\n", 0, offset)
    return _readable(text.splitlines()[max(0, line - before) : line + after + 1])


def last_lines(text: str, count: int = CONTEXT) -> list[str]:
    return _readable(text.splitlines())[-count:]


def _readable(lines: list[str]) -> list[str]:
    """Console lines without terminal escapes; the blank ones (a menu's redrawing) left out."""
    out = (clean_console(x).rstrip() for x in lines)
    return [x for x in out if x.strip()]


def render(report: Report) -> list[str]:
    out = [f"Drill of {report.set_name} ({report.firmware}, {report.accel}): "]
    out[0] += "PASS" if report.passed else f"FAIL in {report.failed_phase}"
    for p in report.phases:
        out.append(f"  {p.name:<12} {p.seconds:7.1f} s  {'ok' if p.ok else 'FAILED'}")
    out.append(f"  {'total':<12} {report.wall_seconds:7.1f} s")
    if report.error:
        out.append(f"First error: {report.error}")
        out += [f"  | {line}" for line in report.error_lines] or ["  (nothing on the serial console)"]
    return out


def report_paths(set_dir: Path, started: datetime) -> tuple[Path, Path]:
    stem = f"drill-{started:%Y%m%d-%H%M%S}"
    return set_dir / f"{stem}.log", set_dir / f"{stem}.json"


def clean_console(text: str) -> str:
    """The console as a log: terminal escape sequences (the boot menus, the shell) removed."""
    return re.sub(r"\x1b\[[0-9;?=]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1bc", "", text)


def write_private(path: Path, text: str) -> None:
    """0600 like the set beside it: the console shows the restored system's paths and messages."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as fh:
        fh.write(text)
