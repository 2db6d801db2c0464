"""`mkrec status`: the last run, and whether the sets still fit the running machine (kernel, disk
layout, mkrec itself). Exit codes for monitoring: 0 ok, 1 warning, 2 failed or stale."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from pathlib import Path

from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.layout.model import Layout
from mkrec.layout.textfmt import read_layout
from mkrec.ops.lastrun import LAST_LAYOUT, LAST_RUN, RunRecord, code_fingerprint, installed_kernels, load_run
from mkrec.ops.layoutdiff import diff_layouts
from mkrec.ops.report import format_duration
from mkrec.sizes import format_size


class Level(IntEnum):
    """A check's verdict; its value is the exit code it asks for."""

    OK = 0
    WARN = 1
    STALE = 2


@dataclass(frozen=True)
class Finding:
    check: str  # "last run", "kernel", "layout", "mkrec"
    level: Level
    detail: str


def check_last_run(record: RunRecord | None, where: Path, max_age: int, now: datetime) -> list[Finding]:
    if record is None:
        return [Finding("last run", Level.STALE, f"no run recorded ({where / LAST_RUN} is missing)")]
    findings = []
    if record.result != "ok":
        findings.append(Finding("last run", Level.STALE, f"the last run {record.result}: {record.error}"))
    elif not record.verified:
        findings.append(Finding("last run", Level.WARN, "the last run's sets were not verified"))
    if not record.last_ok:
        findings.append(Finding("last run", Level.STALE, "no good set was ever made"))
    elif now - datetime.fromisoformat(record.last_ok) > timedelta(days=max_age):
        detail = f"the last good set is from {record.last_ok}: over {max_age} days"
        findings.append(Finding("last run", Level.WARN, detail))
    return findings or [Finding("last run", Level.OK, f"ok, finished {record.finished}")]


def check_kernel(record: RunRecord, running: str, installed: list[str]) -> Finding:
    if running != record.kernel:
        detail = f"running {running}, the last set was made under {record.kernel}"
        return Finding("kernel", Level.STALE, detail)
    added = sorted(set(installed) - set(record.kernels))
    gone = sorted(set(record.kernels) - set(installed))
    if added or gone:
        words = [f"{v} installed" for v in added] + [f"{v} removed" for v in gone]
        return Finding("kernel", Level.STALE, "since the last set: " + ", ".join(words))
    return Finding("kernel", Level.OK, f"{running}, as at the last run")


def check_layout(saved: Path, capture: Callable[[], Layout]) -> list[Finding]:
    if not saved.is_file():
        return [Finding("layout", Level.WARN, f"no saved layout ({saved}): nothing to compare with")]
    try:
        now = capture()
        changes = diff_layouts(read_layout(saved), now)
    except MkrecError as exc:
        return [Finding("layout", Level.WARN, f"cannot compare: {exc.message}")]
    if not changes:
        return [Finding("layout", Level.OK, "disks, partitions, RAID, LVM, LUKS and file systems as saved")]
    return [Finding("layout", Level.STALE, change) for change in changes]


def check_mkrec(record: RunRecord, version: str, code: str) -> Finding:
    if (record.mkrec_version, record.mkrec_code) != (version, code):
        was, now = f"{record.mkrec_version} ({record.mkrec_code})", f"{version} ({code})"
        detail = f"updated since the last run: {was} -> {now}; the sets carry the old one"
        return Finding("mkrec", Level.WARN, detail)
    return Finding("mkrec", Level.OK, f"{version} ({code}), as at the last run")


def fresh_layout(ctx: Context) -> Layout:
    from mkrec.layout.capture import build_layout
    from mkrec.layout.sourcedisks import disks_to_back_up

    return build_layout(disks_to_back_up(ctx.config), ctx.config.source.root, ctx.hostname, datetime.now())[0]


Gathered = tuple[RunRecord | None, list[Finding]]


def gather(ctx: Context, capture: Callable[[], Layout] | None = None) -> Gathered:
    from mkrec import __version__

    host_dir = ctx.config.build.output / ctx.hostname
    record = load_run(host_dir)
    findings = check_last_run(record, host_dir, ctx.config.report.max_age, datetime.now())
    if record is not None:
        installed = installed_kernels(ctx.config.source.root)
        findings.append(check_kernel(record, platform.release(), installed))
        findings += check_layout(host_dir / LAST_LAYOUT, capture or (lambda: fresh_layout(ctx)))
        findings.append(check_mkrec(record, __version__, code_fingerprint()))
    return record, findings


def overall(findings: list[Finding]) -> Level:
    return max((f.level for f in findings), default=Level.OK)


def render(record: RunRecord | None, findings: list[Finding], host: str) -> list[str]:
    lines = [f"mkrec status of {host}"]
    if record is not None:
        verified = "verified" if record.verified else "not verified"
        lines.append(
            f"  last run  {record.started}, mode {record.mode}: {record.result.upper()} in "
            f"{format_duration(record.duration)}, {format_size(record.size)}, {verified}"
        )
        lines += [f"  set       {s}" for s in record.sets]
    label = {Level.OK: "ok", Level.WARN: "WARN", Level.STALE: "STALE"}
    lines += [f"  {label[f.level]:<5} {f.check:<9} {f.detail}" for f in findings]
    verdict = overall(findings)
    lines.append(f"status: {verdict.name} (exit {int(verdict)})")
    return lines


def as_json(record: RunRecord | None, findings: list[Finding], host: str) -> str:
    verdict = overall(findings)
    return json.dumps(
        {
            "host": host,
            "status": verdict.name.lower(),
            "exit": int(verdict),
            "last_run": record.as_json() if record else None,
            "checks": [
                {"check": f.check, "level": f.level.name.lower(), "detail": f.detail} for f in findings
            ],
        },
        indent=2,
    )


def status(ctx: Context, json_out: bool = False) -> int:
    record, findings = gather(ctx)
    if json_out:
        print(as_json(record, findings, ctx.hostname))
    else:
        print("\n".join(render(record, findings, ctx.hostname)))
    return int(overall(findings))
