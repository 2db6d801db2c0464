"""`--source restic:<repository>[#<set or snapshot>]` as the command line gives it: which repository,
which set, and the password (a file, or typed on the terminal; never an argument)."""

from __future__ import annotations

import getpass
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.restic.repo import Repo

PREFIX = "restic:"


@dataclass(frozen=True)
class ResticSource:
    repo: Repo
    selector: str = ""  # "": the newest set; a set name; or the id (prefix) of one of its snapshots

    @classmethod
    def parse(cls, text: str) -> ResticSource:
        location, _sep, selector = text.removeprefix(PREFIX).partition("#")
        if not location:
            raise MkrecError(
                f"--source {text}: no repository named", hint="write restic:<repository>[#<set>]"
            )
        return cls(Repo(location), selector)

    def with_password(
        self, password_file: Path | None, env_file: Path | None, options: tuple[str, ...] = ()
    ) -> ResticSource:
        """The password file given on the command line (else [restic] password_file), the backend's
        env file and [restic] options; without a password file the password is asked on the terminal."""
        repo = replace(self.repo, password_file=password_file, env_file=env_file, options=options)
        if password_file is not None and not password_file.is_file():
            raise MkrecError(f"{password_file}: no such password file; nothing was written")
        if password_file is None and sys.stdin.isatty():
            repo = replace(
                repo, password=getpass.getpass(f"Password of the restic repository {repo.location}: ")
            )
        return ResticSource(repo, self.selector)

    def __str__(self) -> str:
        return PREFIX + self.repo.location + (f"#{self.selector}" if self.selector else "")


def source_arg(text: str) -> Path | ResticSource:
    """--source: restic:… names a repository, anything else a path."""
    return ResticSource.parse(text) if text.startswith(PREFIX) else Path(text)
