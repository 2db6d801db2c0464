"""The restore journal: one JSON line per finished step, so a rerun after a failure or a power loss
continues where it stopped.

It is written to /tmp (survives a failure, not a reboot) and, once the target root is mounted, to
var/log/mkrec-restore.journal on the restored disk itself (survives a power loss: a rerun finds it by
mounting the saved root filesystem, recognised by its UUID). Lines carry the plan's id; a journal of
another plan, or of a restore that finished, is not resumed."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path

log = logging.getLogger("mkrec.restore")

ON_DISK = Path("var/log/mkrec-restore.journal")
COMPLETE = "complete"


def journal_in_tmp(plan_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"mkrec-restore-{plan_id}.journal"


def read_steps(path: Path, plan_id: str) -> list[str]:
    """Finished steps of this plan recorded in `path`, in order; [] when there is nothing to resume."""
    try:
        text = path.read_text()
    except OSError:
        return []
    steps: list[str] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the power loss: that step did not finish
        if isinstance(entry, dict) and entry.get("plan") == plan_id and isinstance(entry.get("step"), str):
            steps.append(entry["step"])
    return [] if COMPLETE in steps else steps


class Journal:
    def __init__(self, plan_id: str, paths: list[Path], resumed: list[str] | None = None) -> None:
        self.plan_id = plan_id
        self.paths = list(paths)
        self.steps: list[str] = list(resumed or [])
        for path in self.paths:
            for step in read_steps(path, plan_id):
                if step not in self.steps:
                    self.steps.append(step)
        if self.steps:
            log.info("Resuming: %d step(s) already done (%s)", len(self.steps), ", ".join(self.steps))

    def done(self, step: str) -> bool:
        return step in self.steps

    def finish(self, step: str) -> None:
        # What the step wrote (an unpacked tree still in the page cache) must be on the disks before
        # the journal says it is done: after a power loss, a resumed restore trusts the journal.
        os.sync()
        self.steps.append(step)
        for path in self.paths:
            self._append(path, [step])

    def add_path(self, path: Path) -> None:
        """Start writing to one more place (the mounted target root), with everything done so far."""
        if path in self.paths:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        already = read_steps(path, self.plan_id)
        self._append(path, [s for s in self.steps if s not in already])
        self.paths.append(path)

    def complete(self) -> None:
        self.finish(COMPLETE)

    def _append(self, path: Path, steps: list[str]) -> None:
        if not steps:
            return
        at = datetime.now().isoformat(timespec="seconds")
        text = "".join(json.dumps({"plan": self.plan_id, "step": s, "at": at}) + "\n" for s in steps)
        with open(path, "a") as fh:
            fh.write(text)
            fh.flush()
            # The point of the journal is to survive a power loss: the line must be on the disk.
            os.fsync(fh.fileno())
