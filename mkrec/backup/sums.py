"""Checksum lists on every volume: SHA256SUMS (as sha256sum writes it) and Checksums.sfv (CRC32,
as cksfv writes it), so a volume can be checked with standard tools and without mkrec."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

try:  # ISA-L's CRC32 (carry-less multiply): several times zlib's, the same CRC; every byte of a
    # set is summed as it is written and again as it is read back
    from isal.isal_zlib import crc32
except ImportError:  # the rescue system's Python carries only what a restore needs
    from zlib import crc32

SHA256SUMS = "SHA256SUMS"
SFV = "Checksums.sfv"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Sums:
    sha256: str
    crc32: int


def sums_of(fh: IO[bytes]) -> tuple[Sums, int]:
    """SHA-256 and CRC32 of everything fh still has, in one read; and how many bytes that was."""
    sha = hashlib.sha256()
    crc = 0
    size = 0
    while chunk := fh.read(CHUNK):
        sha.update(chunk)
        crc = crc32(chunk, crc)
        size += len(chunk)
    return Sums(sha.hexdigest(), crc), size


def crc32_of(fh: IO[bytes]) -> int:
    """CRC32 of everything fh still has. Enough to read a volume back after writing it: that
    looks for bytes that did not land where they should, not for tampering, and costs less than
    half of a SHA-256 (which the volume's SHA256SUMS still carries)."""
    crc = 0
    while chunk := fh.read(CHUNK):
        crc = crc32(chunk, crc)
    return crc


def format_sha256sums(items: Iterable[tuple[str, Sums]]) -> str:
    return "".join(f"{s.sha256}  {name}\n" for name, s in items)


def format_sfv(items: Iterable[tuple[str, Sums]], comment: str = "") -> str:
    head = f"; {comment}\n" if comment else ""
    return head + "".join(f"{name} {s.crc32:08X}\n" for name, s in items)


def parse_sha256sums(text: str, where: str) -> dict[str, str]:
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{where} line {n}: not '<sha256>  <file>'")
        out[name.removeprefix("*")] = digest
    return out


def parse_sfv(text: str, where: str) -> dict[str, int]:
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(";"):
            continue
        name, sep, crc = line.rstrip().rpartition(" ")
        if not sep or len(crc) != 8:
            raise ValueError(f"{where} line {n}: not '<file> <CRC32>'")
        try:
            out[name] = int(crc, 16)
        except ValueError:
            raise ValueError(f"{where} line {n}: {crc!r} is not a CRC32 in hex") from None
    return out
