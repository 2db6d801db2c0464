"""The restore actions, once: what `mkrec restore ACTION` does, the rescue system's command that runs
it, and its line of help. The command line, the rescue wrappers (mkrec.rescue.rdbase.WRAPPERS) and
the texts listing the commands (templates/README.txt.j2, motd.j2) all read this table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Where start, clone and fs mount the restored system, and where compare looks for one.
TARGET = Path("/mnt/target")


@dataclass(frozen=True)
class RestoreAction:
    name: str  # mkrec restore NAME
    wrapper: str  # the command in the rescue system's shell
    help: str


ACTIONS = (
    RestoreAction("start", "start-restore", "rebuild the disks and restore everything"),
    RestoreAction("clone", "clone-disk", "restore one saved disk onto another disk"),
    RestoreAction("fs", "restore-fs", "restore one filesystem into an existing partition"),
    RestoreAction("compare", "compare", "list the files changed, added or missing since the backup"),
)
