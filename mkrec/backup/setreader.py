"""Opening a backup set from the host: a directory of ISO files (read with pycdlib — the host
kernel may have no iso9660, and no loop mount is needed), a directory written by mode path, or a
tape file (a tar archive, plus <file>.2, <file>.3 ... for further tapes), and reading a stream's
bytes back from the frames present (FrameReader: what ls/extract and the restore read through).
Volumes that are missing or unreadable are noted, not fatal: what the others hold stays readable."""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, Protocol

import pycdlib
import zstandard

from mkrec.backup.catalog import CatalogEntry, parse_catalog
from mkrec.backup.encryption import FULL_CATALOG_SLOT, SetCipher
from mkrec.backup.frames import FrameError, decompress_frame
from mkrec.backup.manifest import Encryption, Manifest, PieceRecord, StreamRecord, parse_manifest
from mkrec.backup.volumes import MANIFEST
from mkrec.errors import MkrecError
from mkrec.remote import Place
from mkrec.remote.place import RemoteDir, RemoteFile, SourceError, VolumePlace
from mkrec.remote.volumes import RemoteDirVolume, remote_volume_sources

log = logging.getLogger("mkrec.extract")


class Volume(Protocol):
    name: str  # what the user sees: the ISO file, directory or tape file

    def files(self) -> dict[str, int]: ...  # path relative to the volume root -> size
    def open(self, path: str) -> IO[bytes]: ...
    def close(self) -> None: ...


class IsoVolume:
    """An ISO image read with pycdlib: a local file or device, or a file on a server (read in ranges)."""

    def __init__(self, path: Path | RemoteFile) -> None:
        self.name = str(path)
        self.iso = pycdlib.PyCdlib()
        try:
            self.fp: BinaryIO = open(path, "rb") if isinstance(path, Path) else path.open()  # noqa: SIM115
        except OSError as exc:
            raise MkrecError(f"{path}: cannot open ({exc.strerror or exc})") from None
        try:
            self.iso.open_fp(self.fp)
        except (pycdlib.pycdlibexception.PyCdlibException, OSError) as exc:
            self.fp.close()
            raise MkrecError(f"{path}: not a readable ISO image ({exc})") from None

    def files(self) -> dict[str, int]:
        out = {}
        for dirname, _dirs, names in self.iso.walk(rr_path="/"):
            for name in names:
                full = f"{dirname.rstrip('/')}/{name}"
                rec = self.iso.get_record(rr_path=full)
                out[full.lstrip("/")] = rec.get_data_length()
        return out

    def open(self, path: str) -> IO[bytes]:
        fh: IO[bytes] = self.iso.open_file_from_iso(rr_path="/" + path)  # type: ignore[assignment]
        return fh

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.iso.close()
        self.fp.close()


class DirVolume:
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.root = path

    def files(self) -> dict[str, int]:
        return {
            p.relative_to(self.root).as_posix(): p.stat().st_size
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }

    def open(self, path: str) -> IO[bytes]:
        return open(self.root / path, "rb")

    def close(self) -> None:
        pass


