"""Opening what --source names: a set of volumes (mkrec.restore.decide.source) or a set inside a
restic repository (mkrec.restic.restoreset, which builds on the former)."""

from __future__ import annotations

from pathlib import Path

from mkrec.remote import Source
from mkrec.restic.restoreset import ResticSet
from mkrec.restic.spec import ResticSource
from mkrec.restore.decide.source import Ask, RestoreSet, open_restore_set


def open_source(
    source: Source | Path | ResticSource | None, ask: Ask | None = None, identity: Path | None = None
) -> RestoreSet:
    """identity: the key of an encrypted set (restic encrypts on its own)."""
    if isinstance(source, ResticSource):
        return ResticSet(source, ask)
    return open_restore_set(source, ask, identity)
