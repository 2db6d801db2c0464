"""`mkrec build`: the whole pipeline, readable in one place. Each stage is one call into its module
and decides for itself what applies."""

from __future__ import annotations

from pathlib import Path

from mkrec.backup import run_backup
from mkrec.backup.run import UnreadableFiles
from mkrec.config import Mode
from mkrec.context import Context
from mkrec.errors import die
from mkrec.layout import capture_for_build
from mkrec.log import step
from mkrec.preflight import require_config_ready, require_room_for_rescue
from mkrec.rescue import build_rescue, write_rescue_set
from mkrec.rescue.netboot import write_netboot
from mkrec.restic.backup import backup_to_restic


def require_separate_path(ctx: Context) -> None:
    """Mode path puts the backup in [path] dir/<host>/<date>/ and the rescue disc in
    [build] output/<host>/<date>/; each replaces its directory whole, so they must differ."""
    cfg = ctx.config
    if cfg.build.mode is Mode.PATH and cfg.path.dir and cfg.path.dir.resolve() == cfg.build.output.resolve():
        die(
            f"[path] dir and [build] output are the same directory ({cfg.path.dir})",
            hint="the rescue disc goes to [build] output: point [path] dir elsewhere",
        )


def build(ctx: Context) -> list[Path]:
    """Returns what it wrote: the set directories (and the tape device in mode tape)."""
    mode = ctx.config.build.mode
    require_separate_path(ctx)
    require_config_ready(ctx)
    with step("Capturing the disk layout"):
        layout = capture_for_build(ctx)
    with step("Building the rescue system"):
        rescue = build_rescue(ctx)
    require_room_for_rescue(ctx, rescue.size())
    written = []
    if not mode.needs_volumes():  # in mode cd, volume 1 itself is the rescue disc
        with step("Writing the rescue disc"):
            written.append(write_rescue_set(ctx, rescue).parent)
    if mode is Mode.RESTIC:
        backup_to_restic(ctx, layout)  # the repository keeps the set; the rescue disc is written above
    elif mode.writes_backup():
        try:
            written.append(run_backup(ctx, rescue, layout))
        except UnreadableFiles as unreadable:  # the set is written: its netboot tree too, then say so
            written.append(unreadable.set_dir)
            _write_netboot(ctx)
            raise
    _write_netboot(ctx)
    return written


def _write_netboot(ctx: Context) -> None:
    with step("Writing the netboot tree"):  # into the set directory written above
        write_netboot(ctx)
