"""Running the restore as named steps: each is skipped when the journal says it finished, recorded
when it does, and a failure says which step, which command, and what to do next."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mkrec.errors import MkrecError, os_error_text
from mkrec.log import step
from mkrec.restore.apply.journal import Journal
from mkrec.restore.ask import Input, ask_step

log = logging.getLogger("mkrec.restore")


class Steps:
    def __init__(self, journal: Journal, action: str, ask_each: Input | None = None) -> None:
        self.journal = journal
        self.action = action
        self.ask_each = ask_each  # clone-disk on a terminal: each step can be skipped

    def run(
        self, name: str, title: str, fn: Callable[[], object], again: Callable[[], object] | None = None
    ) -> None:
        """fn: the step (what it returns is not used). again: for a step that finished in an earlier
        run, what makes its result usable now (a RAID array assembled, a LUKS container opened after
        a reboot)."""
        if self.journal.done(name):
            log.info("    %s: finished in an earlier run, skipped", title)
            if again is not None:
                again()
            return
        if self.ask_each is not None and not ask_step(title, self.ask_each):
            log.info("    %s: skipped on request", title)
            return
        with step(title):
            try:
                fn()
                self.journal.finish(name)
            except MkrecError as exc:
                raise self._failed(title, exc.message, exc.hint) from exc
            except OSError as exc:  # a disk gone, a file system turned read-only: the system's error
                raise self._failed(title, os_error_text(exc)) from exc

    def _failed(self, title: str, why: str, hint: str | None = None) -> MkrecError:
        what = f"{hint}; " if hint else ""
        return MkrecError(
            f"step '{title}' failed: {why}",
            hint=f"{what}fix the cause, then run 'mkrec restore {self.action}' again: "
            "finished steps are skipped",
        )
