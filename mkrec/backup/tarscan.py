"""Reading tar headers as the stream goes by: one Entry per archive member, with where its first
header starts and where its data ends in the uncompressed stream.

Understands what GNU tar writes: ustar, GNU (././@LongLink 'L'/'K' names, old GNU sparse 'S' with
extension blocks, base-256 numbers) and pax ('x' per-member and 'g' global records, GNU sparse
0.x and 1.0). Data is never copied: the scanner only keeps the few header blocks it needs, so it can
sit in the backup pipeline at full speed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

BLOCK = 512

# tar typeflag -> catalog type
TYPES = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",  # contiguous file: a regular file everywhere that matters
    b"S": "file",  # old GNU sparse
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "char",
    b"4": "block",
    b"5": "dir",
    b"6": "fifo",
}
# Records that belong to the member after them rather than being members themselves.
PREFIX_TYPES = {b"x", b"g", b"L", b"K", b"X"}


class Entry(NamedTuple):
    """One archive member. Offsets are in the uncompressed tar stream: `offset` is its first
    header (extended headers included), `end` is just past its padded data. A NamedTuple: one is
    made per file while the backup streams, and it is several times cheaper to build than a frozen
    dataclass."""

    path: str
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
    major: int = 0
    minor: int = 0


class TarFormatError(ValueError):
    pass


def _number(field: bytes) -> int:
    """A tar numeric field: octal text, or GNU base-256 (high bit set) for big values."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    try:
        return int(field.rstrip(b"\0 ") or b"0", 8)  # the usual '0000644\0', without the copies below
    except ValueError:
        pass
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"bad numeric field {field!r}") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """Parse 'LEN key=value\\n' records. Values are UTF-8 (tar writes raw bytes for odd names)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding after the last record
            break
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length <= 0:
            raise TarFormatError("bad pax record length")
        record = data[space + 1 : pos + length - 1]  # without the trailing newline
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class TarScanner:
    """Feed it the stream in chunks of any size; it calls on_entry(Entry) for every member.

    State machine: either skipping member data (`_skip` bytes), collecting the payload of an
    extended header (`_collect` bytes into `_payload`), or collecting the next 512-byte header."""

    def __init__(self, on_entry: Callable[[Entry], None]) -> None:
        self.on_entry = on_entry
        self.pos = 0  # bytes consumed so far
        self.finished = False  # saw the end-of-archive zero block
        self._header = bytearray()
        self._skip = 0
        self._collect = 0
        self._payload = bytearray()
        self._payload_kind = b""
        self._skip_after_collect = 0
        self._start: int | None = None  # offset of the first header of the current member
        self._pax: dict[str, str] = {}
        self._global: dict[str, str] = {}
        self._long_name: str | None = None
        self._long_link: str | None = None
        self._gnu_sparse: tuple[bytes, int] | None = None  # header waiting for extension blocks
        self._sparse_ext = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n:
            if self.finished:
                self.pos += n - i
                return
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                self.pos += step
                continue
            if self._collect:
                step = min(self._collect, n - i)
                self._payload += view[i : i + step]
                self._collect -= step
                i += step
                self.pos += step
                if not self._collect:
                    self._extended_done()
                continue
            if not self._header and n - i >= BLOCK:  # a whole header in this chunk: no copying round
                i += BLOCK
                self.pos += BLOCK
                self._block(bytes(view[i - BLOCK : i]), self.pos - BLOCK)
                continue
            need = BLOCK - len(self._header)
            step = min(need, n - i)
            self._header += view[i : i + step]
            i += step
            self.pos += step
            if len(self._header) == BLOCK:
                block = bytes(self._header)
                self._header.clear()
                self._block(block, self.pos - BLOCK)

    # ---- one 512-byte header block ----

    def _block(self, block: bytes, at: int) -> None:
        if self._sparse_ext:
            self._sparse_extension(block)
            return
        if block == b"\0" * BLOCK:
            if self._start is None:
                self.finished = True
                return
            raise TarFormatError(f"zero block inside a member at offset {at}")
        if self._start is None:
            self._start = at
        kind = block[156:157]
        size = _number(block[124:136])
        if kind in PREFIX_TYPES:
            self._payload.clear()
            self._payload_kind = kind
            self._collect = size
            self._skip_after_collect = _padded(size) - size
            if size == 0:
                self._extended_done()
            return
        if kind == b"S" and block[482]:
            # Old GNU sparse with more map entries in extension blocks after the header.
            self._gnu_sparse = (block, at)
            self._sparse_ext = True
            return
        self._member(block)

    def _sparse_extension(self, block: bytes) -> None:
        if not block[504]:
            self._sparse_ext = False
            header, _ = self._gnu_sparse or (b"", 0)
            self._gnu_sparse = None
            self._member(header)

    def _extended_done(self) -> None:
        payload = bytes(self._payload)
        self._payload.clear()
        kind = self._payload_kind
        if kind == b"x" or kind == b"X":
            self._pax.update(_pax_records(payload))
        elif kind == b"g":
            self._global.update(_pax_records(payload))
        elif kind == b"L":
            self._long_name = _text(payload)
        elif kind == b"K":
            self._long_link = _text(payload)
        self._skip = self._skip_after_collect
        if kind == b"g":
            # A global header is not part of any member: the next member starts after it.
            self._start = None

    def _member(self, block: bytes) -> None:
        pax = {**self._global, **self._pax} if self._global or self._pax else self._pax
        kind = block[156:157]
        stored = int(pax["size"]) if "size" in pax else _number(block[124:136])
        name = _text(block[0:100])
        if block[257:263] == b"ustar\0" and block[345]:  # POSIX prefix field
            name = _text(block[345:500]) + "/" + name
        name = self._long_name or pax.get("path", name)
        link = self._long_link or pax.get("linkpath", _text(block[157:257]))
        size = stored
        sparse = False
        if kind == b"S":
            sparse = True
            size = _number(block[483:495])
        if "GNU.sparse.realsize" in pax or "GNU.sparse.size" in pax:
            sparse = True
            size = int(pax.get("GNU.sparse.realsize") or pax["GNU.sparse.size"])
            name = pax.get("GNU.sparse.name", name)
        mtime = float(pax["mtime"]) if "mtime" in pax else float(_number(block[136:148]))
        type_ = TYPES.get(kind, "other")
        has_data = type_ in ("file", "other")
        end = self.pos + (_padded(stored) if has_data else 0)
        assert self._start is not None
        entry = Entry(
            path=_clean(name),
            type=type_,
            size=size if type_ == "file" else 0,
            mode=_number(block[100:108]) & 0o7777,
            uid=int(pax["uid"]) if "uid" in pax else _number(block[108:116]),
            gid=int(pax["gid"]) if "gid" in pax else _number(block[116:124]),
            mtime=mtime,
            link=_clean(link) if type_ == "hardlink" else link,
            offset=self._start,
            end=end,
            sparse=sparse,
            major=_number(block[329:337]) if type_ in ("char", "block") else 0,
            minor=_number(block[337:345]) if type_ in ("char", "block") else 0,
        )
        self._start = None
        self._pax = {}
        self._long_name = self._long_link = None
        self._skip = end - self.pos
        self.on_entry(entry)


def _clean(name: str) -> str:
    """'./etc/passwd' -> 'etc/passwd'; './' -> '.' (the file system's top directory)."""
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    return name or "."


def scan(data: bytes) -> list[Entry]:
    """All entries of a whole archive in memory (tests, small streams)."""
    out: list[Entry] = []
    scanner = TarScanner(out.append)
    scanner.feed(data)
    return out
