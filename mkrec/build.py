"""`mkrec build`: the whole pipeline, readable in one place. Each stage decides for itself whether
it applies and is a single call into its module."""

from __future__ import annotations

from mkrec.config import Mode
from mkrec.context import Context
from mkrec.errors import die

# Modes whose build has landed. The menu and `build` say plainly when a mode is not there yet.
AVAILABLE_MODES: frozenset[Mode] = frozenset()


def require_available(mode: Mode) -> None:
    if mode not in AVAILABLE_MODES:
        die(
            f"mode {mode} ({mode.describe()}) is not available yet in this version of mkrec",
            hint="choose another mode in [build] mode or with --mode",
        )


def build(ctx: Context) -> None:
    require_available(ctx.config.build.mode)
