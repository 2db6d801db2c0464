"""Layout capture: what the disks look like, written as hand-editable text into etc/recovery/.

Entry points: capture_for_build(ctx) (the build stage), capture_layout(ctx, disks, out) (the
`mkrec layout capture` command), and read_layout(path) from mkrec.layout.textfmt (for the restore).
The disks captured are those mkrec.layout.sourcedisks chooses.
"""

from __future__ import annotations

from pathlib import Path

from mkrec.context import Context
from mkrec.layout.model import Layout
from mkrec.layout.sourcedisks import disks_to_back_up
from mkrec.layout.textfmt import LAYOUT_FILE, read_layout

__all__ = ["LAYOUT_FILE", "capture_for_build", "capture_layout", "read_layout"]


def capture_layout(ctx: Context, disks: list[str] | None = None, out: Path | None = None) -> Layout:
    """Capture the given disks (default: [source] disks, else the disks under [source] root) into out
    (default: ctx.recovery_dir) and return the layout written."""
    from mkrec.layout.capture import capture

    chosen = list(disks) if disks else disks_to_back_up(ctx.config)
    return capture(chosen, out or ctx.recovery_dir, ctx.config.source.root, ctx.hostname, ctx.started)


def capture_for_build(ctx: Context) -> Layout:
    """The build's capture stage: fill ctx.recovery_dir; the layout goes on to the backup, which
    images the file systems in it that are not mounted."""
    return capture_layout(ctx)
