"""Where a backup set lies when it is not a local path: a directory behind a Fetcher (HTTP, SSH),
and one file in it. The Fetcher is the whole difference between the transports: the size of a file
and the bytes of a span of it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from mkrec.errors import MkrecError
from mkrec.remote.rangefile import RangeFile


class SourceError(MkrecError):
    """The server cannot be read at all (unreachable, login refused, no Range requests): not one
    unreadable volume among others, so it stops the command instead of being noted."""


class Fetcher(Protocol):
    url: str  # the set directory as the user gave it (never with a password)

    def size(self, path: str) -> int | None: ...  # None: no such file
    def read(self, path: str, offset: int, length: int) -> bytes: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class RemoteFile:
    fetcher: Fetcher
    path: str  # relative to the fetcher's directory

    def __str__(self) -> str:
        return f"{self.fetcher.url.rstrip('/')}/{self.path}"

    def open(self) -> BinaryIO:
        size = self.fetcher.size(self.path)
        if size is None:
            raise FileNotFoundError(f"{self}: no such file on the server")
        return cast(BinaryIO, RangeFile(str(self), size, partial(self.fetcher.read, self.path)))

    def read_text(self) -> str | None:
        """A small file whole; None when the server has no such file."""
        size = self.fetcher.size(self.path)
        return None if size is None else self.fetcher.read(self.path, 0, size).decode()


@dataclass(frozen=True)
class RemoteDir:
    fetcher: Fetcher
    iso: str = ""  # the URL named one ISO volume of the set: its file name

    def __str__(self) -> str:
        return self.fetcher.url

    def file(self, path: str) -> RemoteFile:
        return RemoteFile(self.fetcher, path)


VolumePlace = Path | RemoteDir | RemoteFile  # where one volume of a set is read from
