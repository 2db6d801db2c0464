"""What `restic ls --json` (restic 0.14) says of a file system's snapshot, as the catalog entries
`mkrec ls`, `mkrec extract` and `restore compare` read for the other sets. restic gives Go's file
mode (type and set-id bits high up), RFC 3339 times, no symlink target and no hard-link marks:
a symlink's entry has no target, hard links are plain files."""

from __future__ import annotations

import json
import re
import stat
from dataclasses import replace
from datetime import datetime
from typing import Any

from mkrec.backup.catalog import CatalogEntry
from mkrec.errors import MkrecError

# restic's node type -> (catalog type, the stat type bits)
TYPES = {
    "file": ("file", stat.S_IFREG),
    "dir": ("dir", stat.S_IFDIR),
    "symlink": ("symlink", stat.S_IFLNK),
    "fifo": ("fifo", stat.S_IFIFO),
    "chardev": ("char", stat.S_IFCHR),
    "dev": ("block", stat.S_IFBLK),
}
# Go's os.FileMode keeps these apart from the permission bits
GO_SPECIAL = ((1 << 23, stat.S_ISUID), (1 << 22, stat.S_ISGID), (1 << 20, stat.S_ISVTX))
TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def unix_mode(go_mode: int, type_bits: int) -> int:
    mode = type_bits | (go_mode & 0o777)
    for go_bit, bit in GO_SPECIAL:
        if go_mode & go_bit:
            mode |= bit
    return mode


def epoch(text: str) -> float:
    """An RFC 3339 time with nanoseconds (Python's fromisoformat takes only microseconds)."""
    m = TIME.match(text)
    if m is None:
        raise ValueError(f"not a time: {text!r}")
    zone = "+00:00" if m[3] == "Z" else m[3]
    return datetime.fromisoformat(m[1] + zone).timestamp() + float("0." + (m[2] or "0"))


def node_entry(node: dict[str, Any], stream: str) -> CatalogEntry:
    kind, type_bits = TYPES.get(str(node["type"]), (str(node["type"]), 0))
    return CatalogEntry(
        stream=stream,
        path=str(node["path"]).lstrip("/") or ".",
        type=kind,
        size=int(node.get("size") or 0),
        mode=unix_mode(int(node["mode"]), type_bits),
        uid=int(node["uid"]),
        gid=int(node["gid"]),
        mtime=epoch(str(node["mtime"])),
        link="",
        offset=0,
        end=0,
    )


def parse_ls(text: str, stream: str, where: str) -> list[CatalogEntry]:
    """Every node of `restic ls --json SNAPSHOT` (its first line describes the snapshot)."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            node = json.loads(line)
            if node.get("struct_type", "node") == "node":
                entries.append(node_entry(node, stream))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MkrecError(f"{where} line {number}: not a line of restic ls --json ({exc})") from None
    return entries


def top_entry(stream: str, top: dict[str, int]) -> CatalogEntry:
    """The file system's top directory, as the backup kept it beside the snapshot (tops.json)."""
    return CatalogEntry(
        stream, ".", "dir", 0, stat.S_IFDIR | top["mode"], top["uid"], top["gid"],
        top["mtime_ns"] / 1e9, "", 0, 0,
    )  # fmt: skip


def as_image(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    """An image's snapshot holds one file (restic backup --stdin); in a set's catalog the whole
    stream is one member."""
    return [replace(e, path=".", type="image") for e in entries if e.type == "file"][:1]
