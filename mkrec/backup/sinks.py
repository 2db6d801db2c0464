"""Where closed volumes go: ISO files (mode cd), a directory (mode path), a tape (mode tape).

Every sink writes into a temporary place and makes the set visible only when it is complete
(SetDir), reads each volume back and checks it before its staging data is deleted, and keeps its
files 0600 and directories 0700."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from mkrec.backup import placed
from mkrec.backup.cutstream import Capacity, PieceFile
from mkrec.backup.placed import File, PlacedImage
from mkrec.backup.setreader import DirVolume, IsoVolume, TarVolume, Volume
from mkrec.backup.sums import SFV, SHA256SUMS, Sums, crc32_of, format_sfv, format_sha256sums
from mkrec.backup.volumes import (
    FULL_CATALOG,
    SetInfo,
    catalog_name,
    stage_piece,
    volume_label,
    write_private,
)
from mkrec.context import Context
from mkrec.errors import CommandError, MkrecError
from mkrec.iso import HYBRID_TAIL_MAX, BootPayload, BootSpec, VolumeInfo, finish_iso, tree_entries
from mkrec.runner import run

log = logging.getLogger("mkrec.backup")

Ask = Callable[[str], None]  # show a prompt and wait for the operator (Enter)
BURN_DEVICE = "/dev/sr0"


class SetDir:
    """A set directory written under a temporary name and renamed into place at the end; a set
    of the same day is replaced only then, older days are never touched."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.parent / f".{final.name}.partial-{os.getpid()}"

    def create(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(mode=0o700)
        return self.tmp

    def commit(self) -> Path:
        old = self.final.parent / f".{self.final.name}.replaced-{os.getpid()}"
        if self.final.exists():
            self.final.rename(old)
        self.tmp.rename(self.final)
        shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class ReadBackError(MkrecError):
    """A written volume does not read back as written: `name` is missing or has other bytes."""

    def __init__(self, volume: str, name: str, problem: str) -> None:
        super().__init__(f"{volume}: {name} {problem}", hint="the medium may be bad")
        self.volume = volume
        self.name = name
        self.problem = problem


def check_volume(vol: Volume, sums: list[tuple[str, Sums]]) -> None:
    """Read a written volume back: every file there, with the CRC32 it was written with."""
    try:
        files = vol.files()
        for name, expected in sums:
            if name not in files:
                raise ReadBackError(vol.name, name, "is missing after writing")
            with vol.open(name) as fh:
                got = crc32_of(fh)
            if got != expected.crc32:
                raise ReadBackError(
                    vol.name, name, f"reads back wrong (CRC32 {got:08X}, written {expected.crc32:08X})"
                )
    finally:
        vol.close()


def keep_bad_image(image: Path, sums: list[tuple[str, Sums]], keep_in: Path, title: str) -> Path:
    """An image file that read back wrong was written wrong by mkrec (no medium is involved):
    move it out of the set (which is about to be removed) together with the checksums its
    files should have, for a bug report. Returns the directory that holds them."""
    evidence = keep_in / f"bad-{image.stem}"
    evidence.mkdir(parents=True, exist_ok=True, mode=0o700)
    image.replace(evidence / image.name)
    write_private(evidence / SHA256SUMS, format_sha256sums(sums).encode())
    write_private(evidence / SFV, format_sfv(sums, title).encode())
    return evidence


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
    """Mode cd: CDrec-<date>-vol<N>.iso files in <output>/<host>/<YYYYMMDD>/. Pieces stream
    straight into their place in the image (mkrec.backup.placed)."""

    def __init__(self, ctx: Context, info: SetInfo, rescue: BootPayload | None, ask: Ask) -> None:
        self.ctx = ctx
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

    def capacity(self) -> Capacity:
        full = self.media.size.capacity
        boot = 0
        if self.rescue:
            boot = self.rescue.size() + len(self.rescue.entries) * Capacity(0, 0).per_file
            if self.rescue.boot.hybrid:
                boot += HYBRID_TAIL_MAX  # a hybrid image is padded to a cylinder, the backup GPT after it
        rest = full - boot if self.media.bootable == "all" else full
        # The padded manifest may take its whole reserve: more than cutstream's estimate of it.
        fixed = Capacity(0, 0).fixed + placed.manifest_reserve(full, 0)
        return Capacity(first=full - boot, rest=rest, fixed=fixed)

    def volume_dir(self, number: int) -> Path:
        d = self.root / ".staging" / f"vol{number:03d}"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def boot_entries(self, number: int) -> list[tuple[Path, str]]:
        if self.rescue and (number == 1 or self.media.bootable == "all"):
            return list(self.rescue.entries)
        return []

    def unlisted(self, number: int) -> list[str]:
        if not self.boot_entries(number) or not self.rescue:
            return []
        return [self.rescue.boot.catalog.lstrip("/"), self.rescue.boot.bios_image.lstrip("/")]

    # ---- layout ----

    def _iso_path(self, number: int) -> Path:
        return self.root / f"{self.info.set_name}-vol{number}.iso"

    def _volume_info(self, number: int) -> VolumeInfo:
        # The set size is not known yet: written as this volume's number, and patched in every
        # volume when the set is complete (commit). The last volume's manifest records it too.
        return VolumeInfo(volume_label(number), self.info.set_name, set_size=number, seqnum=number)

    def _boot(self, number: int) -> tuple[list[File], BootSpec | None]:
        entries = self.boot_entries(number)
        files = [_file(src, iso_path) for src, iso_path in entries]
        return files, (self.rescue.boot if entries and self.rescue else None)

    def _reserve(self, number: int) -> int:
        """Where volume `number`'s first piece goes: after room for everything the walk puts
        before it, sized for a full volume of PIECES_GUESS pieces."""
        boot, spec = self._boot(number)
        listed = len(boot) + placed.PIECES_GUESS + 6
        sums = (64 + 2 + 96 + 1) * listed
        manifest = placed.manifest_reserve(self.media.size.capacity, self.pieces_done)
        files = [
            *boot,
            File("README.txt", 4096),
            File(SHA256SUMS, sums),
            File(SFV, sums),
            File(placed.MANIFEST, manifest),
            File(catalog_name(number), 1),
            File(FULL_CATALOG, 1),
        ]
        guesses: list[placed.Piece] = [
            (f"{'x' * 80}.{i:03d}", placed.Placeholder(1), 1) for i in range(placed.PIECES_GUESS)
        ]
        return placed.first_piece_at(self._volume_info(number), files, guesses, spec)

    # ---- pieces ----

    def open_piece(self, number: int, name: str) -> PieceFile:
        image = self.images.get(number)
        if image is None:
            out = self._iso_path(number)
            image = PlacedImage(out.with_name(f".{out.name}.placing"), self._reserve(number))
            self.images[number] = image
        return image.open_piece(name)

    def manifest_padding(self, number: int, sizes: dict[str, int]) -> int:
        image = self.images.get(number)
        if image is None or not image.pieces:
            return 0
        boot, spec = self._boot(number)
        files = boot + [File(rel, size) for rel, size in sizes.items()]
        first = placed.first_piece_at(self._volume_info(number), files, placed.sources(image, "size"), spec)
        gap = image.reserve - first
        if gap < 0:
            log.info("    volume %d: its metadata outgrew the room kept for it; copying its pieces", number)
            image.copy = True
            return 0
        return gap

    # ---- closing ----

    def close_volume(self, number: int, voldir: Path, sums: list[tuple[str, Sums]], last: bool) -> None:
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
            iso = placed.build(info, files, placed.sources(image, "skip"), spec)
            try:
                if placed.placed_where_written(iso, image):
                    placed.write_around(iso, image)
                    image.path.replace(out)
                    return
            finally:
                iso.close()
            log.warning("warning: volume %d: pieces not where they were written; copying them", number)
        pieces = placed.sources(image, "read") if image else []
        finish_iso(placed.build(info, files, pieces, spec), out)

    def commit(self, volumes: int) -> Path:
        for iso in self.isos:
            patch_set_size(iso, volumes)
        shutil.rmtree(self.root / ".staging", ignore_errors=True)
        return self.setdir.commit()

    def abort(self) -> None:
        for image in self.images.values():
            image.close()
        self.setdir.abort()


def _file(src: Path, iso_path: str) -> File:
    st = src.stat()
    return File(iso_path.lstrip("/"), st.st_size, src, st.st_mode & 0o7777)


def burn_argv(iso: Path, device: str = BURN_DEVICE) -> list[str]:
    return ["xorriso", "-as", "cdrecord", "-v", f"dev={device}", "blank=as_needed", "-eject", str(iso)]


def burn(iso: Path, number: int, ask: Ask, device: str = BURN_DEVICE, attempts: int = 3) -> None:
    """Burn one verified volume; on failure ask for another blank disc and retry."""
    ask(f"Insert a blank disc for volume {number} into {device} and press Enter")
    for attempt in range(1, attempts + 1):
        try:
            run(burn_argv(iso, device))
            log.info("    volume %d burned", number)
            return
        except CommandError as exc:
            log.warning(
                "burning volume %d failed (attempt %d of %d): %s", number, attempt, attempts, exc.message
            )
            if attempt < attempts:
                ask(f"Insert another blank disc for volume {number} into {device} and press Enter")
    raise MkrecError(
        f"could not burn volume {number} ({iso.name}) after {attempts} attempts",
        hint=f"the image is complete in {iso.parent}; burn it later with xorriso or another tool",
    )


class PathSink:
    """Mode path: the same files as a volume, no ISO, in [path] dir/<host>/<YYYYMMDD>/; one
    volume of unlimited size (pieces are still cut below 1 GiB)."""

    def __init__(self, ctx: Context, info: SetInfo) -> None:
        base = ctx.config.path.dir
        if base is None:
            raise MkrecError("mode path needs [path] dir", hint='set dir = "/mnt/backup" in [path]')
        self.setdir = SetDir(base / ctx.hostname / f"{ctx.started:%Y%m%d}")
        self.root = self.setdir.create()
        self.work = self.root / ".work"

    def capacity(self) -> Capacity:
        return Capacity(first=0, rest=0, block=1, per_file=0, fixed=0)

    def open_piece(self, number: int, name: str) -> PieceFile:
        return stage_piece(self.volume_dir(number), name)

    def manifest_padding(self, number: int, sizes: dict[str, int]) -> int:
        return 0

    def volume_dir(self, number: int) -> Path:
        return self.root

    def boot_entries(self, number: int) -> list[tuple[Path, str]]:
        return []

    def unlisted(self, number: int) -> list[str]:
        return []

    def close_volume(self, number: int, voldir: Path, sums: list[tuple[str, Sums]], last: bool) -> None:
        for dirpath, _dirs, files in os.walk(voldir):
            for name in files:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)  # on the share before we call it written
                finally:
                    os.close(fd)
        check_volume(DirVolume(voldir), sums)

    def commit(self, volumes: int) -> Path:
        shutil.rmtree(self.work, ignore_errors=True)
        return self.setdir.commit()

    def abort(self) -> None:
        self.setdir.abort()


