"""How mkrec marks its snapshots in a restic repository, and reads the marks back. Every snapshot
of one run carries mkrec, mkrec-set=<set name> and mkrec-id=<set id>; a file system's snapshot adds
mkrec-fs=<stream>, the run's etc/recovery and manifest snapshot adds mkrec-recovery."""

from __future__ import annotations

from typing import Any

TAG = "mkrec"
SET = "mkrec-set="
ID = "mkrec-id="
FS = "mkrec-fs="
RECOVERY = "mkrec-recovery"

Snapshot = dict[str, Any]  # one entry of `restic snapshots --json`


def run_tags(set_name: str, set_id: str, extra: tuple[str, ...]) -> list[str]:
    return [TAG, SET + set_name, ID + set_id, *extra]


def tag_value(snapshot: Snapshot, prefix: str) -> str:
    """The value of a prefix= tag ("" when the snapshot has none)."""
    return next((t[len(prefix) :] for t in snapshot.get("tags") or [] if t.startswith(prefix)), "")


def is_recovery(snapshot: Snapshot) -> bool:
    return RECOVERY in (snapshot.get("tags") or [])
