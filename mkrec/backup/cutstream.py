"""cutstream: place compressed frames into pieces and pieces into volumes of a fixed capacity.

A volume is closed at a frame boundary when the next frame (plus the metadata the volume must also
carry: its catalog part, manifest, README, checksum lists) would not fit. Pieces never split a frame
either, so every piece — and so every volume — can be decompressed on its own.

Library-like: no printing, no file names of its own. It writes through a PieceStore (real files in
the backup, io.BytesIO in the tests) and reports progress(done, total) for the current volume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mkrec.backup.frames import Frame
from mkrec.backup.sums import crc32
from mkrec.errors import MkrecError
from mkrec.progress import ProgressCallback
from mkrec.sizes import format_size

PIECE_MAX = 1024**3  # well below the 4 GiB ISO 9660 file size limit


@dataclass(frozen=True)
class Capacity:
    """Bytes a volume may take, and how the medium counts file sizes.

    `first`/`rest`: capacity of volume 1 (what the rescue payload leaves) and of the others;
    0 means unlimited (mode path). Every file is rounded up to `block` and costs `per_file` more
    (ISO directory records in three trees, or a tar header); `fixed` covers descriptors, path
    tables and the end of the archive."""

    first: int
    rest: int
    block: int = 2048
    per_file: int = 3 * 2048
    fixed: int = 1024 * 1024

    def of(self, volume: int) -> int:
        return self.first if volume == 1 else self.rest

    def usage(self, sizes: list[int]) -> int:
        return self.fixed + sum(-(-s // self.block) * self.block + self.per_file for s in sizes)


@dataclass
class PieceInfo:
    name: str
    stream: str
    index: int
    volume: int
    uoffset: int  # where its first frame starts in the uncompressed stream
    usize: int = 0
    size: int = 0
    sha256: str = ""
    crc32: int = 0
    frames: list[tuple[int, int]] = field(default_factory=list)  # (compressed, uncompressed) sizes


@dataclass
class VolumeContent:
    number: int
    pieces: list[PieceInfo]
    catalog: list[str]  # catalog lines (JSON) of members whose first header is on this volume
    last: bool = False


@dataclass
class StreamResult:
    name: str
    pieces: list[PieceInfo]
    compressed_size: int


class PieceFile(Protocol):
    def write(self, data: bytes, /) -> int: ...
    def close(self) -> None: ...


class PieceStore(Protocol):
    def open_piece(self, volume: int, name: str) -> PieceFile: ...
    def close_piece(self, volume: int, name: str, fh: PieceFile) -> None: ...
    def close_volume(self, content: VolumeContent) -> None: ...


def metadata_sizes(catalog_bytes: int, set_pieces: int, streams: int, frames: int, files: int) -> list[int]:
    """Upper estimates of the files every volume carries besides its pieces: catalog part,
    manifest.json (every piece of the set so far, this volume's frame index), README.txt,
    SHA256SUMS and Checksums.sfv."""
    manifest = 4096 + 600 * (set_pieces + 1) + 512 * streams + 32 * frames
    sums = 200 * (files + 4)
    return [catalog_bytes, manifest, 4096, sums, sums]


class CutStream:
    def __init__(
        self,
        store: PieceStore,
        capacity: Capacity,
        *,
        piece_max: int = PIECE_MAX,
        on_volume: Callable[[int], None] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.piece_max = piece_max
        self.on_volume = on_volume
        self.progress = progress
        self.volume = 1
        self.all_pieces: list[PieceInfo] = []
        self.streams = 0
        self._pieces: list[PieceInfo] = []  # on the open volume
        self._catalog: list[str] = []
        self._catalog_bytes = 0
        self._frames = 0
        self._stream: str | None = None
        self._piece: PieceInfo | None = None
        self._fh: PieceFile | None = None
        self._piece_sha = hashlib.sha256()
        self._stream_pieces: list[PieceInfo] = []
        self._compressed = 0
        self._next_index = 1

    # ---- capacity ----

    def _usage(self, piece_sizes: list[int], catalog_bytes: int, frames: int) -> int:
        meta = metadata_sizes(
            catalog_bytes, len(self.all_pieces) + 1, self.streams, frames, len(piece_sizes) + 5
        )
        return self.capacity.usage(piece_sizes + meta)

    def _fits(self, frame: Frame, new_piece: bool, catalog_bytes: int) -> bool:
        cap = self.capacity.of(self.volume)
        if cap == 0:
            return True
        sizes = [p.size for p in self._pieces]
        if new_piece:
            sizes.append(len(frame.data))
        else:
            sizes[-1] += len(frame.data)
        return self._usage(sizes, self._catalog_bytes + catalog_bytes, self._frames + 1) <= cap

    def room_for(self, size: int) -> bool:
        """Would a file of `size` bytes (e.g. the whole-set catalog) still fit on the open volume?"""
        cap = self.capacity.of(self.volume)
        sizes = [p.size for p in self._pieces] + [size]
        return cap == 0 or self._usage(sizes, self._catalog_bytes, self._frames) <= cap

    @property
    def pending_catalog_bytes(self) -> int:
        """Catalog lines of the open volume, in bytes: not yet handed to the store."""
        return self._catalog_bytes

    # ---- streams and frames ----

    def start_stream(self, name: str) -> None:
        self._stream = name
        self.streams += 1
        self._stream_pieces = []
        self._compressed = 0
        self._next_index = 1

    def add(self, frame: Frame) -> None:
        assert self._stream is not None, "start_stream() first"
        catalog_bytes = sum(len(line) + 1 for line in frame.entries)
        piece = self._piece
        new_piece = piece is None or piece.size + len(frame.data) > self.piece_max
        if not self._fits(frame, new_piece, catalog_bytes):
            self._close_volume(last=False)
            new_piece = True
            if not self._fits(frame, True, catalog_bytes):
                raise MkrecError(
                    f"volume {self.volume} ({format_size(self.capacity.of(self.volume))}) cannot hold even "
                    f"one frame of {format_size(len(frame.data))}",
                    hint="use a larger [media] size",
                )
        if new_piece:
            self._open_piece(frame.uoffset)
        assert self._piece is not None and self._fh is not None
        self._fh.write(frame.data)
        self._piece_sha.update(frame.data)
        self._piece.crc32 = crc32(frame.data, self._piece.crc32)
        self._piece.size += len(frame.data)
        self._piece.usize += frame.usize
        self._piece.frames.append((len(frame.data), frame.usize))
        self._compressed += len(frame.data)
        self._frames += 1
        self._catalog.extend(frame.entries)
        self._catalog_bytes += catalog_bytes
        if self.progress:
            cap = self.capacity.of(self.volume)
            self.progress(sum(p.size for p in self._pieces), cap)

    def end_stream(self) -> StreamResult:
        self._close_piece()
        assert self._stream is not None
        result = StreamResult(self._stream, self._stream_pieces, self._compressed)
        self._stream = None
        return result

    def finish(self, trailer: int = 0) -> int:
        """Close the last volume; `trailer` bytes (the whole-set catalog) must fit on it, else one
        more volume is opened for them. Returns the number of volumes."""
        self._close_piece()
        if trailer and not self.room_for(trailer):
            self._close_volume(last=False)
        self._close_volume(last=True)
        return self.volume - 1

    # ---- pieces and volumes ----

    def _open_piece(self, uoffset: int) -> None:
        self._close_piece()
        assert self._stream is not None
        name = f"{self._stream}.{self._next_index:03d}"
        self._piece = PieceInfo(name, self._stream, self._next_index, self.volume, uoffset)
        self._next_index += 1
        self._piece_sha = hashlib.sha256()
        self._fh = self.store.open_piece(self.volume, name)
        self._pieces.append(self._piece)
        self.all_pieces.append(self._piece)
        self._stream_pieces.append(self._piece)

    def _close_piece(self) -> None:
        if self._piece is None or self._fh is None:
            return
        self._piece.sha256 = self._piece_sha.hexdigest()
        self.store.close_piece(self.volume, self._piece.name, self._fh)
        self._piece = None
        self._fh = None

    def _close_volume(self, last: bool) -> None:
        self._close_piece()
        content = VolumeContent(self.volume, self._pieces, self._catalog, last)
        self.store.close_volume(content)
        self.volume += 1
        self._pieces = []
        self._catalog = []
        self._catalog_bytes = 0
        self._frames = 0
        if not last and self.on_volume:
            self.on_volume(self.volume)