class BlockWriter:
    """Writes exactly `block` bytes per write(2), as a tape drive in fixed-block mode wants;
    the last block is padded with zeros."""

    def __init__(self, fh: IO[bytes], block: int) -> None:
        self.fh = fh
        self.block = block
        self.buf = bytearray()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.buf += data
        whole = len(self.buf) - len(self.buf) % self.block
        if whole:
            self.fh.write(self.buf[:whole])
            del self.buf[:whole]
            self.written += whole
        return len(data)

    def close(self) -> None:
        if self.buf:
            self.write(bytes(self.block - len(self.buf)))


class TapeSink:
    """Mode tape: each volume is a tar archive of the volume's files, blocked to [tape] block_size,
    at most [tape] capacity per tape. A regular file stands in for the drive: tape N of the set
    is then <file> for N = 1 and <file>.<N> after that."""

    def __init__(self, ctx: Context, info: SetInfo, ask: Ask) -> None:
        self.cfg = ctx.config.tape
        self.ask = ask
        self.staging = SetDir(ctx.config.build.output / ctx.hostname / ".tape-staging")
        self.root = self.staging.create()
        self.work = self.root / "work"
        self.device = self.cfg.device
        self.is_drive = self.device.exists() and stat.S_ISCHR(self.device.stat().st_mode)
        self.written: list[tuple[Path, Path]] = []  # (temporary, final) for file tapes

    def capacity(self) -> Capacity:
        fixed = 2 * 10240 + self.cfg.block_size
        return Capacity(self.cfg.capacity, self.cfg.capacity, block=512, per_file=1536, fixed=fixed)

    def volume_dir(self, number: int) -> Path:
        d = self.root / f"vol{number:03d}"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def boot_entries(self, number: int) -> list[tuple[Path, str]]:
        return []

    def unlisted(self, number: int) -> list[str]:
        return []

    def open_piece(self, number: int, name: str) -> PieceFile:
        return stage_piece(self.volume_dir(number), name)

    def manifest_padding(self, number: int, sizes: dict[str, int]) -> int:
        return 0

    def tape_path(self, number: int) -> Path:
        return self.device if number == 1 else self.device.with_name(f"{self.device.name}.{number}")

    def close_volume(self, number: int, voldir: Path, sums: list[tuple[str, Sums]], last: bool) -> None:
        if self.is_drive:
            if number > 1:
                self.ask(f"Insert tape {number} into {self.device} and press Enter")
            target = self.device
        else:
            final = self.tape_path(number)
            target = final.with_name(final.name + ".partial")
            self.written.append((target, final))
        # Manifest and catalog first: a reader of the tape knows what follows before the pieces.
        names = ["README.txt", "backup/manifest.json"]
        rest = sorted(p.relative_to(voldir).as_posix() for p in voldir.rglob("*") if p.is_file())
        names += [n for n in rest if n not in names]
        flags = os.O_WRONLY | (0 if self.is_drive else os.O_CREAT | os.O_TRUNC)
        with os.fdopen(os.open(target, flags, 0o600), "wb") as fh:
            blocks = BlockWriter(fh, self.cfg.block_size)
            with tarfile.open(fileobj=blocks, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for name in names:
                    tar.add(voldir / name, arcname=name, recursive=False)
            blocks.close()
        if not self.is_drive:
            check_volume(TarVolume(target), sums)
        shutil.rmtree(voldir)
        log.info("    tape %d written (%s)", number, target if self.is_drive else self.tape_path(number))

    def commit(self, volumes: int) -> Path:
        for tmp, final in self.written:
            tmp.replace(final)
        stale = volumes + 1
        while (old := self.tape_path(stale)).exists() and not self.is_drive:
            old.unlink()  # a longer set written there before: not part of this one
            stale += 1
        self.staging.abort()
        return self.device

    def abort(self) -> None:
        for tmp, _ in self.written:
            tmp.unlink(missing_ok=True)
        self.staging.abort()
