"""backup/manifest.json: what a volume belongs to and what the set holds — parsed and written here
only.

Every volume carries the manifest as known when it was closed: the set id, host and date, every
stream begun so far with every piece written so far (size, SHA-256, CRC32, uncompressed range), and
the frame index of the pieces on this volume (enough to read this volume alone). The set size is not
known until the end: `volumes` is null on every volume but the last, which records the total — so a
reader knows a set is complete when it holds the volume whose manifest says so.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mkrec.errors import MkrecError

FORMAT = "mkrec-backup"
VERSION = 1


class ImageFormat(StrEnum):
    """What an image stream holds: every block, or a used-blocks image in its tool's format."""

    RAW = "raw"
    PARTCLONE = "partclone"
    NTFSCLONE = "ntfsclone"


@dataclass
class PieceRecord:
    name: str
    volume: int
    uoffset: int
    usize: int
    size: int
    sha256: str
    crc32: int
    frames: list[tuple[int, int]] | None = None  # (compressed, uncompressed); only on its own volume


@dataclass
class StreamRecord:
    name: str  # e.g. loop3.ext4.tar.zst; pieces are <name>.<NNN>
    kind: str  # tar | image
    device: str
    fstype: str
    mountpoint: str  # on the backed-up system, "/" for the root file system
    frame_size: int
    pieces: list[PieceRecord] = field(default_factory=list)
    complete: bool = False
    size: int | None = None  # uncompressed bytes, once complete
    sha256: str | None = None  # of the uncompressed stream
    compressed_size: int | None = None
    compressed_sha256: str | None = None  # of the pieces concatenated
    # image streams only (absent in sets written before: those hold raw images)
    image: ImageFormat | None = None
    fs_size: int | None = None  # bytes a target partition must hold
    # tar streams: members tar could not read (I/O errors) and archived as zeros; a restore leaves
    # them out and names them (paths as in the catalog, relative to the mount point)
    unreadable: list[str] = field(default_factory=list)


class KeyKind(StrEnum):
    """How a wrapped data key is opened: an age identity (x25519 recipients) or a passphrase."""

    X25519 = "x25519"
    SCRYPT = "scrypt"


@dataclass
class WrappedKey:
    kind: KeyKind
    recipients: list[str]  # the public keys it is wrapped for (none for a passphrase)
    data: str  # base64: an age file (x25519); scrypt's log2(N), salt and the sealed key (scrypt)


@dataclass
class Encryption:
    """An encrypted set: the cipher of its frames and catalogs and its data key, wrapped."""

    cipher: str
    keys: list[WrappedKey]


@dataclass
class Manifest:
    set_id: str
    set_name: str
    host: str
    date: str
    mode: str
    volume: int
    volumes: int | None  # the set size: only the last volume knows it
    streams: list[StreamRecord]
    catalog: str  # this volume's catalog part (path under backup/)
    full_catalog: str | None = None  # the whole catalog, on the last volume
    # files on the volume that SHA256SUMS cannot list: the El Torito boot catalog and the BIOS
    # boot image, both written (patched) by the ISO writer itself
    unlisted: list[str] = field(default_factory=list)
    encryption: Encryption | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        for key, value in self.__dict__.items():
            if key == "encryption":
                data[key] = dataclasses.asdict(value) if value else None
            elif key != "streams":
                data[key] = value
        data["streams"] = []
        for s in self.streams:
            sd = {k: v for k, v in s.__dict__.items() if k != "pieces"}
            sd["pieces"] = []
            for p in s.pieces:
                pd = {k: v for k, v in p.__dict__.items() if k != "frames"}
                if p.frames is not None:
                    pd["frames"] = [list(f) for f in p.frames]
                sd["pieces"].append(pd)
            data["streams"].append(sd)
        return json.dumps(data, indent=1) + "\n"


