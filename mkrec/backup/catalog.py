"""The catalog: one JSON line per archive member, written per volume (the members whose first
header lies on it) and once more, whole and zstd-compressed, on the last volume.

JSON with ASCII escapes keeps any file name (newlines, bytes that are not UTF-8, via surrogate
escapes) on one line that a person can still read with `less` from the rescue system."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_text

from mkrec.backup.tarscan import Entry


@dataclass(frozen=True)
class CatalogEntry:
    stream: str
    path: str  # relative to the stream's mount point; "." is the mount point itself
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float
    link: str
    offset: int
    end: int
    sparse: bool = False

    def absolute(self, mountpoint: str) -> str:
        """The path on the backed-up system ('/' + mount point + path)."""
        if self.path == ".":
            return mountpoint
        return posixpath.join(mountpoint, self.path)


def entry_line(stream: str, e: Entry) -> str:
    """One catalog line: compact JSON, keys in a fixed order. Written by hand rather than through
    json.dumps(dict), which costs more than scanning the tar header did, once per file."""
    extra = ',"sparse":true' if e.sparse else ""
    if e.type in ("char", "block"):
        extra += f',"dev":[{e.major},{e.minor}]'
    return (
        f'{{"stream":{_json_text(stream)},"path":{_json_text(e.path)},"type":"{e.type}","size":{e.size},'
        f'"mode":{e.mode},"uid":{e.uid},"gid":{e.gid},"mtime":{float(e.mtime)!r},'
        f'"link":{_json_text(e.link)},"offset":{e.offset},"end":{e.end}{extra}}}'
    )


def parse_line(line: str, where: str) -> CatalogEntry:
    try:
        r = json.loads(line)
        return CatalogEntry(
            stream=r["stream"],
            path=r["path"],
            type=r["type"],
            size=int(r["size"]),
            mode=int(r["mode"]),
            uid=int(r["uid"]),
            gid=int(r["gid"]),
            mtime=float(r["mtime"]),
            link=r["link"],
            offset=int(r["offset"]),
            end=int(r["end"]),
            sparse=bool(r.get("sparse", False)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a catalog line ({exc})") from None


def parse_catalog(text: str, where: str) -> list[CatalogEntry]:
    return [parse_line(line, f"{where} line {n}") for n, line in enumerate(text.splitlines(), 1) if line]
