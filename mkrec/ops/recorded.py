"""A build as the machine's operator sees it: timed, recorded in last-run.json, its sets marked
verified, older sets pruned ([build] keep) only when it succeeded, and reported ([report])."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from mkrec.config import Mode
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.layout import LAYOUT_FILE
from mkrec.ops.lastrun import RunRecord, code_fingerprint, installed_kernels, load_run, save_run
from mkrec.ops.report import deliver, summary_json, summary_lines
from mkrec.ops.retention import prune
from mkrec.ops.setlist import is_set_dir, record_verified, tree_size

log = logging.getLogger("mkrec.ops")
READ_BACK = "read back after writing"


def host_dirs(ctx: Context) -> list[Path]:
    """Where this host's sets (and so last-run.json) live."""
    dirs = [ctx.config.build.output / ctx.hostname]
    if ctx.config.build.mode is Mode.PATH and ctx.config.path.dir:
        dirs.append(ctx.config.path.dir / ctx.hostname)
    return dirs


def _size(path: Path) -> int:
    if path.is_dir():
        return tree_size(path)
    return path.stat().st_size if path.is_file() else 0


def recorded_build(ctx: Context, build: Callable[[Context], list[Path]], as_json: bool = False) -> RunRecord:
    """Run `build` and do the bookkeeping whatever happens; its exception (if any) goes on up."""
    record = RunRecord(
        host=ctx.hostname,
        mode=str(ctx.config.build.mode),
        started=ctx.started.isoformat(timespec="seconds"),
        kernels=installed_kernels(ctx.config.source.root),
        mkrec_code=code_fingerprint(),
    )
    previous = load_run(host_dirs(ctx)[0])
    record.last_ok = previous.last_ok if previous else ""
    start = time.monotonic()
    try:
        written = build(ctx)
        record.result = "ok"
    except MkrecError as exc:
        record.error = exc.message
        raise
    except KeyboardInterrupt as exc:
        record.result, record.error = "interrupted", f"stopped ({exc or 'interrupted'})"
        raise
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        record.duration = round(time.monotonic() - start, 1)
        record.finished = datetime.now().isoformat(timespec="seconds")
        if record.result == "ok":
            _succeeded(ctx, record, written)
        _finish(ctx, record, as_json)
    return record


def _succeeded(ctx: Context, record: RunRecord, written: list[Path]) -> None:
    record.last_ok = record.finished
    record.sets = [str(p) for p in written]
    record.size = sum(_size(p) for p in written)
    record.verified = True  # every sink reads back what it wrote, or the run failed
    for path in written:
        if is_set_dir(path):
            record_verified(path, True, READ_BACK)
    for path in written:
        if is_set_dir(path):
            record.removed += [str(p) for p in prune(path, ctx.config.build.keep)]


def _finish(ctx: Context, record: RunRecord, as_json: bool) -> None:
    """Write last-run.json, report, print the summary; problems here are warnings only: the
    run's own result must reach the caller."""
    try:
        record.report = deliver(ctx.config.report, record)
        save_run(record, host_dirs(ctx), ctx.recovery_dir / LAYOUT_FILE)
    except OSError as exc:
        log.warning("warning: cannot write %s: %s", exc.filename, exc.strerror)
    if as_json:
        print(summary_json(record))
    for line in summary_lines(record):
        (log.debug if as_json else log.info)("%s", line)
