"""The backup set as the restore reads it: the thin seam between the restore engine and the backup
package (mkrec.backup.setreader reads the volumes and manifests, and the frames through its
FrameReader). What this module adds is what only a restore needs:

- finding the volumes: --source (a set directory, a directory of ISO files, an ISO or tape file, a
  block device), else every optical drive, every block device labelled CDREC_<N> and
  /run/mkrec/backup;
- volumes of one set only (the set id of the first volume found decides; another set's volume is
  refused by name);
- a stream read start to end across volumes: a volume that is not there is asked for by number and
  set name ("insert volume 3 of 5 of CDrec-20261123-0712, then press Enter") and the drives are
  scanned again; under --yes it is an error naming the volume;
- the uncompressed bytes checked against the manifest's SHA-256 of the whole stream;
- an encrypted set opened with --identity or what the person types (mkrec.backup.setkey)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pycdlib

from mkrec.backup.catalog import CatalogEntry
from mkrec.backup.manifest import StreamRecord
from mkrec.backup.setkey import unlock
from mkrec.backup.setreader import BackupSet, FrameReader, read_volume, volume_sources
from mkrec.backup.volumes import RECOVERY_IN_SET
from mkrec.errors import MkrecError
from mkrec.remote import Place, Source, open_source
from mkrec.remote.place import VolumePlace
from mkrec.restore.decide.present import is_block
from mkrec.runner import run_json

log = logging.getLogger("mkrec.restore")

RESCUE_MOUNT = Path("/run/mkrec/backup")  # where the rescue system mounts a backup it found
VOLUME_LABEL = re.compile(r"^CDREC_\d+$")
CHUNK_ZEROS = 1 << 20

Ask = Callable[[str], str]


def labelled_volumes(lsblk: dict[str, object]) -> list[Path]:
    """Block devices whose ISO volume label is CDREC_<N> (a volume written to a USB stick)."""
    found = []
    for dev in lsblk.get("blockdevices") or []:  # type: ignore[attr-defined]
        if VOLUME_LABEL.match(str(dev.get("label") or "")):
            found.append(Path(str(dev.get("path"))))
    return found


def drives() -> list[tuple[str, Path]]:
    """Every optical drive and every block device with a CDREC_<N> label."""
    found = [("iso", p) for p in sorted(Path("/dev").glob("sr[0-9]*")) if is_block(p)]
    data = run_json(["lsblk", "-J", "-l", "-p", "-o", "PATH,LABEL"], check=False)
    found += [("iso", p) for p in labelled_volumes(data) if ("iso", p) not in found]
    return found


def candidates(source: Place | None) -> list[tuple[str, VolumePlace]]:
    """(kind, path) of each place a volume may be. With --source only what it names (plus the
    drives once a volume has to be asked for); without, the rescue mount and every drive."""
    if source is not None:
        if isinstance(source, Path) and is_block(source):
            return [("iso", source)]
        return volume_sources(source)
    found = volume_sources(RESCUE_MOUNT) if RESCUE_MOUNT.is_dir() else []
    return found + list(drives())


class RestoreSet:
    """The volumes of one backup set found so far; reads streams, asks for what is missing. A context
    manager: leaving the `with` block closes every volume opened."""

    def __init__(self, source: Place | None, ask: Ask | None, identity: Path | None = None) -> None:
        self.source = source
        self.ask = ask  # None: nobody to ask (--yes, or no terminal)
        self.opened = contextlib.ExitStack()  # what open_restore_set opened to reach the set
        self.set_id = ""
        self.set_name = ""
        self.bset = BackupSet(source or RESCUE_MOUNT)
        self.scan(candidates(source))
        if not self.bset.volumes:
            where = str(source) if source else f"{RESCUE_MOUNT}, /dev/sr*, devices labelled CDREC_<N>"
            raise MkrecError(
                f"no volume of a backup set found (looked at {where})",
                hint="insert volume 1 or attach the set's disk, or name the set with --source",
            )
        try:
            unlock(self.bset, identity)
        except BaseException:
            self.close()
            raise

    # ---- volumes ----

    def scan(self, places: list[tuple[str, VolumePlace]]) -> list[str]:
        """Open the volumes at places (closing those read before); returns why any were refused."""
        self.close()
        refused = []
        for kind, path in places:
            ov = read_volume(kind, path)
            if ov is None:
                continue
            vol, m = ov.volume, ov.manifest
            if not self.set_id:
                self.set_id, self.set_name = m.set_id, m.set_name
                log.info("Backup set %s (id %s)", m.set_name, m.set_id)
            if m.set_id != self.set_id:
                refused.append(
                    f"{vol.name} is volume {m.volume} of {m.set_name} (set id {m.set_id}), "
                    f"another backup set than {self.set_name}"
                )
                vol.close()
                continue
            if m.volume in self.bset.volumes:
                vol.close()  # the same volume seen twice (an ISO file and a drive): keep the first
                continue
            self.bset.volumes[m.volume] = ov
        if self.source is not None and refused and not self.bset.volumes:
            raise MkrecError(refused[0], hint="keep the volumes of one set together")
        for why in refused:
            log.warning("warning: %s: not used", why)
        self.bset.merge()
        return refused

    def describe(self, number: int) -> str:
        total = f" of {self.bset.total}" if self.bset.total else ""
        return f"volume {number}{total} of {self.set_name}"

    def need(self, number: int, why: str) -> None:
        """Volume `number` is not here: ask for it until it is (or stop under --yes)."""
        while number not in self.bset.volumes:
            if self.ask is None:
                raise MkrecError(
                    f"{self.describe(number)} is missing ({why})",
                    hint="attach it (drive, USB disk, or the ISO file next to the others) and run the "
                    "restore again: finished steps are skipped",
                )
            answer = self.ask(f"Please insert {self.describe(number)}, then press Enter (q: stop): ")
            if answer.strip().lower() in ("q", "quit", "stop"):
                raise MkrecError(f"stopped: {self.describe(number)} was not inserted ({why})")
            places = candidates(self.source) if self.source is not None else []
            refused = self.scan(places + [c for c in drives() if c not in places])
            for reason in refused:
                print(f"That is not a volume of this set: {reason}.", flush=True)

    def nodes(self) -> list[Path]:
        """Where the volumes are read from: those disks must not be written."""
        return [Path(ov.volume.name) for ov in self.bset.volumes.values()]

    def close(self) -> None:
        self.bset.close()
        self.bset.volumes.clear()

    def __enter__(self) -> RestoreSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self.opened.close()

    # ---- what the set holds ----

    @property
    def streams(self) -> dict[str, StreamRecord]:
        return self.bset.streams

    def catalog(self) -> tuple[list[CatalogEntry], list[int]]:
        """Every member the catalogs list, and the volumes whose catalog part is unavailable."""
        return self.bset.catalog()

    def recovery_file(self, name: str) -> bytes | None:
        """A file of the readable etc/recovery copy a volume carries (volume 1 of every set)."""
        for ov in sorted(self.bset.volumes.values(), key=lambda v: v.number):
            with (
                contextlib.suppress(KeyError, OSError, pycdlib.pycdlibexception.PyCdlibException),
                ov.volume.open(f"{RECOVERY_IN_SET}/{name}") as fh,
            ):
                return fh.read()
        return None

    def layout_text(self) -> str | None:
        """etc/recovery/layout.toml from a volume of the set."""
        data = self.recovery_file("layout.toml")
        return data.decode() if data is not None else None

    # ---- reading a stream ----

    def chunks(self, name: str, damage: Damage | None = None) -> Iterator[bytes]:
        """The uncompressed stream from its first byte to its last, asking for volumes on the way.
        A damaged frame stops the stream, unless `damage` is given (a tar stream): then the members
        it touches are left out, named in damage, and the rest of the stream follows."""
        if name not in self.streams:
            raise MkrecError(
                f"stream {name} is not in {self.set_name}", hint=f"it has: {', '.join(self.streams)}"
            )
        digest = hashlib.sha256()
        pos = 0
        while True:
            record = self.streams[name]
            reader = FrameReader(self.bset, name)
            for f in reader.frames:
                if f.uoffset + f.usize <= pos or f.uoffset > pos:
                    continue
                out = io.BytesIO()
                if not reader.copy(pos, f.uoffset + f.usize, out):
                    where = f"{self.describe(f.volume)}: piece {f.piece} is damaged (a frame is unreadable)"
                    if damage is None:
                        raise MkrecError(
                            where,
                            hint="run 'mkrec verify' on the set; copy the volume again from another medium",
                        )
                    log.warning("warning: %s: the files in it are left out", where)
                    zeros, pos = damage.skip(self._members(name), pos, f.uoffset + f.usize)
                    for i in range(0, zeros, CHUNK_ZEROS):
                        yield bytes(min(CHUNK_ZEROS, zeros - i))
                    continue
                data = out.getvalue()
                digest.update(data)
                pos += len(data)
                yield data
            if record.complete and record.size is not None and pos >= record.size:
                break
            self.need(self._volume_at(record, pos), f"stream {name} goes on there")
        if record.sha256 and not damage and digest.hexdigest() != record.sha256:
            raise MkrecError(
                f"stream {name}: the bytes read differ from the backup's checksum",
                hint="run 'mkrec verify' on the set",
            )

    def _members(self, name: str) -> list[CatalogEntry]:
        """The stream's tar members in stream order, from the catalogs of the volumes here."""
        entries, _ = self.bset.catalog()
        return sorted((e for e in entries if e.stream == name), key=lambda e: e.offset)

    def _volume_at(self, record: StreamRecord, pos: int) -> int:
        """The volume holding uncompressed offset pos of a stream (the next one when no piece known
        so far reaches it: its manifest is on a later volume)."""
        for p in record.pieces:
            if p.uoffset <= pos < p.uoffset + p.usize:
                return p.volume
        last = max((p.volume for p in record.pieces), default=1)
        return next(n for n in itertools.count(last) if n not in self.bset.volumes)

    def open(self, name: str, damage: Damage | None = None) -> BinaryIO:
        return io.BufferedReader(_ChunkReader(self.chunks(name, damage)), buffer_size=1 << 20)


