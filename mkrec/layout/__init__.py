"""Layout capture: what the disks look like, written as hand-editable text into etc/recovery/."""

from __future__ import annotations

import shutil
from pathlib import Path

from mkrec.context import Context


def capture_for_build(ctx: Context) -> Path:
    """The build's capture stage: fill ctx.recovery_dir. Until the full capture lands this writes
    the minimum the rescue system shows: host name, date and the fstab."""
    out = ctx.recovery_dir
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    (out / "hostname").write_text(ctx.hostname + "\n")
    (out / "date").write_text(ctx.started.isoformat(timespec="seconds") + "\n")
    fstab = ctx.config.source.root / "etc" / "fstab"
    if fstab.is_file():
        shutil.copyfile(fstab, out / "fstab")
    return out
