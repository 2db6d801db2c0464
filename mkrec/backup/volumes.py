"""Turning what cutstream closes into the files of a volume: pieces (written by cutstream through
this PieceStore), the catalog part, manifest.json, README.txt, SHA256SUMS and Checksums.sfv; and
the Sink protocol every medium (ISO, directory, tape) fills to pack them."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol

import zstandard

from mkrec.backup.cutstream import Capacity, PieceFile, PieceInfo, VolumeContent
from mkrec.backup.encryption import FULL_CATALOG_SLOT, SetCipher
from mkrec.backup.manifest import Encryption, Manifest, PieceRecord, StreamRecord
from mkrec.backup.sums import SFV, SHA256SUMS, Sums, format_sfv, format_sha256sums, sums_of

FULL_CATALOG = "backup/catalog.all.jsonl.zst"
MANIFEST = "backup/manifest.json"
VOLUMES_INDEX = "volumes.txt"  # a cd set's directory: its ISO files, one a line (read over HTTP/SSH)


def catalog_name(volume: int) -> str:
    return f"backup/catalog.vol{volume:03d}.jsonl"


def volume_label(volume: int) -> str:
    return f"CDREC_{volume}"


@dataclass(frozen=True)
class SetInfo:
    set_id: str  # a UUID: volumes of two sets never mix
    set_name: str  # CDrec-YYYYMMDD-HHMM
    host: str
    date: str
    mode: str
    encryption: Encryption | None = None  # the wrapped data key of an encrypted set


Ask = Callable[[str], None]  # show a prompt and wait for the operator (Enter)
Padding = Callable[[dict[str, int]], int]  # file sizes on a volume -> bytes manifest.json must grow by


class Sink(Protocol):
    """Where volumes go: ISO files (isosink), a directory (dirsink), a tape (tapesink)."""

    work: Path  # scratch space inside the temporary set (the whole-set catalog grows there)

    def capacity(self) -> Capacity: ...
    def open_piece(self, number: int, name: str) -> PieceFile: ...
    def close_volume(self, volume: ClosedVolume) -> None:
        """Write the volume's files (ClosedVolume.write_files), pack and read back the volume."""
        ...

    def commit(self, volumes: int) -> Path: ...
    def abort(self) -> None: ...


def create_private(path: Path) -> BinaryIO:
    """A new file only its owner can read: a backup holds /etc/shadow."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "wb")


def stage_piece(voldir: Path, name: str) -> BinaryIO:
    """A piece as a file in <voldir>/backup: the sinks that keep pieces as files (directory, tape)."""
    backup = voldir / "backup"
    backup.mkdir(parents=True, exist_ok=True, mode=0o700)
    return create_private(backup / name)


RECOVERY_IN_SET = "etc/recovery"


def recovery_files(recovery_dir: Path) -> list[Path]:
    """The captured layout's files that volume 1 of a set carries (none before a capture)."""
    return sorted(p for p in recovery_dir.rglob("*") if p.is_file()) if recovery_dir.is_dir() else []


def add_recovery(recovery_dir: Path, voldir: Path) -> None:
    """Volume 1 of every set carries a readable copy of the captured layout (an ISO volume 1 has it
    among its boot files), so a set restores with nothing but itself."""
    for src in recovery_files(recovery_dir):
        dest = voldir / RECOVERY_IN_SET / src.relative_to(recovery_dir)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(dest, src.read_bytes())


def write_private(path: Path, data: bytes) -> None:
    with create_private(path) as fh:
        fh.write(data)


