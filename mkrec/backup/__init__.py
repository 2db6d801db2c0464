"""The backup: tar -> zstd frames -> cutstream -> checksummed volumes (ISO, directory or tape)."""

from __future__ import annotations

from pathlib import Path

from mkrec.context import Context
from mkrec.iso import BootPayload


def run_backup(ctx: Context, rescue: BootPayload | None) -> Path:
    """Modes cd/path/tape: back up every filesystem; volume 1 (or all, [media] bootable) carries rescue."""
    from mkrec.backup.run import backup

    return backup(ctx, rescue)
