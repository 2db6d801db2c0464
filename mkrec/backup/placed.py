"""Mode cd's volumes without a second copy of the data: every piece is written straight into the
ISO image, at the place pycdlib will give it, and pycdlib then writes only what lies around the
pieces (descriptors, directories, the small files). The compressed data is written once.

pycdlib lays file data out in the order of its ISO 9660 directory walk: breadth first, names
sorted. In backup/ the ISO 9660 names are chosen (Rock Ridge and Joliet keep the real ones, and
every reader we know uses those) so that this order is: manifest.json, the pieces in the order
they were written, everything else. When a volume's first piece opens, room is reserved for all
that comes before the pieces; at close the manifest is padded with trailing whitespace (the same
JSON) so that the first piece lands exactly where it was written. Should the metadata outgrow the
reserve (very many tiny frames), the volume is written the ordinary way instead, copying the
pieces: slower, the same image.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pycdlib

from mkrec.iso import BootSpec, VolumeInfo, add_boot, add_data, check_layout, new_iso

SECTOR = 2048
MANIFEST = "backup/manifest.json"
PIECES_GUESS = 64  # pieces one volume is assumed to hold when its reserve is sized
FRAME_GUESS = 256 * 1024  # compressed bytes per 4 MiB frame assumed by the reserve (16:1)
MANIFEST_PER_PIECE = 1024  # a piece's record in manifest.json, without its frame index
MANIFEST_PER_FRAME = 64  # one frame of the index, as manifest.json prints it


def align(n: int) -> int:
    return -(-n // SECTOR) * SECTOR


def iso9660_path(rel: str, piece_order: dict[str, int]) -> str:
    """The ISO 9660 name of a volume's file (Rock Ridge and Joliet show `rel` itself): in backup/
    a prefix orders the walk as manifest, pieces in the order written, the rest."""
    top, _, name = rel.rpartition("/")
    if top != "backup":
        return "/" + rel
    if name == "manifest.json":
        return f"/backup/0.{name}"
    if name in piece_order:
        return f"/backup/1.{piece_order[name]:05d}.{name}"
    return f"/backup/2.{name}"


def manifest_reserve(capacity: int, earlier_pieces: int) -> int:
    """Room for manifest.json on a volume: every piece of the set so far plus this volume's,
    and the frame index of a full volume."""
    frames = capacity // FRAME_GUESS if capacity else 0
    return 4096 + MANIFEST_PER_PIECE * (earlier_pieces + PIECES_GUESS) + MANIFEST_PER_FRAME * frames


# ---- data sources pycdlib reads, and the output it writes through ----


class Span:
    """Stands for `n` bytes that are already in the image: the writer skips over them."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class _Source:
    mode = "rb"  # pycdlib wants to see a binary file

    def __init__(self, size: int) -> None:
        self.size = size
        self.pos = 0

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self.pos = (
            pos if whence == os.SEEK_SET else (self.pos + pos if whence == os.SEEK_CUR else self.size + pos)
        )
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _take(self, n: int) -> int:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        self.pos += n
        return n


class InPlace(_Source):
    """A placed piece as pycdlib's data source: reading yields Spans, never bytes."""

    def read(self, n: int = -1) -> Span:
        return Span(self._take(n))


class Window(_Source):
    """A placed piece read for real, for the ordinary way of writing (`size` bytes at `offset`)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__(size)
        self.fd = fd
        self.offset = offset

    def read(self, n: int = -1) -> bytes:
        start = self.offset + self.pos
        return os.pread(self.fd, self._take(n), start)


class Placeholder(_Source):
    """A file known only by its size (sizing a layout before the file exists)."""

    def read(self, n: int = -1) -> bytes:
        return bytes(self._take(n))


class SkipWriter:
    """pycdlib's output file: bytes are written, Spans skipped (their bytes are there already)."""

    def __init__(self, fh: io.BufferedRandom) -> None:
        self.fh = fh

    def write(self, data: bytes | Span) -> int:
        if isinstance(data, Span):
            self.fh.seek(len(data), os.SEEK_CUR)
            return len(data)
        return self.fh.write(data)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        return self.fh.seek(pos, whence)

    def tell(self) -> int:
        return self.fh.tell()


