"""The rescue system: initrd + root RAM disk + boot configs, and the rescue-only ISO."""

from __future__ import annotations

from pathlib import Path

from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.iso import BootPayload


def build_rescue(ctx: Context) -> BootPayload:
    """Build the rescue system into ctx.staging and return what volume 1 must carry to boot it."""
    raise MkrecError("the rescue system is not available yet in this version of mkrec")


def write_rescue_set(ctx: Context, payload: BootPayload) -> Path:
    """Mode rescue: write the bootable ISO (with SHA256SUMS) into ctx.set_dir."""
    raise MkrecError("mode rescue is not available yet in this version of mkrec")
