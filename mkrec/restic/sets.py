"""`mkrec sets restic:<repository>`: the hosts and runs in a restic repository, from the snapshots'
tags (mkrec.restic.tags), newest last; a run without its recovery snapshot did not finish."""

from __future__ import annotations

from dataclasses import dataclass, field

from mkrec.restic import tags
from mkrec.restic.repo import Repo
from mkrec.restic.tags import Snapshot


@dataclass
class ResticRun:
    host: str
    set_name: str
    set_id: str
    time: str  # of its first snapshot, as restic prints it (UTC)
    filesystems: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)  # short ids
    complete: bool = False  # the recovery snapshot (etc/recovery and the manifest) is there


def group_runs(snapshots: list[Snapshot]) -> list[ResticRun]:
    runs: dict[str, ResticRun] = {}
    for snap in sorted(snapshots, key=lambda s: s.get("time", "")):
        set_id = tags.tag_value(snap, tags.ID)
        if not set_id:
            continue
        run = runs.setdefault(set_id, ResticRun(snap.get("hostname", ""), tags.tag_value(snap, tags.SET),
                                                set_id, snap.get("time", "")))  # fmt: skip
        run.snapshots.append(snap.get("short_id", snap.get("id", "")[:8]))
        if tags.is_recovery(snap):
            run.complete = True
        elif fs := tags.tag_value(snap, tags.FS):
            run.filesystems.append(fs)
    return sorted(runs.values(), key=lambda r: (r.host, r.time))


def list_restic_sets(repo: Repo) -> list[ResticRun]:
    return group_runs(repo.json("snapshots", "--tag", tags.TAG) or [])


def render_runs(location: str, runs: list[ResticRun]) -> list[str]:
    if not runs:
        return [f"restic repository {location}: no mkrec sets"]
    lines = [f"restic repository {location}: {len(runs)} set(s)"]
    host = None
    for run in runs:
        if run.host != host:
            host = run.host
            lines.append(f"{host}:")
        state = "complete" if run.complete else "INCOMPLETE (no recovery snapshot: not restorable)"
        lines.append(f"  {run.set_name:<20} {run.time[:19].replace('T', ' ')} UTC  "
                     f"{len(run.filesystems)} file system(s)  {state}  #{run.set_name}")  # fmt: skip
    return lines