def render_readme(info: SetInfo, volume: int, last: bool, total: int | None) -> str:
    of = f"{volume} of {total}" if last and total else f"{volume} (the last volume records the set size)"
    return f"""mkrec backup set {info.set_name}
====================================
Host:    {info.host}
Date:    {info.date}
Set id:  {info.set_id}
Volume:  {of}

This volume holds part of a bare-metal backup made by mkrec. backup/ has the compressed tar
streams, one per file system, cut into pieces <device>.<fs>.tar.zst.<NNN>. Every piece is a
series of independent zstd frames: any volume can be read alone, and a lost volume costs only
the files stored on it. backup/manifest.json lists the streams, pieces, sizes and checksums;
backup/catalog.volNNN.jsonl lists the files whose data starts on this volume (one JSON line
each); the last volume also has backup/catalog.all.jsonl.zst, the catalog of the whole set.

Check this volume:    sha256sum -c SHA256SUMS     (or: cksfv -f Checksums.sfv)
Check the whole set:  mkrec verify DIR-OR-ISO-FILES
List files:           mkrec ls SET [PATH]
Restore files:        mkrec extract SET PATH... -C DEST
Restore the machine:  boot volume 1 and run start-restore
{ENCRYPTED_NOTE if info.encryption else ""}"""


ENCRYPTED_NOTE = """
This set is encrypted: the pieces and the catalogs open only with the set's age identity or
passphrase (mkrec ls/extract/restore --identity FILE, or the passphrase typed when asked).
Checksums (sha256sum, cksfv, mkrec verify) work without it.
"""


@dataclass
class ClosedVolume:
    """A volume cutstream has closed: its pieces are written, its metadata files not yet. The sink
    decides where they go (write_files) and what the medium adds to them (boot files)."""

    number: int
    last: bool
    title: str  # the checksum lists' comment
    pieces: list[PieceInfo]
    manifest: Manifest
    catalog: bytes  # this volume's catalog part
    readme: str
    full_catalog: Path | None  # the whole-set catalog, finished (last volume only)

    def write_files(
        self,
        voldir: Path,
        listed: list[tuple[str, Sums]] | None = None,
        unlisted: list[str] | None = None,
        padding: Padding | None = None,
    ) -> list[tuple[str, Sums]]:
        """Write the metadata files into `voldir` (where the pieces are too, for sinks that stage
        them) and return every checksummed file of the volume with its sums. `listed`: files the
        medium adds that the checksum lists name; `unlisted`: files it adds that they cannot name;
        `padding`: asked, with the sizes of every file but pieces and `listed`, how many bytes of
        whitespace manifest.json must grow by (the ISO sink places the pieces after it)."""
        listed = listed or []
        (voldir / "backup").mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(voldir / catalog_name(self.number), self.catalog)
        if self.full_catalog is not None:
            os.replace(self.full_catalog, voldir / FULL_CATALOG)
        self.manifest.unlisted = unlisted or []
        manifest_path = voldir / MANIFEST
        write_private(manifest_path, self.manifest.to_json().encode())
        write_private(voldir / "README.txt", self.readme.encode())
        pad = padding(self._sizes_with_sums(voldir, [name for name, _ in listed])) if padding else 0
        if pad:
            with open(manifest_path, "ab") as fh:  # trailing whitespace: the same JSON
                fh.write(b" " * (pad - 1) + b"\n")
        sums = self._sums(voldir) + listed
        sums.sort()
        write_private(voldir / SHA256SUMS, format_sha256sums(sums).encode())
        write_private(voldir / SFV, format_sfv(sums, self.title).encode())
        return sums

    @staticmethod
    def _files(voldir: Path) -> dict[str, Path]:
        """The volume's files in its staging directory (pieces too, where the sink stages them),
        but not the checksum lists."""
        out = {}
        for dirpath, _dirs, files in os.walk(voldir):
            for name in files:
                path = Path(dirpath) / name
                rel = path.relative_to(voldir).as_posix()
                if rel not in (SHA256SUMS, SFV):
                    out[rel] = path
        return out

    def _sizes_with_sums(self, voldir: Path, listed: list[str]) -> dict[str, int]:
        """Sizes of the volume's files but pieces and `listed`, SHA256SUMS and Checksums.sfv
        included: their size follows from the names they list (every checksum has a fixed width)."""
        piece_names = {f"backup/{p.name}" for p in self.pieces}
        sizes = {
            rel: path.stat().st_size for rel, path in self._files(voldir).items() if rel not in piece_names
        }
        blank = [(name, Sums("0" * 64, 0)) for name in sorted(set(sizes) | piece_names | set(listed))]
        sizes[SHA256SUMS] = len(format_sha256sums(blank).encode())
        sizes[SFV] = len(format_sfv(blank, self.title).encode())
        return sizes

    def _sums(self, voldir: Path) -> list[tuple[str, Sums]]:
        known = {f"backup/{p.name}": Sums(p.sha256, p.crc32) for p in self.pieces}
        out = list(known.items())
        for rel, path in self._files(voldir).items():
            if rel not in known:
                with open(path, "rb") as fh:
                    out.append((rel, sums_of(fh)[0]))
        return out


