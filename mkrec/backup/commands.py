"""The host-side commands on a backup set: verify, ls, extract (thin: the work is in verify.py
and extract.py)."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from mkrec.backup.extract import extract, ls_lines, quote
from mkrec.backup.setkey import unlock
from mkrec.backup.setreader import BackupSet, open_set
from mkrec.backup.verify import verify_set
from mkrec.context import Context
from mkrec.remote import Source, open_source
from mkrec.restic.spec import ResticSource

log = logging.getLogger("mkrec")


@contextlib.contextmanager
def opened_set(source: Source) -> Iterator[BackupSet]:
    """The set at a path or URL, open for the `with` block (a mount or connection too)."""
    with open_source(source) as place:
        bset = open_set(place)
        try:
            yield bset
        finally:
            bset.close()


def cmd_verify(ctx: Context, args: argparse.Namespace, source: Source) -> int:
    with opened_set(source) as bset:
        if args.deep:
            unlock(bset, args.identity)
        report = verify_set(bset, progress=lambda what: log.debug("checking %s", what), deep=args.deep)
    _remember(source, report.ok)
    for problem in report.problems:
        print(f"BAD: {problem}")
    total = bset.total or "?"
    if report.ok:
        frames = f", {report.frames} frames opened" if args.deep else ""
        what = f"{len(bset.volumes)} of {total} volumes, {report.checked} files checked{frames}"
        print(f"OK: {bset.set_name}: {what}")
        return 0
    print(f"FAILED: {bset.set_name}: {len(report.problems)} problem(s)")
    return 1


def _remember(source: Source, ok: bool) -> None:
    """A local set in its place (<base>/<host>/<YYYYMMDD>, or a volume in it) keeps the outcome for
    `mkrec sets` and retention; elsewhere (a URL, a loose directory) there is nowhere to keep it."""
    from mkrec.ops.setlist import is_set_dir, record_verified

    path = Path(str(source))
    if "://" in str(source) or not path.exists():
        return
    set_dir = path if path.is_dir() else path.parent
    if is_set_dir(set_dir):
        try:
            record_verified(set_dir, ok, "mkrec verify")
        except OSError as exc:
            log.debug("cannot record the verify state of %s: %s", set_dir, exc)


def cmd_ls(ctx: Context, args: argparse.Namespace, source: Source | ResticSource) -> int:
    if isinstance(source, ResticSource):
        from mkrec.restic.restoreset import ResticSet

        lines = ls_lines(ResticSet(source), args.path)
    else:
        with opened_set(source) as bset:
            unlock(bset, args.identity)
            lines = ls_lines(bset, args.path)
    for line in lines:
        print(line)
    return 0


def cmd_extract(ctx: Context, args: argparse.Namespace, source: Source | ResticSource) -> int:
    if isinstance(source, ResticSource):
        from mkrec.restic.extract import extract_restic
        from mkrec.restic.restoreset import ResticSet

        result = extract_restic(ResticSet(source), args.paths, args.dest)
    else:
        with opened_set(source) as bset:
            unlock(bset, args.identity)
            for note in bset.describe_missing():
                log.warning("warning: %s", note)
            result = extract(bset, args.paths, args.dest)
    log.info("restored %d entries into %s", len(result.restored), args.dest)
    for path in result.lost:
        log.error("lost: %s", quote(path))
    for path in result.absent:
        log.error("not in the set: %s", quote(path))
    return 1 if result.lost or result.absent else 0
