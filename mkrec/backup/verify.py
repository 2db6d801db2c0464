"""`mkrec verify SET`: every checksum of every volume, each byte read once.

Per volume: every file against SHA256SUMS and Checksums.sfv, every piece against the manifest.
Per stream: the SHA-256 of all its pieces in order against the manifest's whole-stream value.
With --deep, every frame is decrypted (an encrypted set: checksums need no key, this does) and
decompressed, and every catalog read. Problems name the volume, the file and what was expected."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pycdlib
import zstandard

from mkrec.backup.frames import FrameError
from mkrec.backup.setreader import BackupSet, Volume
from mkrec.backup.sums import CHUNK, SFV, SHA256SUMS, Sums, crc32, parse_sfv, parse_sha256sums

T = TypeVar("T")


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    checked: int = 0
    frames: int = 0  # --deep: frames opened and decompressed

    @property
    def ok(self) -> bool:
        return not self.problems


def _read(vol: Volume, name: str, extra: Callable[[bytes], None] | None = None) -> Sums:
    sha = hashlib.sha256()
    crc = 0
    with vol.open(name) as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            crc = crc32(chunk, crc)
            if extra:
                extra(chunk)
    return Sums(sha.hexdigest(), crc)


def _read_list(
    vol: Volume, name: str, parse: Callable[[str, str], dict[str, T]], label: str, report: Report
) -> dict[str, T] | None:
    """A volume's checksum list, or None (said in the report) when it is missing or damaged."""
    try:
        with vol.open(name) as fh:
            return parse(fh.read().decode(), f"{label}: {name}")
    except (KeyError, OSError, pycdlib.pycdlibexception.PyCdlibException) as exc:
        report.problems.append(f"{label}: {name}: unreadable ({exc})")
    except UnicodeError:
        report.problems.append(f"{label}: {name}: damaged (not text)")
    except ValueError as exc:
        report.problems.append(f"{label}: {exc}")
    return None


def check_volume_files(
    vol: Volume, label: str, report: Report, known: dict[str, Sums], unlisted: list[str]
) -> None:
    """Every file of one volume against its SHA256SUMS and Checksums.sfv; `known` has sums of
    files already read (the pieces)."""
    files = vol.files()
    sha_list = _read_list(vol, SHA256SUMS, parse_sha256sums, label, report)
    sfv_list = _read_list(vol, SFV, parse_sfv, label, report)
    if sha_list is None and sfv_list is None:
        return
    listed_all = sha_list is not None
    sha_list, sfv_list = sha_list or {}, sfv_list or {}  # one damaged list: the other still checks
    for name in sorted(set(sha_list) | set(sfv_list)):
        if name not in files:
            report.problems.append(f"{label}: {name}: listed in the checksums but missing")
            continue
        try:
            got = known.get(name) or _read(vol, name)
        except (OSError, pycdlib.pycdlibexception.PyCdlibException) as exc:
            report.problems.append(f"{label}: {name}: unreadable ({exc})")
            continue
        report.checked += 1
        if name in sha_list and got.sha256 != sha_list[name]:
            report.problems.append(f"{label}: {name}: SHA-256 mismatch (SHA256SUMS: {sha_list[name][:16]}…)")
        elif name in sfv_list and got.crc32 != sfv_list[name]:
            report.problems.append(f"{label}: {name}: CRC32 mismatch (Checksums.sfv: {sfv_list[name]:08X})")
    for name in sorted(set(files) - set(sha_list) - {SHA256SUMS, SFV} - set(unlisted) if listed_all else ()):
        report.problems.append(f"{label}: {name}: not in {SHA256SUMS}")


def check_frames(bset: BackupSet, report: Report, progress: Callable[[str], None] | None = None) -> None:
    """--deep: every frame present decrypted (an encrypted set) and decompressed, every catalog
    read; what fails is named by volume, piece, stream and offset."""
    labels = {n: f"volume {n} ({ov.volume.name})" for n, ov in bset.volumes.items()}
    for stream in bset.streams.values():
        if progress:
            progress(f"frames of {stream.name}")
        for f in bset.frames(stream.name):
            if f.volume not in bset.volumes:
                continue
            try:
                bset.read_frame(f)
            except (KeyError, OSError, pycdlib.pycdlibexception.PyCdlibException) as exc:
                report.problems.append(f"{labels[f.volume]}: backup/{f.piece}: unreadable ({exc})")
                break  # the piece's other frames would say the same
            except FrameError as exc:
                report.problems.append(f"{labels[f.volume]}: backup/{f.piece}: {exc}")
                continue
            report.frames += 1
    try:
        bset.catalog()
    except (KeyError, OSError, ValueError, UnicodeError, zstandard.ZstdError) as exc:
        report.problems.append(f"catalog: {exc}")


def verify_set(bset: BackupSet, progress: Callable[[str], None] | None = None, deep: bool = False) -> Report:
    report = Report()
    report.problems += bset.describe_missing()
    known: dict[int, dict[str, Sums]] = {n: {} for n in bset.volumes}
    labels = {n: f"volume {n} ({ov.volume.name})" for n, ov in bset.volumes.items()}
    for stream in bset.streams.values():
        whole = hashlib.sha256()
        intact = True
        for piece in stream.pieces:
            if piece.volume not in bset.volumes:
                intact = False
                continue
            label = labels[piece.volume]
            if progress:
                progress(f"{label}: {piece.name}")
            vol = bset.volumes[piece.volume].volume
            try:
                got = _read(vol, "backup/" + piece.name, whole.update)
            except (KeyError, OSError, pycdlib.pycdlibexception.PyCdlibException) as exc:
                report.problems.append(f"{label}: backup/{piece.name}: missing or unreadable ({exc})")
                intact = False
                continue
            known[piece.volume]["backup/" + piece.name] = got
            if got.sha256 != piece.sha256:
                report.problems.append(
                    f"{label}: backup/{piece.name}: SHA-256 mismatch (manifest: {piece.sha256[:16]}…)"
                )
                intact = False
        if (
            intact
            and stream.complete
            and stream.compressed_sha256
            and whole.hexdigest() != (stream.compressed_sha256)
        ):
            report.problems.append(f"stream {stream.name}: SHA-256 of all pieces does not match the manifest")
    for n, ov in sorted(bset.volumes.items()):
        if progress:
            progress(labels[n])
        check_volume_files(ov.volume, labels[n], report, known[n], ov.manifest.unlisted)
    if deep:
        check_frames(bset, report, progress)
    return report
