"""The classic mkCDrec menu shown by `make` on a terminal when no MODE is given."""

from __future__ import annotations

from collections.abc import Callable

from mkrec.config import Mode

CHOICES = [Mode.RESCUE, Mode.CD, Mode.PATH, Mode.TAPE, Mode.RESTIC]
QUIT = str(len(CHOICES) + 1)


def menu_lines(default: Mode) -> list[str]:
    lines = ["", "mkrec — what shall we make?", ""]
    for number, mode in enumerate(CHOICES, start=1):
        mark = "*" if mode is default else " "
        lines.append(f" {mark}{number}  {mode.describe()}")
    lines.append(f"  {QUIT}  quit")
    lines.append("")
    return lines


def choose_mode(
    default: Mode, ask: Callable[[str], str] = input, say: Callable[[str], None] = print
) -> Mode | None:
    """Show the menu until a mode is chosen; None means quit. Enter takes the default (*)."""
    for line in menu_lines(default):
        say(line)
    while True:
        try:
            answer = ask(f"Your choice [1-{QUIT}, Enter = {CHOICES.index(default) + 1}]: ").strip()
        except EOFError:
            return None
        if answer == QUIT or answer.lower() in ("q", "quit"):
            return None
        if answer == "":
            mode = default
        elif answer.isdigit() and 1 <= int(answer) <= len(CHOICES):
            mode = CHOICES[int(answer) - 1]
        else:
            say(f"Please answer a number from 1 to {QUIT}.")
            continue
        return mode
