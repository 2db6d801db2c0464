"""Retention: the newest [build] keep sets of a host are kept, older ones removed, but only after
a run whose new set is complete and verified, and never the last verified set."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from mkrec.ops.setlist import forget_removed, is_verified, set_dirs

log = logging.getLogger("mkrec.ops")


def sets_to_remove(sets: list[Path], keep: int, verified: set[Path]) -> list[Path]:
    """Of a host's sets (oldest first), those beyond the newest `keep`; if none of the kept ones
    is verified, the newest verified older set stays too. keep 0 keeps everything."""
    if keep <= 0 or len(sets) <= keep:
        return []
    kept = sets[-keep:]
    older = sets[:-keep]
    if not verified.intersection(kept):
        last_good = [s for s in older if s in verified][-1:]
        older = [s for s in older if s not in last_good]
    return older


def prune(new_set: Path, keep: int) -> list[Path]:
    """Called after a successful run with the set it wrote: removes the host's sets past `keep`.
    Does nothing unless new_set is there and verified."""
    if keep <= 0:
        return []
    if not new_set.is_dir() or not is_verified(new_set):
        log.warning("warning: %s is not verified: no older set removed", new_set)
        return []
    sets = set_dirs(new_set.parent)
    verified = {s for s in sets if is_verified(s)}
    removed = []
    for old in sets_to_remove(sets, keep, verified):
        # Renamed first: a set half removed by a crash must not look complete to a restore.
        doomed = old.parent / f".{old.name}.removing-{os.getpid()}"
        old.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("Removed %s ([build] keep = %d)", old, keep)
        removed.append(old)
    if removed:
        forget_removed(new_set.parent)
    return removed
