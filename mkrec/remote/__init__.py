"""--source: a local path, or a URL of a set on the network. open_source() turns what the user gave
into a place the set reader knows — a local Path (a directory, an ISO or tape file, an NFS mount) or
a RemoteDir (HTTP, SSH) — and undoes whatever it opened (a mount, an ssh connection) afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from mkrec.errors import MkrecError
from mkrec.remote.place import Fetcher, RemoteDir

SCHEMES = "nfs://, http://, https://, ssh://"
Place = Path | RemoteDir


@dataclass(frozen=True)
class Source:
    text: str  # a path or a URL, as the user wrote it
    ssh_identity: Path | None = None  # ssh: the private key file
    ssh_config: Path | None = None  # ssh: an ssh_config(5) file (host aliases, known hosts, jumps)

    def __str__(self) -> str:
        return self.text


@contextlib.contextmanager
def open_source(source: Source | Path | str) -> Iterator[Place]:
    src = source if isinstance(source, Source) else Source(str(source))
    url = urlsplit(src.text)
    if not url.scheme or Path(src.text).exists():
        path = Path(src.text)
        if not path.exists():
            raise MkrecError(
                f"{path}: no such backup set", hint="give the set's directory, an ISO, a drive or a URL"
            )
        yield path
        return
    check_url(url)
    directory, iso = split_iso(url)
    with scheme_opener(directory, src) as place:
        if not iso:
            yield place
        elif isinstance(place, Path):
            yield place / iso
        else:
            yield RemoteDir(place.fetcher, iso)


def scheme_opener(url: SplitResult, src: Source) -> contextlib.AbstractContextManager[Place]:
    """The one dispatch on the URL scheme: a new kind of source is one branch here."""
    if url.scheme in ("http", "https"):
        from mkrec.remote.http import HttpFetcher

        return remote_dir(HttpFetcher(url))
    if url.scheme == "ssh":
        from mkrec.remote.ssh import SshFetcher

        return remote_dir(SshFetcher(url, src.ssh_identity, src.ssh_config))
    if url.scheme == "nfs":
        from mkrec.remote.nfs import mounted_nfs

        return mounted_nfs(url)
    raise MkrecError(f"{src.text}: unknown kind of source '{url.scheme}:'", hint=f"give a path or {SCHEMES}")


def check_url(url: SplitResult) -> None:
    """A URL names a server and a path, and never carries a password: it would show in `ps`, in the
    logs and, baked as [rescue] source, on the disc."""
    if url.password is not None:
        raise MkrecError(
            f"{url.scheme}://{url.hostname}/...: a password in a URL is refused (logs and ps would show it)",
            hint="ssh: use a key (--ssh-identity) or type the password when asked; http(s): use ~/.netrc",
        )
    if not url.hostname:
        raise MkrecError(
            f"{url.geturl()}: no server in the URL", hint=f"write it as {url.scheme}://SERVER/path"
        )


def split_iso(url: SplitResult) -> tuple[SplitResult, str]:
    """(the directory, the ISO file name): a URL ending in .iso names one volume of a cd set."""
    parent, _, name = url.path.rpartition("/")
    if name.endswith(".iso"):
        return url._replace(path=parent + "/"), name
    return url, ""


@contextlib.contextmanager
def remote_dir(fetcher: Fetcher) -> Iterator[RemoteDir]:
    try:
        yield RemoteDir(fetcher)
    finally:
        fetcher.close()
