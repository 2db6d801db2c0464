"""Logging to the terminal and to a file, and step() for timed stages."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("mkrec")


# syslog priorities: journald reads a "<N>" line prefix as the priority (SyslogLevelPrefix=yes).
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def stderr_is_journal() -> bool:
    """Whether stderr is systemd's journal stream: JOURNAL_STREAM names its device and inode."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"


class JournalFormatter(logging.Formatter):
    """Each line prefixed with its priority, so `journalctl -p warning` finds the warnings."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def setup_logging(debug: bool = False, log_file: Path | None = None) -> Path | None:
    """Terminal: INFO (DEBUG with --debug), plain messages (with priorities under systemd's journal).
    File: everything, timestamped.

    Returns the log file actually opened (None when it could not be: the terminal still gets everything).
    """
    root = logging.getLogger("mkrec")
    root.handlers.clear()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    term = logging.StreamHandler(sys.stderr)
    term.setLevel(logging.DEBUG if debug else logging.INFO)
    term.setFormatter(
        JournalFormatter("%(message)s") if stderr_is_journal() else logging.Formatter("%(message)s")
    )
    root.addHandler(term)
    if log_file is None:
        return None
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = logging.FileHandler(log_file)
    except OSError as exc:
        log.warning("warning: cannot write the log file %s: %s", log_file, exc.strerror)
        return None
    log_file.chmod(0o600)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    return log_file


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """with step("Writing volume 2 of 5"): ...  — logs the start and how long it took."""
    log.info("==> %s", title)
    start = time.monotonic()
    try:
        yield
    except BaseException:
        log.debug("<== %s: failed after %.1f s", title, time.monotonic() - start)
        raise
    log.info("    %s: done in %.1f s", title, time.monotonic() - start)
