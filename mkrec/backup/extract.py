"""`mkrec ls` (from the catalogs only) and `mkrec extract` (only the frames the chosen members need).

Extraction cuts each chosen member's bytes — its headers and data, [offset, end) in the
uncompressed stream — out of the frames that hold it and feeds them, in stream order, to
`tar -x`, which restores what tar does best: owners, modes, times, hard links, sparse files,
xattrs, ACLs, device nodes. A member that overlaps a missing or damaged frame is named as lost."""

from __future__ import annotations

import logging
import os
import posixpath
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mkrec.backup.catalog import CatalogEntry
from mkrec.backup.imaging import image_format, restore_hint
from mkrec.backup.manifest import ImageFormat, StreamRecord
from mkrec.backup.setreader import BackupSet, FrameReader
from mkrec.errors import MkrecError
from mkrec.runner import popen, wait_checked

log = logging.getLogger("mkrec.extract")

TYPE_CHAR = {"file": "-", "hardlink": "h", "symlink": "l", "char": "c", "block": "b", "dir": "d", "fifo": "p"}
TYPE_CHAR["image"] = "i"  # a partition image: the whole stream is one member


def quote(path: str) -> str:
    """One line per name, whatever the name holds (as `ls -b` does)."""
    out = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    return out.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class Listed(Protocol):
    """What ls reads of a set: a BackupSet's catalogs, or a restic set's listings."""

    @property
    def streams(self) -> dict[str, StreamRecord]: ...
    def catalog(self) -> tuple[list[CatalogEntry], list[int]]: ...


def absolute(bset: Listed, e: CatalogEntry) -> str:
    s = bset.streams.get(e.stream)
    if s is None:
        return f"?{e.stream}/{e.path}"
    if s.kind == "image":
        return s.device
    return e.absolute(s.mountpoint)


def matches(path: str, wanted: str) -> bool:
    wanted = wanted.rstrip("/") or "/"
    return wanted == "/" or path == wanted or path.startswith(wanted + "/")


def ls_lines(bset: Listed, wanted: str = "") -> list[str]:
    entries, missing = bset.catalog()
    lines = []
    for e in entries:
        path = absolute(bset, e)
        if wanted and not matches(path, wanted):
            continue
        kind = TYPE_CHAR.get(e.type, "?")
        mode = kind + stat.filemode(e.mode)[1:]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime))
        line = f"{mode} {e.uid}/{e.gid} {e.size:>12} {when} {quote(path)}"
        if e.type == "symlink" and e.link:  # a restic listing has no target
            line += f" -> {quote(e.link)}"
        elif e.type == "hardlink":
            line += f" link to {quote(e.link)}"
        elif e.type == "image" and (s := bset.streams.get(e.stream)):
            line += f" ({image_format(s)} image of {s.fstype}, {e.size} bytes in use)"
        lines.append(line)
    for n in missing:
        lines.append(f"# volume {n} is missing: files whose data starts on it are not listed")
    return lines


@dataclass
class ExtractResult:
    restored: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)  # paths asked for that nothing in the set matches


def absent_paths(bset: Listed, entries: list[CatalogEntry], paths: list[str]) -> list[str]:
    found = [absolute(bset, e) for e in entries]
    return [p for p in paths if not any(matches(path, p) for path in found)]


def _choose(bset: BackupSet, entries: list[CatalogEntry], paths: list[str]) -> list[CatalogEntry]:
    chosen = {id(e): e for e in entries if any(matches(absolute(bset, e), p) for p in paths)}
    by_path = {(e.stream, e.path): e for e in entries}
    for e in list(chosen.values()):
        # a hard link needs its target member first; a file its directories' owners and modes
        if e.type == "hardlink" and (target := by_path.get((e.stream, e.link))):
            chosen.setdefault(id(target), target)
        parent = posixpath.dirname(e.path)
        while parent and parent != ".":
            if (d := by_path.get((e.stream, parent))) is not None:
                chosen.setdefault(id(d), d)
            parent = posixpath.dirname(parent)
    return sorted(chosen.values(), key=lambda e: (e.stream, e.offset))


def tar_extract_argv(directory: Path) -> list[str]:
    return [
        "tar",
        "--extract",
        "--file=-",
        "--numeric-owner",
        "--same-owner",
        "--same-permissions",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        f"--directory={directory}",
    ]