class TarVolume:
    """One tape (or a file standing in for it): a tar archive of the volume's files."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        try:
            self.tar = tarfile.open(path, "r:")  # noqa: SIM115 - open as long as the volume
            self.members = {m.name: m for m in self.tar.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError) as exc:
            raise MkrecError(f"{path}: not a readable tape archive ({exc})") from None

    def files(self) -> dict[str, int]:
        return {name: m.size for name, m in self.members.items()}

    def open(self, path: str) -> IO[bytes]:
        fh = self.tar.extractfile(self.members[path])
        assert fh is not None
        return fh

    def close(self) -> None:
        self.tar.close()


def _is_iso(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(16 * 2048 + 1)
        return fh.read(5) == b"CD001"


def volume_sources(path: Place) -> list[tuple[str, VolumePlace]]:
    """(kind, place) of every volume the user pointed at."""
    if isinstance(path, RemoteDir):
        return remote_volume_sources(path)
    if path.is_dir():
        if (path / MANIFEST).is_file():
            return [("dir", path)]
        isos = sorted(path.glob("*.iso"))
        if isos:
            return [("iso", p) for p in isos]
        raise MkrecError(
            f"{path}: no backup set here (no *.iso files, no {MANIFEST})",
            hint="give the directory holding the CDrec-*.iso files or the set directory of mode path",
        )
    if path.is_file():
        if _is_iso(path):
            return [("iso", path)]
        tapes = [path, *sorted(path.parent.glob(f"{path.name}.[0-9]*"), key=lambda p: int(p.suffix[1:]))]
        return [("tape", p) for p in tapes if p.suffix[1:].isdigit() or p == path]
    raise MkrecError(f"{path}: no such file or directory")


def open_volume(kind: str, path: VolumePlace) -> Volume:
    if kind == "iso":
        return IsoVolume(path)  # type: ignore[arg-type]
    if isinstance(path, RemoteDir):
        return RemoteDirVolume(path)
    assert isinstance(path, Path)
    if kind == "tape":
        return TarVolume(path)
    return DirVolume(path)


@dataclass
class OpenVolume:
    number: int
    volume: Volume
    manifest: Manifest


@dataclass
class FrameLoc:
    stream: str
    uoffset: int
    usize: int
    piece: str
    poffset: int
    csize: int
    volume: int


@dataclass
class BackupSet:
    path: Place
    volumes: dict[int, OpenVolume] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # "<volume file>: why it could not be opened"
    total: int | None = None  # the set size, from the last volume's manifest
    streams: dict[str, StreamRecord] = field(default_factory=dict)
    pieces: dict[str, PieceRecord] = field(default_factory=dict)
    cipher: SetCipher | None = None  # an encrypted set's key, once unlocked (mkrec.backup.setkey)

    @property
    def set_name(self) -> str:
        return next(iter(self.volumes.values())).manifest.set_name

    @property
    def set_id(self) -> str:
        return next(iter(self.volumes.values())).manifest.set_id

    @property
    def encryption(self) -> Encryption | None:
        return next(iter(self.volumes.values())).manifest.encryption

    def _opened(self) -> SetCipher | None:
        if self.encryption is not None and self.cipher is None:
            raise MkrecError(
                f"backup set {self.set_name} is encrypted: its key is needed", hint="give --identity FILE"
            )
        return self.cipher

    def read_catalog(self, ov: OpenVolume, name: str, slot: int) -> bytes:
        """A catalog file of a volume, decrypted (slot: its volume, or FULL_CATALOG_SLOT)."""
        cipher = self._opened()
        with ov.volume.open("backup/" + name) as fh:
            data = fh.read()
        return cipher.open_catalog(data, slot, f"{ov.volume.name}:backup/{name}") if cipher else data

    def missing(self) -> list[int]:
        last = self.total or max(self.volumes, default=0)
        return [n for n in range(1, last + 1) if n not in self.volumes]

    def describe_missing(self) -> list[str]:
        out = [f"volume {n} is missing" for n in self.missing()]
        if self.total is None:
            out.append(f"the last volume is missing (volumes after {max(self.volumes, default=0)} may exist)")
        out += self.unreadable
        return out

    def frames(self, stream: str) -> list[FrameLoc]:
        """The frame index of a stream, from the volumes present (sorted by offset)."""
        out = []
        for piece in self.streams[stream].pieces:
            rec = self.pieces.get(piece.name, piece)
            if rec.frames is None:
                continue
            pos, upos = 0, rec.uoffset
            for csize, usize in rec.frames:
                out.append(FrameLoc(stream, upos, usize, rec.name, pos, csize, rec.volume))
                pos += csize
                upos += usize
        return out

    def catalog(self) -> tuple[list[CatalogEntry], list[int]]:
        """Every catalogued member known, and the volumes whose catalog part is unavailable (missing
        or damaged). The whole-set catalog on the last volume, when present and intact, covers
        every volume."""
        for ov in self.volumes.values():
            if ov.manifest.full_catalog:
                name = "backup/" + ov.manifest.full_catalog
                try:
                    packed = self.read_catalog(ov, ov.manifest.full_catalog, FULL_CATALOG_SLOT)
                    text = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(packed)).read().decode()
                    return parse_catalog(text, f"{ov.volume.name}:{name}"), []
                except (OSError, zstandard.ZstdError, UnicodeError, MkrecError) as exc:
                    log.warning(
                        "warning: %s: %s is damaged (%s): reading each volume's catalog",
                        ov.volume.name,
                        name,
                        exc,
                    )
        entries: list[CatalogEntry] = []
        unknown = self.missing()
        for ov in sorted(self.volumes.values(), key=lambda v: v.number):
            name = "backup/" + ov.manifest.catalog
            try:
                text = self.read_catalog(ov, ov.manifest.catalog, ov.number).decode()
                entries += parse_catalog(text, f"{ov.volume.name}:{name}")
            except (
                KeyError,
                OSError,
                pycdlib.pycdlibexception.PyCdlibException,
                UnicodeError,
                MkrecError,
            ) as exc:
                log.warning("warning: %s: %s is damaged (%s)", ov.volume.name, name, exc)
                unknown.append(ov.number)
        return entries, sorted(unknown)

    def read_piece(self, volume: int, piece: str, offset: int, size: int) -> bytes:
        ov = self.volumes[volume]
        with ov.volume.open("backup/" + piece) as fh:
            fh.seek(offset)
            return fh.read(size)

    def read_frame(self, f: FrameLoc) -> bytes:
        """One frame, decrypted and decompressed; FrameError when it is damaged."""
        data = self.read_piece(f.volume, f.piece, f.poffset, f.csize)
        cipher = self._opened()
        if cipher:
            data = cipher.stream(f.stream).open(data, f.uoffset)
        try:
            return decompress_frame(data, f.usize)
        except FrameError as exc:
            raise FrameError(f"stream {f.stream}, frame at offset {f.uoffset}: {exc}") from None

    def merge(self) -> None:
        """Streams and pieces of every volume present. Later manifests know more; each piece keeps
        the frame index of the volume that holds it. The last volume's manifest gives the set size."""
        self.streams.clear()
        self.pieces.clear()
        for ov in sorted(self.volumes.values(), key=lambda v: v.number):
            if ov.manifest.volumes is not None:
                self.total = ov.manifest.volumes
            for s in ov.manifest.streams:
                self.streams[s.name] = s
                for p in s.pieces:
                    if p.frames is not None or p.name not in self.pieces:
                        self.pieces[p.name] = p
        for s in self.streams.values():
            s.pieces = [self.pieces.get(p.name, p) for p in s.pieces]

    def close(self) -> None:
        for ov in self.volumes.values():
            ov.volume.close()


