"""The backup: tar -> zstd frames -> cutstream -> checksummed volumes (ISO, directory or tape)."""

from __future__ import annotations

from pathlib import Path

from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.iso import BootPayload


def run_backup(ctx: Context, rescue: BootPayload) -> Path:
    """Modes cd/path/tape: back up every filesystem; volume 1 (or all, [media] bootable) carries rescue."""
    raise MkrecError(f"mode {ctx.config.build.mode} is not available yet in this version of mkrec")