def _fail(where: str, problem: str) -> MkrecError:
    return MkrecError(f"{where}: {problem}", hint="the volume may be damaged; run 'mkrec verify' on the set")


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, ctx: str) -> Any:
    if key not in obj:
        raise _fail(where, f"{ctx}missing key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _fail(where, f"{ctx}{key!r} must be {names}, got {value!r}")
    return value


def _frames(value: Any, where: str, ctx: str) -> list[tuple[int, int]]:
    if not isinstance(value, list) or not all(
        isinstance(f, list) and len(f) == 2 and all(isinstance(n, int) and n >= 0 for n in f) for f in value
    ):
        raise _fail(where, f"{ctx}'frames' must be a list of [compressed, uncompressed] sizes")
    return [(f[0], f[1]) for f in value]


def _image_format(value: str | None, where: str, ctx: str) -> ImageFormat | None:
    if value is None:
        return None
    try:
        return ImageFormat(value)
    except ValueError:
        allowed = ", ".join(f.value for f in ImageFormat)
        raise _fail(where, f"{ctx}'image' must be one of {allowed}, got {value!r}") from None


def _paths(value: object, where: str, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise _fail(where, f"{what} must be a list of paths")
    return value


def _encryption(value: Any, where: str) -> Encryption | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(where, "'encryption' must be an object or null")
    ctx = "encryption: "
    keys = []
    for kd in _get(value, "keys", list, where, ctx):
        if not isinstance(kd, dict):
            raise _fail(where, f"{ctx}a key is not an object")
        kind = _get(kd, "kind", str, where, ctx)
        if kind not in {k.value for k in KeyKind}:
            raise _fail(where, f"{ctx}unknown key kind {kind!r}")
        recipients = _get(kd, "recipients", list, where, ctx)
        keys.append(
            WrappedKey(KeyKind(kind), [str(r) for r in recipients], _get(kd, "data", str, where, ctx))
        )
    return Encryption(_get(value, "cipher", str, where, ctx), keys)


def parse_manifest(text: str, where: str) -> Manifest:
    """Parse a manifest; errors name the file, the stream/piece and the key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(where, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise _fail(where, "not a manifest (expected a JSON object)")
    if data.get("format") != FORMAT:
        raise _fail(where, f"not an mkrec manifest (format {data.get('format')!r})")
    if data.get("version") != VERSION:
        raise MkrecError(
            f"{where}: manifest version {data.get('version')!r} is not supported "
            f"(this mkrec reads {VERSION})",
            hint="use the mkrec version that wrote the set (it is on volume 1)",
        )
    g = lambda key, kind: _get(data, key, kind, where, "")  # noqa: E731
    volumes = data.get("volumes")
    if volumes is not None and (not isinstance(volumes, int) or isinstance(volumes, bool) or volumes < 1):
        raise _fail(where, f"'volumes' must be a positive number or null, got {volumes!r}")
    streams = []
    for si, sd in enumerate(g("streams", list)):
        if not isinstance(sd, dict):
            raise _fail(where, f"stream {si + 1} is not an object")
        sname = sd.get("name", f"#{si + 1}")
        sctx = f"stream {sname}: "
        sg = lambda key, kind, sd=sd, sctx=sctx: _get(sd, key, kind, where, sctx)  # noqa: E731
        pieces = []
        for pi, pd in enumerate(sg("pieces", list)):
            if not isinstance(pd, dict):
                raise _fail(where, f"{sctx}piece {pi + 1} is not an object")
            pctx = f"{sctx}piece {pd.get('name', f'#{pi + 1}')}: "
            pg = lambda key, kind, pd=pd, pctx=pctx: _get(pd, key, kind, where, pctx)  # noqa: E731
            pieces.append(
                PieceRecord(
                    name=pg("name", str),
                    volume=pg("volume", int),
                    uoffset=pg("uoffset", int),
                    usize=pg("usize", int),
                    size=pg("size", int),
                    sha256=pg("sha256", str),
                    crc32=pg("crc32", int),
                    frames=_frames(pd["frames"], where, pctx) if "frames" in pd else None,
                )
            )
        opt = lambda key, kind, sd=sd, sctx=sctx: (  # noqa: E731
            None if sd.get(key) is None else _get(sd, key, kind, where, sctx)
        )
        streams.append(
            StreamRecord(
                name=sg("name", str),
                kind=sg("kind", str),
                device=sg("device", str),
                fstype=sg("fstype", str),
                mountpoint=sg("mountpoint", str),
                frame_size=sg("frame_size", int),
                pieces=pieces,
                complete=sg("complete", bool),
                size=opt("size", int),
                sha256=opt("sha256", str),
                compressed_size=opt("compressed_size", int),
                compressed_sha256=opt("compressed_sha256", str),
                image=_image_format(opt("image", str), where, sctx),
                fs_size=opt("fs_size", int),
                unreadable=_paths(sd.get("unreadable", []), where, f"{sctx}'unreadable'"),
            )
        )
    full = data.get("full_catalog")
    unlisted = _paths(data.get("unlisted", []), where, "'unlisted'")
    return Manifest(
        set_id=g("set_id", str),
        set_name=g("set_name", str),
        host=g("host", str),
        date=g("date", str),
        mode=g("mode", str),
        volume=g("volume", int),
        volumes=volumes,
        streams=streams,
        catalog=g("catalog", str),
        full_catalog=full if isinstance(full, str) else None,
        unlisted=unlisted,
        encryption=_encryption(data.get("encryption"), where),
    )