def open_set(path: Place) -> BackupSet:
    bset = BackupSet(path)
    set_id = None
    for kind, vpath in volume_sources(path):
        try:
            ov = open_volume_with_manifest(kind, vpath)
        except SourceError:
            bset.close()
            raise
        except MkrecError as exc:
            bset.unreadable.append(exc.message)
            continue
        vol, manifest = ov.volume, ov.manifest
        if set_id is None:
            set_id = manifest.set_id
        elif manifest.set_id != set_id:
            raise MkrecError(
                f"{vol.name} belongs to another backup set ({manifest.set_name}, id {manifest.set_id})",
                hint="keep the volumes of one set together in one directory",
            )
        bset.volumes[manifest.volume] = ov
    if not bset.volumes:
        raise MkrecError(f"{path}: no readable volume of a backup set", hint="run 'mkrec verify' on it")
    bset.merge()
    return bset


def read_volume(kind: str, path: VolumePlace) -> OpenVolume | None:
    """The volume at path with its manifest; None when it cannot be opened or holds no manifest
    (an empty drive, another disc, a damaged image)."""
    try:
        return open_volume_with_manifest(kind, path)
    except SourceError:  # the server itself failed: that is no missing volume
        raise
    except MkrecError:
        return None


def open_volume_with_manifest(kind: str, path: VolumePlace) -> OpenVolume:
    """The volume at path with its manifest, or an error saying why not."""
    try:
        vol = open_volume(kind, path)
    except SourceError:
        raise
    except OSError as exc:
        raise MkrecError(f"{path}: unreadable ({exc.strerror or exc})") from None
    except MkrecError as exc:
        raise MkrecError(f"{path}: unreadable ({exc.message})") from None
    except pycdlib.pycdlibexception.PyCdlibException as exc:
        raise MkrecError(f"{path}: not a readable ISO 9660 image ({exc})") from None
    try:
        with vol.open(MANIFEST) as fh:
            manifest = parse_manifest(fh.read().decode(), f"{vol.name}:{MANIFEST}")
    except SourceError:
        vol.close()
        raise
    except KeyError:
        vol.close()
        raise MkrecError(f"{path}: no {MANIFEST}: not a volume of a backup set") from None
    except (OSError, pycdlib.pycdlibexception.PyCdlibException) as exc:
        vol.close()
        raise MkrecError(f"{path}: {MANIFEST} unreadable ({exc})") from None
    except UnicodeError:
        vol.close()
        raise MkrecError(f"{path}: {MANIFEST} damaged (not text)") from None
    except MkrecError as exc:
        vol.close()
        raise MkrecError(f"{path}: {MANIFEST} damaged ({exc.message})") from None
    return OpenVolume(manifest.volume, vol, manifest)


