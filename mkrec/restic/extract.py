"""`mkrec extract restic:<repository>[#set] PATH... -C DEST`: the chosen files of a restic set put
under DEST as `mkrec extract` puts them for the other sets (DEST/<mount point>/<path>, an image as
one file in DEST). restic restore does the work, one run per file system with an --include per
path; what is under DEST afterwards is what is named restored."""

from __future__ import annotations

import re
from pathlib import Path

from mkrec.backup.catalog import CatalogEntry
from mkrec.backup.extract import ExtractResult, absent_paths, absolute, image_file, image_written, matches
from mkrec.errors import MkrecError
from mkrec.restic.restoreset import ResticSet

GLOB = re.compile(r"([*?\[\\])")  # restic's --include is a pattern: a name is matched as it is


def include_pattern(wanted: str, mountpoint: str) -> str | None:
    """restic restore's --include for a wanted path in the file system mounted at mountpoint; None:
    the whole file system (the path is its mount point or above it)."""
    wanted = wanted.rstrip("/") or "/"
    top = mountpoint.rstrip("/")
    if wanted == "/" or (top + "/").startswith(wanted + "/"):
        return None
    return "/" + GLOB.sub(r"\\\1", wanted[len(top) :].lstrip("/"))


def extract_restic(rset: ResticSet, paths: list[str], dest: Path) -> ExtractResult:
    entries, _missing = rset.catalog()
    result = ExtractResult(absent=absent_paths(rset, entries, paths))
    if len(result.absent) == len(paths):
        raise MkrecError(
            f"nothing in {rset.set_name} matches {' '.join(paths)}",
            hint=f"see 'mkrec ls restic:{rset.repo.location}#{rset.set_name}'",
        )
    for name, record in rset.streams.items():
        here = [e for e in entries if e.stream == name]
        wanted = {p: [e for e in here if matches(absolute(rset, e), p)] for p in paths}
        chosen = list({id(e): e for found in wanted.values() for e in found}.values())
        if not chosen:
            continue
        if record.kind == "image":
            _extract_image(rset, name, dest, result)
            continue
        target = dest / record.mountpoint.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        patterns = [include_pattern(p, record.mountpoint) for p, found in wanted.items() if found]
        if None in patterns:
            rset.restore_tree(name, target)
        else:
            includes = tuple(f"--include={p}" for p in dict.fromkeys(patterns))
            rset.restore_paths(name, target, includes, sum(e.size for e in chosen))
        _name_outcome(rset, chosen, target, result)
    return result


def _name_outcome(rset: ResticSet, chosen: list[CatalogEntry], target: Path, result: ExtractResult) -> None:
    """Restored: what is there now; lost: what restic did not put there."""
    for e in chosen:
        there = target / e.path
        found = there.is_symlink() or there.exists()
        (result.restored if found else result.lost).append(absolute(rset, e))


def _extract_image(rset: ResticSet, name: str, dest: Path, result: ExtractResult) -> None:
    """The whole image, as restic dump gives it back, in one file."""
    record = rset.streams[name]
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / image_file(record)
    with open(out, "wb") as fh:
        for chunk in rset.chunks(name):
            fh.write(chunk)
    result.restored.append(record.device)
    image_written(record, out)
