"""The end-of-run report: a summary for the person (or JSON), mailed through the local sendmail
([report] mail) and/or given as JSON on stdin to a command ([report] command)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
from email.message import EmailMessage
from pathlib import Path

from mkrec.config import ReportConfig
from mkrec.errors import CommandError, MkrecError
from mkrec.ops.lastrun import RunRecord
from mkrec.runner import SAFE_PATH, run
from mkrec.sizes import format_size

log = logging.getLogger("mkrec.ops")
HOOK_TIMEOUT = 300  # seconds: a hung webhook must not hold the timer's unit for ever


def format_duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def summary_lines(record: RunRecord) -> list[str]:
    verdict = "OK" if record.result == "ok" else record.result.upper()
    lines = [
        f"mkrec build on {record.host}: {verdict}",
        f"  mode      {record.mode}",
        f"  started   {record.started}",
        f"  took      {format_duration(record.duration)}",
    ]
    if record.error:
        lines.append(f"  error     {record.error}")
    lines += [f"  set       {s}" for s in record.sets]
    if record.sets:
        lines.append(f"  size      {format_size(record.size)}")
        lines.append(f"  verified  {'yes (read back after writing)' if record.verified else 'no'}")
    lines += [f"  removed   {r}" for r in record.removed]
    if record.result != "ok" and record.last_ok:
        lines.append(f"  last good run {record.last_ok}")
    return lines


def summary_json(record: RunRecord) -> str:
    return json.dumps(record.as_json(), indent=2)


def find_sendmail() -> Path | None:
    """The local MTA's sendmail: first on the caller's PATH (a test's stand-in, a custom MTA), then
    where Debian's MTAs put it."""
    found = shutil.which("sendmail", path=os.environ.get("PATH", "") + ":" + SAFE_PATH)
    return Path(found) if found else None


def mail_report(address: str, record: RunRecord) -> str:
    sendmail = find_sendmail()
    if sendmail is None:
        return f"mail to {address}: no sendmail on this machine (install an MTA, e.g. exim4 or nullmailer)"
    msg = EmailMessage()
    msg["To"] = address
    msg["Subject"] = f"mkrec {record.host}: {'OK' if record.result == 'ok' else record.result.upper()}"
    msg.set_content("\n".join(summary_lines(record)) + "\n\n" + summary_json(record) + "\n")
    run([sendmail, "-t", "-oi"], input=msg.as_string(), timeout=HOOK_TIMEOUT)
    return f"mailed to {address} via {sendmail}"


def run_hook(command: str, record: RunRecord) -> str:
    argv = shlex.split(command)
    run(argv, input=summary_json(record) + "\n", timeout=HOOK_TIMEOUT)
    return f"{argv[0]}: summary passed on stdin"


def deliver(cfg: ReportConfig, record: RunRecord) -> list[str]:
    """Send the report where [report] says; a failure is logged, never fails the run."""
    done = []
    for wanted, send, arg in ((cfg.mail, mail_report, cfg.mail), (cfg.command, run_hook, cfg.command)):
        if not wanted:
            continue
        try:
            line = send(arg, record)
            log.info("Report: %s", line)
        except (CommandError, MkrecError, OSError, ValueError) as exc:
            line = f"failed: {getattr(exc, 'message', exc)}"
            log.warning("warning: report %s", line)
        done.append(line)
    return done
