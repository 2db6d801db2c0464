"""compare: the live filesystems against the backup's catalogs (a restic set's: its snapshots'
listings). Writes one line per difference ("changed PATH", "added PATH", "missing PATH") to a file
and prints a summary. The walk stays on each filesystem (another mount below it is compared with
its own catalog)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from mkrec.remote import Source
from mkrec.restic.spec import ResticSource
from mkrec.restore.actions import TARGET
from mkrec.restore.decide.layout_adapter import load_saved
from mkrec.restore.decide.opening import open_source

log = logging.getLogger("mkrec.restore")

KINDS = {"file": stat.S_IFREG, "hardlink": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


class Entry(Protocol):
    """What compare reads of a catalog entry (mkrec.backup.catalog.CatalogEntry has these)."""

    @property
    def stream(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mode(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def mtime(self) -> float: ...
    @property
    def link(self) -> str: ...


def _norm(path: str) -> str:
    path = path.removeprefix("./").rstrip("/")
    return path or "."


def differs(e: Entry, path: Path, st: os.stat_result) -> bool:
    kind = KINDS.get(e.type)
    if kind is not None and stat.S_IFMT(st.st_mode) != kind:
        return True
    if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (e.mode & 0o7777, e.uid, e.gid):
        return True
    if e.type == "symlink":  # restic's listing has no target: a new symlink has a new mtime
        return os.readlink(path) != e.link if e.link else int(st.st_mtime) != int(e.mtime)
    if e.type == "file":
        return st.st_size != e.size or int(st.st_mtime) != int(e.mtime)
    return False


def _link_changed(e: Entry, top: Path, st: os.stat_result, changed: set[str]) -> bool:
    """A hard link (tar stores it once, as a link to the first name) changed with its first name's
    data, or is no longer a link to it."""
    if e.type != "hardlink":
        return False
    first = _norm(e.link)
    try:
        same = (top / first).lstat().st_ino == st.st_ino
    except FileNotFoundError:
        return True
    return not same or first in changed


def walk(top: Path) -> Iterable[str]:
    """Paths below top, relative, staying on top's filesystem."""
    dev = top.stat().st_dev
    for dirpath, dirnames, filenames in os.walk(top):
        for name in list(dirnames):
            full = Path(dirpath) / name
            yield str(full.relative_to(top))
            if full.lstat().st_dev != dev:
                dirnames.remove(name)
        for name in filenames:
            yield str((Path(dirpath) / name).relative_to(top))


def compare_tree(entries: Iterable[Entry], top: Path, mountpoint: str) -> list[tuple[str, str]]:
    """(kind, absolute path on the system) for every difference between the catalog and top."""
    found: list[tuple[str, str]] = []
    known: set[str] = set()
    changed: set[str] = set()

    def shown(rel: str) -> str:
        return mountpoint if rel == "." else os.path.join(mountpoint, rel)

    for e in entries:
        rel = _norm(e.path)
        known.add(rel)
        path = top / rel if rel != "." else top
        try:
            st = path.lstat()
        except FileNotFoundError:
            found.append(("missing", shown(rel)))
            continue
        if rel != "." and (differs(e, path, st) or _link_changed(e, top, st, changed)):
            found.append(("changed", shown(rel)))
            changed.add(rel)
    for rel in walk(top):
        if rel not in known:
            found.append(("added", shown(rel)))
    return sorted(found, key=lambda kp: (kp[1], kp[0]))


def write_report(found: list[tuple[str, str]], output: Path) -> str:
    output.write_text("".join(f"{kind} {path}\n" for kind, path in found))
    counts = {k: sum(1 for kind, _ in found if kind == k) for k in ("changed", "added", "missing")}
    changed, added, missing = counts["changed"], counts["added"], counts["missing"]
    return f"{changed} changed, {added} added, {missing} missing (list in {output})"


def compare(
    source: Source | Path | ResticSource | None,
    layout: Path | None,
    output: Path,
    target: Path | None = None,
    *,
    identity: Path | None = None,
) -> int:
    """target: the restored system's root; by default the one at actions.TARGET when it is there,
    else the running system (/)."""
    with open_source(source, identity=identity) as reader:
        system = load_saved(reader, layout)
        entries, missing = reader.catalog()
        for n in missing:
            log.warning(
                "warning: the catalog part of %s is missing: its files show as added", reader.describe(n)
            )
    root = target if target is not None else (TARGET if TARGET.is_dir() else Path("/"))
    found: list[tuple[str, str]] = []
    for fs in system.mounted_in_order():
        if not fs.stream:
            continue
        top = root / fs.mountpoint.lstrip("/")
        found += compare_tree([e for e in entries if e.stream == fs.stream], top, fs.mountpoint)
    summary = write_report(sorted(found, key=lambda kp: kp[1]), output)
    print(summary)
    return 0
