"""Reading a stream back out of a backup set: the thin seam between the restore engine and the backup
package. The engine only needs `names()` and `open(name)` (the uncompressed bytes, in order).

Until the backup package's reader is importable this reads the set format of the design: pieces
`backup/<dev>.<fs>.tar.zst.<NNN>` in one directory or in several (mounted volumes), pasted back in
order and decompressed (zstd frames decompress as one stream)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from mkrec.errors import MkrecError

PIECE = re.compile(r"^(?P<stream>.+\.zst)\.(?P<n>\d{3,})$")


class StreamReader(Protocol):
    def names(self) -> list[str]: ...

    def open(self, name: str) -> BinaryIO: ...


class _Concat(io.RawIOBase):
    """The pieces of one stream read as one file."""

    def __init__(self, pieces: list[Path]) -> None:
        self._pieces = list(pieces)
        self._fh: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        while True:
            if self._fh is None:
                if not self._pieces:
                    return 0
                self._fh = open(self._pieces.pop(0), "rb")  # noqa: SIM115 (closed at its end)
            n = self._fh.readinto(buf)  # type: ignore[attr-defined]
            if n:
                return int(n)
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        super().close()


class PiecesReader:
    def __init__(self, roots: list[Path]) -> None:
        self.pieces: dict[str, dict[int, Path]] = {}
        for root in roots:
            for path in sorted(root.glob("**/backup/*")):
                match = PIECE.match(path.name)
                if match:
                    self.pieces.setdefault(match["stream"], {})[int(match["n"])] = path
        if not self.pieces:
            where = ", ".join(str(r) for r in roots)
            raise MkrecError(f"no backup streams found in {where}", hint="point --source at the backup set")

    def names(self) -> list[str]:
        return sorted(self.pieces)

    def open(self, name: str) -> BinaryIO:
        if name not in self.pieces:
            raise MkrecError(
                f"stream {name} is not in the backup set", hint=f"it has: {', '.join(self.names())}"
            )
        numbers = sorted(self.pieces[name])
        missing = [n for n in range(numbers[0], numbers[-1] + 1) if n not in self.pieces[name]]
        if numbers[0] != 0 or missing:
            first = missing[0] if missing else 0
            raise MkrecError(
                f"stream {name}: piece {first:03d} is missing",
                hint="insert or mount the volume that holds it",
            )
        raw = io.BufferedReader(_Concat([self.pieces[name][n] for n in numbers]), buffer_size=1 << 20)
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)


def open_set(source: Path) -> StreamReader:
    """The reader for a backup set at `source` (a directory set, or a directory of mounted volumes)."""
    if not source.exists():
        raise MkrecError(f"{source}: no such backup set", hint="give the set's directory with --source")
    return PiecesReader([source])


def stream_for(names: list[str], device: str) -> tuple[str, str]:
    """(tar stream, raw image stream) of a saved device ("sda3" or "/dev/sda3"): "<dev>.<fs>.tar.zst"
    and "<dev>.<fs>.img.zst" by the set's naming; "" for what the set does not have."""
    dev = device.removeprefix("/dev/").replace("/", "-")
    tar = next((n for n in names if n.startswith(dev + ".") and ".tar." in n), "")
    img = next((n for n in names if n.startswith(dev + ".") and ".tar." not in n), "")
    return tar, img
