"""What every medium shares when it writes a set: the set directory made visible only once complete
(SetDir), the read-back of a written volume (check_volume) and the evidence kept when it fails."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from mkrec.backup.setreader import Volume
from mkrec.backup.sums import SFV, SHA256SUMS, Sums, crc32_of, format_sfv, format_sha256sums
from mkrec.backup.volumes import write_private
from mkrec.errors import MkrecError

log = logging.getLogger("mkrec.backup")
# What an interrupted run leaves next to the sets (a write, a same-day replace, a retention removal).
LEFTOVERS = (".*.partial-*", ".*.replaced-*", ".*.removing-*")


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_leftovers(parent: Path) -> list[Path]:
    """Remove the partial or replaced sets that runs killed before they could clean up (SIGKILL,
    power loss) left in `parent`, when the process that wrote them is gone. A set of a running
    mkrec is never touched; nor is a name that does not end in a process id."""
    removed = []
    for pattern in LEFTOVERS:
        for path in sorted(parent.glob(pattern)):
            pid = path.name.rsplit("-", 1)[1]
            if pid.isdigit() and int(pid) != os.getpid() and process_gone(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                log.warning("warning: removed %s, left by an interrupted run (process %s is gone)", path, pid)
                removed.append(path)
    return removed


class SetDir:
    """A set directory written under a temporary name and renamed into place at the end; a set
    of the same day is replaced only then, older days are never touched."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.parent / f".{final.name}.partial-{os.getpid()}"

    def create(self) -> Path:
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            remove_leftovers(self.final.parent)
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir(mode=0o700)
        except OSError as exc:
            raise MkrecError(
                f"cannot create {self.tmp}: {exc.strerror}", hint="check [build] output (or [path] dir)"
            ) from None
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
