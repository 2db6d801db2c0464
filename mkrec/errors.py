"""The one error type users see: a message and, optionally, what to do about it."""

from __future__ import annotations

from typing import NoReturn


class MkrecError(Exception):
    """An error meant for the user: printed as one line (plus a hint), never as a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class CommandError(MkrecError):
    """An external command failed; carries the argv and what it printed on stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
        detail = f": {last.strip()}" if last else ""
        super().__init__(f"{argv[0]} failed (exit {returncode}){detail}", hint=f"command: {' '.join(argv)}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


def die(message: str, hint: str | None = None) -> NoReturn:
    raise MkrecError(message, hint)
