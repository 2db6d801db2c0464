"""The backup: tar -> zstd frames -> cutstream -> checksummed volumes (ISO, directory or tape)."""

from __future__ import annotations

from pathlib import Path

from mkrec.context import Context
from mkrec.iso import BootPayload
from mkrec.layout.model import Layout


def run_backup(ctx: Context, rescue: BootPayload | None, layout: Layout | None = None) -> Path:
    """Modes cd/path/tape: back up every filesystem (those of `layout` that are not mounted as images);
    volume 1 (or all, [media] bootable) carries rescue."""
    from mkrec.backup.run import backup

    return backup(ctx, rescue, layout=layout)