@dataclass
class Damage:
    """What a damaged frame cost a tar stream: the members left out (paths relative to the stream's
    mount point), and those of them tar has begun and got zeros for the rest of (to remove)."""

    lost: list[str] = field(default_factory=list)
    zeroed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.lost)

    def skip(self, members: list[CatalogEntry], pos: int, bad_end: int) -> tuple[int, int]:
        """The stream is good up to pos and unreadable up to bad_end: (zero bytes to send so tar
        stays in step, the position to go on from). A member tar has begun gets zeros to its end;
        every member reaching into the bad bytes is left out; the stream goes on after the last."""
        touched = [m for m in members if m.end > pos and m.offset < bad_end]
        if not touched:  # the end-of-archive blocks: nothing of value
            return 0, bad_end
        self.lost += [m.path for m in touched]
        zeros = 0
        if touched[0].offset < pos:
            self.zeroed.append(touched[0].path)
            zeros = touched[0].end - pos
        return zeros, max(bad_end, touched[-1].end)


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._left:
            self._left = next(self._chunks, b"")
            if not self._left:
                return 0
        n = min(len(buf), len(self._left))
        buf[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def open_restore_set(
    source: Source | Path | None, ask: Ask | None = None, identity: Path | None = None
) -> RestoreSet:
    """The backup set at --source (a path or URL), or found on the drives; ask: how to ask for a
    missing volume. (mkrec.backup.setreader.open_set opens a set for reading only what is there,
    never asking; mkrec.restore.decide.opening.open_source also opens a set in a restic repository.)
    Leaving its `with` block also undoes what reaching the source took (a mount)."""
    if source is None:
        return RestoreSet(None, ask, identity)
    opened = contextlib.ExitStack()
    try:
        reader = RestoreSet(opened.enter_context(open_source(source)), ask, identity)
    except BaseException:
        opened.close()
        raise
    reader.opened = opened
    return reader


def stream_for(streams: dict[str, StreamRecord], device: str, mountpoint: str = "") -> tuple[str, str]:
    """(tar stream, raw image stream) of a saved device, by the manifest: its device ("sda3", "vg0/root",
    "cryptroot" as the layout names it; /dev/sda3, /dev/mapper/vg0-root as the backup did), else its
    mount point. "" for what the set does not have."""
    names = {
        f"/dev/{device}",
        f"/dev/mapper/{device}",
        "/dev/mapper/" + device.replace("-", "--").replace("/", "-"),
    }
    found = [s for s in streams.values() if s.device in names]
    if not found and mountpoint:
        found = [s for s in streams.values() if s.mountpoint == mountpoint and s.kind == "tar"]
    tar = next((s.name for s in found if s.kind == "tar"), "")
    img = next((s.name for s in found if s.kind == "image"), "")
    return tar, img
