"""Mode path: the files of one volume, no ISO, in [path] dir/<host>/<YYYYMMDD>/ (a local directory
or a mounted NFS/SMB share)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mkrec.backup.cutstream import Capacity, PieceFile
from mkrec.backup.setdir import SetDir, check_volume
from mkrec.backup.setreader import DirVolume
from mkrec.backup.volumes import ClosedVolume, add_recovery, stage_piece
from mkrec.context import Context
from mkrec.errors import MkrecError


class DirSink:
    """One volume of unlimited size (pieces are still cut below 1 GiB), written straight into the
    temporary set directory."""

    def __init__(self, ctx: Context) -> None:
        base = ctx.config.path.dir
        if base is None:
            raise MkrecError("mode path needs [path] dir", hint='set dir = "/mnt/backup" in [path]')
        self.recovery = ctx.recovery_dir
        self.setdir = SetDir(base / ctx.hostname / f"{ctx.started:%Y%m%d}")
        self.root = self.setdir.create()
        self.work = self.root / ".work"

    def capacity(self) -> Capacity:
        return Capacity(first=0, rest=0, block=1, per_file=0, fixed=0)

    def open_piece(self, number: int, name: str) -> PieceFile:
        return stage_piece(self.root, name)

    def close_volume(self, volume: ClosedVolume) -> None:
        add_recovery(self.recovery, self.root)
        sums = volume.write_files(self.root)
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)  # on the share before we call it written
                finally:
                    os.close(fd)
        check_volume(DirVolume(self.root), sums)

    def commit(self, volumes: int) -> Path:
        shutil.rmtree(self.work, ignore_errors=True)
        return self.setdir.commit()

    def abort(self) -> None:
        self.setdir.abort()
