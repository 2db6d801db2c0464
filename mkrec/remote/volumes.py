"""The volumes of a set behind a URL, found without a directory listing (a web server need not
offer one): a path set is known by its backup/manifest.json and lists its files in SHA256SUMS; a cd
set's directory names its ISO files in volumes.txt (written by every cd build), or the URL names one
ISO file and its siblings -vol1, -vol2 ... are tried in turn."""

from __future__ import annotations

import re
from typing import IO

from mkrec.backup.sums import SFV, SHA256SUMS, parse_sha256sums
from mkrec.backup.volumes import MANIFEST, VOLUMES_INDEX
from mkrec.errors import MkrecError
from mkrec.remote.place import RemoteDir, VolumePlace

ISO_NAME = re.compile(r"^(?P<stem>.*-vol)(?P<number>\d+)\.iso$")
MAX_VOLUMES = 999


class RemoteDirVolume:
    """A path set's directory on a server. Its files are the ones its SHA256SUMS names (a file lost
    on the server shows when it is read); sizes are not asked for, so they read as -1."""

    def __init__(self, root: RemoteDir) -> None:
        self.root = root
        self.name = str(root)
        self._files: dict[str, int] | None = None

    def files(self) -> dict[str, int]:
        if self._files is None:
            text = self.root.file(SHA256SUMS).read_text()
            listed = parse_sha256sums(text, f"{self.name}/{SHA256SUMS}") if text is not None else {}
            self._files = dict.fromkeys([*listed, SHA256SUMS, SFV], -1)
        return self._files

    def open(self, path: str) -> IO[bytes]:
        return self.root.file(path).open()

    def close(self) -> None:
        pass


def remote_volume_sources(root: RemoteDir) -> list[tuple[str, VolumePlace]]:
    """(kind, place) of every volume of the set at root."""
    if root.iso:
        return [("iso", root.file(name)) for name in sibling_isos(root, root.iso)]
    if root.fetcher.size(MANIFEST) is not None:
        return [("dir", root)]
    index = root.file(VOLUMES_INDEX).read_text()
    if index is None:
        raise MkrecError(
            f"{root}: no backup set here (neither {MANIFEST} nor {VOLUMES_INDEX} on the server)",
            hint="give the URL of the set's directory (<output>/<host>/<date>/) or of its first ISO file",
        )
    return [("iso", root.file(name)) for name in index.split()]


def sibling_isos(root: RemoteDir, named: str) -> list[str]:
    """The ISO file the URL named and the other volumes of its set that the server has."""
    match = ISO_NAME.match(named)
    if not match:
        return [named]
    found = []
    for number in range(1, MAX_VOLUMES + 1):
        name = f"{match['stem']}{number}.iso"
        if root.fetcher.size(name) is None:
            if number > int(match["number"]):
                break
            continue
        found.append(name)
    return found