# ---- one volume's image while its pieces stream in ----


class PieceWriter:
    """What cutstream writes a piece through: straight into the image at the piece's place."""

    def __init__(self, image: PlacedImage, name: str, offset: int) -> None:
        self.image = image
        self.name = name
        self.offset = offset
        self.size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            done = os.pwrite(self.image.fd, view, self.offset + self.size)
            self.size += done
            view = view[done:]
        return len(data)

    def close(self) -> None:
        self.image.closed(self)


@dataclass
class PlacedImage:
    path: Path  # the image being written (a temporary name)
    reserve: int  # where the first piece starts: room for everything before the pieces
    fd: int = -1
    pieces: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (offset, size)
    next: int = 0
    copy: bool = False  # the metadata outgrew the reserve: write the volume the ordinary way

    def __post_init__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.next = self.reserve

    def open_piece(self, name: str) -> PieceWriter:
        return PieceWriter(self, name, self.next)

    def closed(self, piece: PieceWriter) -> None:
        self.pieces[piece.name] = (piece.offset, piece.size)
        self.next = align(piece.offset + piece.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---- laying a volume out ----


@dataclass(frozen=True)
class File:
    rel: str  # path on the volume, as Rock Ridge and Joliet show it
    size: int
    source: Path | None = None  # None: a placeholder of that size
    mode: int = 0o600


Piece = tuple[str, object, int]  # name, what pycdlib reads it from, size


def sources(image: PlacedImage, how: str) -> list[Piece]:
    """The image's pieces for build(): "skip" as InPlace sources (the image already holds them),
    "read" as Windows onto the image, "size" as placeholders (layout only)."""
    out: list[Piece] = []
    for name, (offset, size) in image.pieces.items():
        if how == "skip":
            out.append((name, InPlace(size), size))
        elif how == "read":
            out.append((name, Window(image.fd, offset, size), size))
        else:
            out.append((name, Placeholder(size), size))
    return out


def build(info: VolumeInfo, files: list[File], pieces: list[Piece], boot: BootSpec | None) -> pycdlib.PyCdlib:
    """The pycdlib tree of a volume, its extents assigned: `files` by path, `pieces` in backup/
    in the order given."""
    iso = new_iso(info)
    made: set[PurePosixPath] = set()
    order = {name: i for i, (name, _src, _size) in enumerate(pieces, 1)}
    for f in sorted(files, key=lambda f: f.rel):
        src: object = f.source if f.source is not None else Placeholder(f.size)
        add_data(iso, src, f.size, "/" + f.rel, made, iso_path=iso9660_path(f.rel, order), mode=f.mode)
    for name, src, size in pieces:
        rel = f"backup/{name}"
        add_data(iso, src, size, "/" + rel, made, iso_path=iso9660_path(rel, order))
    if boot is not None:
        add_boot(iso, boot)
    iso.force_consistency()  # extents assigned now (isohybrid's GPT included), not at write time
    return iso


def offset_of(iso: pycdlib.PyCdlib, rel: str) -> int:
    return int(iso.get_record(rr_path="/" + rel).extent_location()) * SECTOR


def first_piece_at(info: VolumeInfo, files: list[File], pieces: list[Piece], boot: BootSpec | None) -> int:
    """Where the layout of these files and pieces puts the first piece (layout only)."""
    iso = build(info, files, pieces, boot)
    try:
        return offset_of(iso, f"backup/{pieces[0][0]}")
    finally:
        iso.close()


def placed_where_written(iso: pycdlib.PyCdlib, image: PlacedImage) -> bool:
    return all(offset_of(iso, f"backup/{name}") == offset for name, (offset, _size) in image.pieces.items())


def write_around(iso: pycdlib.PyCdlib, image: PlacedImage) -> None:
    """Write everything but the pieces into the image that holds them."""
    check_layout(iso, image.path)
    with open(image.path, "r+b") as fh:
        iso.write_fp(SkipWriter(fh), blocksize=16 * 1024 * 1024)  # type: ignore[arg-type]
