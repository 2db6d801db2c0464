"""Mode tape: each volume a tar archive of the volume's files, blocked for the drive; a regular
file can stand in for the drive."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO

from mkrec.backup.cutstream import Capacity, PieceFile
from mkrec.backup.setdir import SetDir, check_volume
from mkrec.backup.setreader import TarVolume
from mkrec.backup.volumes import Ask, ClosedVolume, add_recovery, recovery_files, stage_piece
from mkrec.context import Context

log = logging.getLogger("mkrec.backup")


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
    """Volumes staged in <output>/<host>/.tape-staging, at most [tape] capacity per tape, written
    as tar archives blocked to [tape] block_size. With a file for the drive, tape N of the set is
    <file> for N = 1 and <file>.<N> after that."""

    def __init__(self, ctx: Context, ask: Ask) -> None:
        self.cfg = ctx.config.tape
        self.ask = ask
        self.recovery = ctx.recovery_dir
        self.staging = SetDir(ctx.config.build.output / ctx.hostname / ".tape-staging")
        self.root = self.staging.create()
        self.work = self.root / "work"
        self.device = self.cfg.device
        self.is_drive = self.device.exists() and stat.S_ISCHR(self.device.stat().st_mode)
        self.written: list[tuple[Path, Path]] = []  # (temporary, final) for file tapes

    def capacity(self) -> Capacity:
        tape = Capacity(self.cfg.capacity, self.cfg.capacity, block=512, per_file=1536, fixed=0)
        # volume 1 also carries etc/recovery (add_recovery), counted as the tape counts every file
        recovery = tape.usage([p.stat().st_size for p in recovery_files(self.recovery)])
        fixed = 2 * 10240 + self.cfg.block_size
        return Capacity(tape.first - recovery, tape.rest, block=512, per_file=1536, fixed=fixed)

    def _volume_dir(self, number: int) -> Path:
        d = self.root / f"vol{number:03d}"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def open_piece(self, number: int, name: str) -> PieceFile:
        return stage_piece(self._volume_dir(number), name)

    def tape_path(self, number: int) -> Path:
        return self.device if number == 1 else self.device.with_name(f"{self.device.name}.{number}")

    def close_volume(self, volume: ClosedVolume) -> None:
        number = volume.number
        voldir = self._volume_dir(number)
        if number == 1:
            add_recovery(self.recovery, voldir)
        sums = volume.write_files(voldir)
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
