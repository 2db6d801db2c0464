"""`mkrec build`: the whole pipeline, readable in one place. Each stage is one call into its module
and decides for itself what applies."""

from __future__ import annotations

from mkrec.backup import run_backup
from mkrec.config import Mode
from mkrec.context import Context
from mkrec.errors import die
from mkrec.layout import capture_for_build
from mkrec.log import step
from mkrec.preflight import require_config_ready, require_room_for_rescue
from mkrec.rescue import build_rescue, write_rescue_set
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


def build(ctx: Context) -> None:
    mode = ctx.config.build.mode
    require_separate_path(ctx)
    require_config_ready(ctx)
    with step("Capturing the disk layout"):
        layout = capture_for_build(ctx)
    with step("Building the rescue system"):
        rescue = build_rescue(ctx)
    require_room_for_rescue(ctx, rescue.size())
    if not mode.needs_volumes():  # in mode cd, volume 1 itself is the rescue disc
        with step("Writing the rescue disc"):
            write_rescue_set(ctx, rescue)
    if mode is Mode.RESTIC:
        backup_to_restic(ctx, layout)
    elif mode.writes_backup():
        run_backup(ctx, rescue, layout)
