"""Mode cd: the backup's ISO volumes, each written without a second copy of its data. Every piece is
written straight into the ISO image, at the place pycdlib will give it, and pycdlib then writes only
what lies around the pieces (descriptors, directories, the small files). The compressed data is
written once.

pycdlib lays file data out in the order of its ISO 9660 directory walk: breadth first, names
sorted. In backup/ the ISO 9660 names are chosen (Rock Ridge and Joliet keep the real ones, and
every reader we know uses those) so that this order is: manifest.json, the pieces in the order
they were written, everything else. When a volume's first piece opens, room is reserved for all
that comes before the pieces (IsoSink._reserve); at close the manifest is padded with trailing
whitespace (the same JSON) so that the first piece lands exactly where it was written
(IsoSink._padding). Should the metadata outgrow the reserve (very many tiny frames), the volume is
written the ordinary way instead, copying the pieces: slower, the same image.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pycdlib

from mkrec.backup.burn import burn
from mkrec.backup.cutstream import Capacity, PieceFile
from mkrec.backup.isoio import InPlace, Placeholder, SkipWriter, Window
from mkrec.backup.setdir import ReadBackError, SetDir, check_volume, keep_bad_image
from mkrec.backup.setreader import IsoVolume
from mkrec.backup.sums import SFV, SHA256SUMS, Sums, sums_of
from mkrec.backup.volumes import (
    FULL_CATALOG,
    MANIFEST,
    VOLUMES_INDEX,
    Ask,
    ClosedVolume,
    SetInfo,
    catalog_name,
    volume_label,
    write_private,
)
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.iso import (
    HYBRID_TAIL_MAX,
    BootPayload,
    BootSpec,
    VolumeInfo,
    add_boot,
    add_data,
    check_layout,
    finish_iso,
    new_iso,
    tree_entries,
)

log = logging.getLogger("mkrec.backup")

SECTOR = 2048
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


# ---- the sink ----


def patch_set_size(iso: Path, size: int) -> None:
    """Fill in the volume set size (unknown while the volume was written) in every volume
    descriptor: a 16-bit both-endian field at byte 120 of the primary and Joliet descriptors."""
    with open(iso, "r+b") as fh:
        sector = 16
        while True:
            fh.seek(sector * 2048)
            head = fh.read(7)
            if len(head) < 7 or head[1:6] != b"CD001" or head[0] == 255:
                return
            if head[0] in (1, 2):
                fh.seek(sector * 2048 + 120)
                fh.write(size.to_bytes(2, "little") + size.to_bytes(2, "big"))
            sector += 1


class IsoSink:
    """CDrec-<date>-vol<N>.iso files in <output>/<host>/<YYYYMMDD>/, volume 1 (or every volume,
    [media] bootable) carrying the rescue system. Pieces stream straight into their place."""

    def __init__(self, ctx: Context, info: SetInfo, rescue: BootPayload | None, ask: Ask) -> None:
        self.info = info
        self.rescue = rescue
        self.ask = ask
        self.media = ctx.config.media
        self.setdir = SetDir(ctx.set_dir)
        self.isos: list[Path] = []
        self.root = self.setdir.create()
        self.work = self.root / ".staging" / "work"
        self.images: dict[int, PlacedImage] = {}
        self.pieces_done = 0  # pieces on closed volumes: the manifest of the next lists them all
        self._boot_sums: dict[Path, Sums] = {}  # the rescue files, hashed once for every volume

    def capacity(self) -> Capacity:
        full = self.media.size.capacity
        boot = 0
        if self.rescue:
            boot = self.rescue.size() + len(self.rescue.entries) * Capacity(0, 0).per_file
            if self.rescue.boot.hybrid:
                boot += HYBRID_TAIL_MAX  # a hybrid image is padded to a cylinder, the backup GPT after it
        rest = full - boot if self.media.bootable == "all" else full
        # The padded manifest may take its whole reserve: more than cutstream's estimate of it.
        fixed = Capacity(0, 0).fixed + manifest_reserve(full, 0)
        return Capacity(first=full - boot, rest=rest, fixed=fixed)

    # ---- layout ----

    def _iso_path(self, number: int) -> Path:
        return self.root / f"{self.info.set_name}-vol{number}.iso"

    def _volume_info(self, number: int) -> VolumeInfo:
        # The set size is not known yet: written as this volume's number, and patched in every
        # volume when the set is complete (commit). The last volume's manifest records it too.
        return VolumeInfo(volume_label(number), self.info.set_name, set_size=number, seqnum=number)

    def _boot_entries(self, number: int) -> list[tuple[Path, str]]:
        if self.rescue and (number == 1 or self.media.bootable == "all"):
            return list(self.rescue.entries)
        return []

    def _boot(self, number: int) -> tuple[list[File], BootSpec | None]:
        entries = self._boot_entries(number)
        files = [_file(src, iso_path) for src, iso_path in entries]
        return files, (self.rescue.boot if entries and self.rescue else None)

    def _unlisted(self, number: int) -> list[str]:
        """Boot files whose bytes on the volume differ from the source (El Torito patches a boot
        info table into isolinux.bin, the boot catalog is made while writing): no checksum fits."""
        if not self._boot_entries(number) or not self.rescue:
            return []
        return [self.rescue.boot.catalog.lstrip("/"), self.rescue.boot.bios_image.lstrip("/")]

    def _listed(self, number: int) -> list[tuple[str, Sums]]:
        """The boot files the checksum lists name, with their sums."""
        unlisted = set(self._unlisted(number))
        out = []
        for src, iso_path in self._boot_entries(number):
            rel = iso_path.lstrip("/")
            if rel in unlisted:
                continue
            if src not in self._boot_sums:
                with open(src, "rb") as fh:
                    self._boot_sums[src] = sums_of(fh)[0]
            out.append((rel, self._boot_sums[src]))
        return out

    def _reserve(self, number: int) -> int:
        """Where volume `number`'s first piece goes: after room for everything the walk puts
        before it, sized for a full volume of PIECES_GUESS pieces."""
        boot, spec = self._boot(number)
        listed = len(boot) + PIECES_GUESS + 6
        sums = (64 + 2 + 96 + 1) * listed
        manifest = manifest_reserve(self.media.size.capacity, self.pieces_done)
        files = [
            *boot,
            File("README.txt", 4096),
            File(SHA256SUMS, sums),
            File(SFV, sums),
            File(MANIFEST, manifest),
            File(catalog_name(number), 1),
            File(FULL_CATALOG, 1),
        ]
        guesses: list[Piece] = [(f"{'x' * 80}.{i:03d}", Placeholder(1), 1) for i in range(PIECES_GUESS)]
        return first_piece_at(self._volume_info(number), files, guesses, spec)

    def _padding(self, number: int, sizes: dict[str, int]) -> int:
        """Bytes manifest.json must grow by for the first piece to land where it was written;
        `sizes`: every file of the volume but its pieces and boot files, by path on the volume."""
        image = self.images.get(number)
        if image is None or not image.pieces:
            return 0
        boot, spec = self._boot(number)
        files = boot + [File(rel, size) for rel, size in sizes.items()]
        first = first_piece_at(self._volume_info(number), files, sources(image, "size"), spec)
        gap = image.reserve - first
        if gap < 0:
            log.info("    volume %d: its metadata outgrew the room kept for it; copying its pieces", number)
            image.copy = True
            return 0
        return gap

    # ---- pieces ----

    def open_piece(self, number: int, name: str) -> PieceFile:
        image = self.images.get(number)
        if image is None:
            out = self._iso_path(number)
            image = PlacedImage(out.with_name(f".{out.name}.placing"), self._reserve(number))
            self.images[number] = image
        return image.open_piece(name)

    # ---- closing ----

    def close_volume(self, volume: ClosedVolume) -> None:
        number = volume.number
        voldir = self.root / ".staging" / f"vol{number:03d}"
        voldir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sums = volume.write_files(
            voldir, self._listed(number), self._unlisted(number), lambda sizes: self._padding(number, sizes)
        )
        out = self._iso_path(number)
        boot, spec = self._boot(number)
        files = boot + [_file(src, iso_path) for src, iso_path in tree_entries(voldir)]
        image = self.images.pop(number, None)
        try:
            self._write(number, files, spec, image, out)
        finally:
            if image:
                image.close()
                image.path.unlink(missing_ok=True)
                self.pieces_done += len(image.pieces)
        if out.stat().st_size > self.media.size.capacity:
            raise MkrecError(
                f"{out.name} is {out.stat().st_size} bytes, more than the media holds "
                f"({self.media.size.capacity})",
                hint="this is a bug in mkrec's capacity maths; please report it",
            )
        self._check(out, sums)
        shutil.rmtree(voldir)
        self.isos.append(out)
        log.info("    volume %d: %s written and checked", number, out.name)
        if self.media.burn:
            burn(out, number, self.ask)

    def _check(self, out: Path, sums: list[tuple[str, Sums]]) -> None:
        try:
            check_volume(IsoVolume(out), sums)
        except ReadBackError as exc:
            kept = keep_bad_image(out, sums, self.setdir.final.parent, f"{self.info.set_name} {out.name}")
            raise MkrecError(
                f"{out.name} was written wrong: {exc.name} {exc.problem}",
                hint=f"a bug in mkrec, not a bad medium: the image and the checksums its files should "
                f"have are kept in {kept} for a report",
            ) from None

    def _write(
        self, number: int, files: list[File], spec: BootSpec | None, image: PlacedImage | None, out: Path
    ) -> None:
        info = self._volume_info(number)
        if image is not None and not image.copy:
            iso = build(info, files, sources(image, "skip"), spec)
            try:
                if placed_where_written(iso, image):
                    write_around(iso, image)
                    image.path.replace(out)
                    return
            finally:
                iso.close()
            log.warning("warning: volume %d: pieces not where they were written; copying them", number)
        pieces = sources(image, "read") if image else []
        finish_iso(build(info, files, pieces, spec), out)

    def commit(self, volumes: int) -> Path:
        for iso in self.isos:
            patch_set_size(iso, volumes)
        names = "".join(f"{iso.name}\n" for iso in self.isos)
        write_private(self.root / VOLUMES_INDEX, names.encode())
        shutil.rmtree(self.root / ".staging", ignore_errors=True)
        return self.setdir.commit()

    def abort(self) -> None:
        for image in self.images.values():
            image.close()
        self.setdir.abort()


def _file(src: Path, iso_path: str) -> File:
    st = src.stat()
    return File(iso_path.lstrip("/"), st.st_size, src, st.st_mode & 0o7777)