class VolumeWriter:
    """The PieceStore behind cutstream for real backups: pieces go to the sink; at a volume's
    close the manifest, catalog part and README are made and the sink writes the volume."""

    def __init__(self, info: SetInfo, sink: Sink, staging: Path, cipher: SetCipher | None = None) -> None:
        self.info = info
        self.sink = sink
        self.staging = staging
        self.cipher = cipher
        self.streams: list[StreamRecord] = []
        self.pieces: list[PieceInfo] = []
        self.volumes = 0
        staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._full_path = staging / "catalog.all.jsonl.zst"
        # An encrypted set's file names never reach a disk in the clear: its whole-set catalog
        # grows in memory (compressed) and is written sealed.
        self._full_raw: IO[bytes] = io.BytesIO() if cipher else create_private(self._full_path)
        self._full = zstandard.ZstdCompressor(level=3).stream_writer(self._full_raw, closefd=cipher is None)

    # ---- streams ----

    def start_stream(self, record: StreamRecord) -> None:
        self.streams.append(record)

    def catalog_estimate(self, pending_bytes: int) -> int:
        """Upper bound of the whole-set catalog's size once the pending lines are in."""
        return self._full_raw.tell() + pending_bytes + 64 * 1024

    # ---- PieceStore ----

    def open_piece(self, volume: int, name: str) -> PieceFile:
        return self.sink.open_piece(volume, name)

    def close_piece(self, volume: int, name: str, fh: PieceFile) -> None:
        fh.close()

    def close_volume(self, content: VolumeContent) -> None:
        n = content.number
        self.pieces.extend(content.pieces)
        self.volumes = n
        catalog = "".join(line + "\n" for line in content.catalog).encode()
        self._full.write(catalog)
        full = None
        if content.last:
            self._full.flush(zstandard.FLUSH_FRAME)
            self._full.close()  # closes the file too (a plain set's)
            full = self._full_path
            if self.cipher:
                assert isinstance(self._full_raw, io.BytesIO)
                write_private(full, self.cipher.seal_catalog(self._full_raw.getvalue(), FULL_CATALOG_SLOT))
        if self.cipher:
            catalog = self.cipher.seal_catalog(catalog, n)
        name = FULL_CATALOG.removeprefix("backup/") if full else None
        volume = ClosedVolume(
            number=n,
            last=content.last,
            title=f"{self.info.set_name} volume {n}",
            pieces=content.pieces,
            manifest=self.manifest(n, content.last, name),
            catalog=catalog,
            readme=render_readme(self.info, n, content.last, n),
            full_catalog=full,
        )
        self.sink.close_volume(volume)

    def abort(self) -> None:
        with contextlib.suppress(OSError, ValueError, zstandard.ZstdError):
            self._full.close()

    # ---- metadata ----

    def manifest(self, volume: int, last: bool, full_catalog: str | None) -> Manifest:
        streams = []
        for s in self.streams:
            pieces = [
                PieceRecord(
                    p.name,
                    p.volume,
                    p.uoffset,
                    p.usize,
                    p.size,
                    p.sha256,
                    p.crc32,
                    list(p.frames) if p.volume == volume else None,
                )
                for p in self.pieces
                if p.stream == s.name
            ]
            streams.append(StreamRecord(**{**s.__dict__, "pieces": pieces}))
        return Manifest(
            set_id=self.info.set_id,
            set_name=self.info.set_name,
            host=self.info.host,
            date=self.info.date,
            mode=self.info.mode,
            volume=volume,
            volumes=volume if last else None,
            streams=streams,
            catalog=catalog_name(volume).removeprefix("backup/"),
            full_catalog=full_catalog,
            encryption=self.info.encryption,
        )
