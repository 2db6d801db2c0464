"""The host-side commands on a backup set: verify, ls, extract (thin: the work is in verify.py
and extract.py)."""

from __future__ import annotations

import argparse
import logging

from mkrec.backup.extract import extract, ls_lines, quote
from mkrec.backup.setkey import unlock
from mkrec.backup.setreader import open_set
from mkrec.backup.verify import verify_set
from mkrec.context import Context

log = logging.getLogger("mkrec")


def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    bset = open_set(args.set)
    try:
        if args.deep:
            unlock(bset, args.identity)
        report = verify_set(bset, progress=lambda what: log.debug("checking %s", what), deep=args.deep)
    finally:
        bset.close()
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


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    bset = open_set(args.set)
    try:
        unlock(bset, args.identity)
        for line in ls_lines(bset, args.path):
            print(line)
    finally:
        bset.close()
    return 0


def cmd_extract(ctx: Context, args: argparse.Namespace) -> int:
    bset = open_set(args.set)
    try:
        unlock(bset, args.identity)
        for note in bset.describe_missing():
            log.warning("warning: %s", note)
        result = extract(bset, args.paths, args.dest)
    finally:
        bset.close()
    log.info("restored %d entries into %s", len(result.restored), args.dest)
    for path in result.lost:
        log.error("lost: %s", quote(path))
    return 1 if result.lost else 0