def extract(bset: BackupSet, paths: list[str], dest: Path) -> ExtractResult:
    entries, missing = bset.catalog()
    chosen = _choose(bset, entries, paths)
    if not chosen and not missing:
        if bset.total is None:  # the last volume (and its whole-set catalog) is missing or unreadable
            raise MkrecError(
                f"nothing in the volumes of {bset.set_name} read matches {' '.join(paths)}; "
                + "; ".join(bset.describe_missing()),
                hint="the files may be on the last volume: find it, or see 'mkrec verify SET'",
            )
        raise MkrecError(f"nothing in {bset.set_name} matches {' '.join(paths)}", hint="see 'mkrec ls SET'")
    result = ExtractResult(absent=[] if missing else absent_paths(bset, entries, paths))
    for name in dict.fromkeys(e.stream for e in chosen):
        members = [e for e in chosen if e.stream == name]
        stream = bset.streams[name]
        reader = FrameReader(bset, name)
        if stream.kind == "image":
            _extract_image(reader, stream, dest, result)
        else:
            _extract_tar(bset, reader, members, dest / stream.mountpoint.lstrip("/"), result)
    for n in missing:
        result.lost.append(
            f"(files whose data starts on missing volume {n}: the last volume's catalog lists them)"
        )
    return result


def _extract_tar(
    bset: BackupSet, reader: FrameReader, members: list[CatalogEntry], target: Path, result: ExtractResult
) -> None:
    target.mkdir(parents=True, exist_ok=True)
    lost: set[str] = set()
    damaged: list[CatalogEntry] = []
    proc = popen(tar_extract_argv(target), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stdin is not None
    pending = list(members)
    current: CatalogEntry | None = None
    try:
        while pending:
            e = current = pending.pop(0)
            if not reader.available(e.offset, e.end) or (e.type == "hardlink" and e.link in lost):
                lost.add(e.path)
                result.lost.append(absolute(bset, e))
                continue
            if reader.copy(e.offset, e.end, proc.stdin):
                result.restored.append(absolute(bset, e))
            else:
                lost.add(e.path)
                damaged.append(e)
                result.lost.append(absolute(bset, e))
        proc.stdin.write(bytes(1024))  # the end-of-archive blocks
        proc.stdin.close()
    except BrokenPipeError:
        # tar stopped early: what it did not get in full is not restored, and must be named
        done = set(result.restored) | set(result.lost)
        unsent = [current] if current is not None and absolute(bset, current) not in done else []
        result.lost += [absolute(bset, m) for m in [*unsent, *pending]]
    wait_checked(proc)
    unreadable = set(bset.streams[members[0].stream].unreadable) if members else set()
    for e in members:
        if e.path in unreadable and absolute(bset, e) in result.restored:
            # archived as zeros: tar could not read it when the backup was made
            result.restored.remove(absolute(bset, e))
            result.lost.append(absolute(bset, e))
            damaged.append(e)
    for e in damaged:
        remove_untrusted(target / e.path)


def remove_untrusted(path: Path) -> None:
    """Remove a file tar made with zeros standing in for its bytes (a damaged frame, a file that
    could not be read at backup time): not a file anyone should trust. Its directory keeps the
    times tar gave it from the backup."""
    if not path.is_file() or path.is_symlink():
        return
    parent = path.parent.stat()
    path.unlink()
    os.utime(path.parent, ns=(parent.st_atime_ns, parent.st_mtime_ns))


def image_file(stream: StreamRecord) -> str:
    """The name an extracted image gets: a raw one is the partition's bytes (loop-mountable), the
    others say which tool restores them."""
    base = os.path.basename(stream.device) or "image"
    fmt = image_format(stream)
    return f"{base}.img" if fmt is ImageFormat.RAW else f"{base}.{stream.fstype}.{fmt}.img"


def _extract_image(reader: FrameReader, stream: StreamRecord, dest: Path, result: ExtractResult) -> None:
    """The whole image stream as a file (its catalog line counts only the bytes in use)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / image_file(stream)
    end = stream.size if stream.complete else None  # its end is on a volume not here
    if end is None or not reader.available(0, end):
        result.lost.append(stream.device)
        return
    with open(out, "wb") as fh:
        ok = reader.copy(0, end, fh)
    (result.restored if ok else result.lost).append(stream.device)
    if ok:
        image_written(stream, out)


def image_written(stream: StreamRecord, out: Path) -> None:
    fmt = image_format(stream)
    log.info(
        "%s: %s image of its %s file system written to %s; to put it on a partition: %s",
        stream.device, fmt, stream.fstype, out, restore_hint(fmt, str(out)),
    )  # fmt: skip