class FrameReader:
    """Bytes of one stream by uncompressed offset, from the frames present; a tiny cache keeps
    neighbouring members from decompressing the same frame twice."""

    def __init__(self, bset: BackupSet, stream: str) -> None:
        self.bset = bset
        # A frame is readable only if its volume is here and its piece file is on it: a lost piece
        # (mode path) is a gap exactly like a lost volume.
        present = {n: set(ov.volume.files()) for n, ov in bset.volumes.items()}
        self.frames = [
            f for f in bset.frames(stream) if f.volume in present and f"backup/{f.piece}" in present[f.volume]
        ]
        self.starts = [f.uoffset for f in self.frames]
        self.cache: dict[int, bytes] = {}

    def _covering(self, start: int, end: int) -> list[FrameLoc] | None:
        """The frames covering [start, end), or None when a gap (missing volume) is in the way."""
        i = bisect.bisect_right(self.starts, start) - 1
        out = []
        pos = start
        while pos < end:
            if i < 0 or i >= len(self.frames):
                return None
            f = self.frames[i]
            if not (f.uoffset <= pos < f.uoffset + f.usize):
                return None
            out.append(f)
            pos = f.uoffset + f.usize
            i += 1
        return out

    def available(self, start: int, end: int) -> bool:
        return self._covering(start, end) is not None

    def _frame(self, f: FrameLoc) -> bytes:
        if f.uoffset not in self.cache:
            data = self.bset.read_frame(f)
            if len(self.cache) >= 2:
                self.cache.pop(next(iter(self.cache)))
            self.cache[f.uoffset] = data
        return self.cache[f.uoffset]

    def copy(self, start: int, end: int, out: IO[bytes]) -> bool:
        """Write [start, end) to out. On a damaged frame the rest is written as zeros (so the tar
        stream keeps its shape) and False is returned."""
        frames = self._covering(start, end)
        assert frames is not None
        pos = start
        for f in frames:
            upto = min(end, f.uoffset + f.usize)
            try:
                data = self._frame(f)
            except (FrameError, OSError) as exc:
                log.debug("frame at %d of %s: %s", f.uoffset, f.piece, exc)
                if pos > start:  # the header is out: zeros keep tar's stream in step
                    out.write(bytes(end - pos))
                # else nothing of this member was sent: zeros would read as end-of-archive
                return False
            out.write(data[pos - f.uoffset : upto - f.uoffset])
            pos = upto
        return True
