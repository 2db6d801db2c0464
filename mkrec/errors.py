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


# What a tool prints last when the reason is further up.
SUMMARY_LINES = frozenset({"tar: Exiting with failure status due to previous errors"})


class CommandError(MkrecError):
    """An external command failed; carries the argv and what it printed on stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        # The last line says why, except tar's closing summary: then its first complaint does.
        said = [line for line in lines if line not in SUMMARY_LINES]
        last = (said[0] if lines and lines[-1] in SUMMARY_LINES else said[-1]) if said else ""
        detail = f": {last}" if last else ""
        super().__init__(f"{argv[0]} failed (exit {returncode}){detail}", hint=f"command: {' '.join(argv)}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


def os_error_text(exc: OSError) -> str:
    """'Input/output error: /mnt/target/var/log/x' — what the system said, and where."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def die(message: str, hint: str | None = None) -> NoReturn:
    raise MkrecError(message, hint)
