"""Logging to the terminal and to a file, and step() for timed stages."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("mkrec")


def setup_logging(debug: bool = False, log_file: Path | None = None) -> Path | None:
    """Terminal: INFO (DEBUG with --debug), plain messages. File: everything, timestamped.

    Returns the log file actually opened (None when it could not be: the terminal still gets everything).
    """
    root = logging.getLogger("mkrec")
    root.handlers.clear()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    term = logging.StreamHandler(sys.stderr)
    term.setLevel(logging.DEBUG if debug else logging.INFO)
    term.setFormatter(logging.Formatter("%(message)s"))
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
