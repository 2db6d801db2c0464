"""Questions to the person at the console. Under --yes nothing is asked; without a terminal and
without --yes nothing is written (a restore is never confirmed by an empty stdin)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from mkrec.errors import MkrecError
from mkrec.restore.decide.model import SavedDisk
from mkrec.restore.decide.present import PresentDisk

Input = Callable[[str], str]


def interactive() -> bool:
    return sys.stdin.isatty()


def person(yes: bool) -> Input | None:
    """How to ask the person at the console; None under --yes or without a terminal."""
    return None if yes or not interactive() else input


def confirm_erase(summary: str, yes: bool, ask: Input | None = None) -> None:
    """Show the plan; go on only on an explicit "yes"."""
    print(summary, flush=True)
    if yes:
        return
    if ask is None:
        if not interactive():
            raise MkrecError(
                "nothing was written: confirmation needed", hint="run it on a terminal, or add --yes"
            )
        ask = input
    answer = ask("Type yes to erase the disks above and restore: ").strip().lower()
    if answer != "yes":
        raise MkrecError("nothing was written: not confirmed")


def make_chooser(ask: Input = input) -> Callable[[SavedDisk, list[PresentDisk]], PresentDisk | None]:
    def choose(saved: SavedDisk, candidates: list[PresentDisk]) -> PresentDisk | None:
        print(f"Which disk should receive saved disk {saved.name}?")
        for i, disk in enumerate(candidates, 1):
            print(f"  {i}) {disk.describe()}")
        answer = ask("Number (empty: stop): ").strip()
        if answer.isdigit() and 1 <= int(answer) <= len(candidates):
            return candidates[int(answer) - 1]
        return None

    return choose


def ask_step(title: str, ask: Input = input) -> bool:
    """clone-disk: each step can be skipped. True: run it."""
    answer = ask(f"Run step '{title}'? [Y/n/skip] ").strip().lower()
    return answer not in ("n", "no", "s", "skip")
