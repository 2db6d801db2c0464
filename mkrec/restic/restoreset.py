"""`--source restic:<repository>[#<set or snapshot>]`: a set inside a restic repository read the way
the restore engine reads a set of volumes (the same RestoreSet interface). Which set: the newest
run's, one named by its set name (CDrec-…), or the run any of whose snapshot ids is given. Its
etc/recovery and manifest come from the run's recovery snapshot; a file system is filled with
`restic restore`, an image is read back with `restic dump`. Every file system of the manifest must
have its snapshot before anything is written."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

from mkrec.backup.catalog import CatalogEntry
from mkrec.backup.manifest import StreamRecord, parse_manifest
from mkrec.backup.sources import used_bytes
from mkrec.errors import MkrecError
from mkrec.progress import Progress
from mkrec.restic import tags
from mkrec.restic.backup import MANIFEST, TOPS
from mkrec.restic.listing import as_image, parse_ls, top_entry
from mkrec.restic.spec import ResticSource
from mkrec.restic.tags import Snapshot
from mkrec.restore.decide.source import Ask, Damage, RestoreSet

log = logging.getLogger("mkrec.restore")

CHUNK = 1 << 20


def choose_set(snapshots: list[Snapshot], selector: str, location: str) -> Snapshot:
    """The recovery snapshot of the set asked for (see the module's docstring)."""
    recoveries = sorted((s for s in snapshots if tags.is_recovery(s)), key=lambda s: s.get("time", ""))
    if not recoveries:
        raise MkrecError(f"restic repository {location} holds no complete mkrec set",
                         hint="mode restic writes them: mkrec build --mode restic")  # fmt: skip
    if not selector:
        return recoveries[-1]
    set_id = next((tags.tag_value(s, tags.ID) for s in snapshots if s.get("id", "").startswith(selector)), "")
    found = [
        s
        for s in recoveries
        if selector == tags.tag_value(s, tags.SET) or (set_id and set_id == tags.tag_value(s, tags.ID))
    ]
    if not found:
        raise MkrecError(f"restic repository {location}: no set or snapshot {selector}",
                         hint=f"list the sets: mkrec sets restic:{location}")  # fmt: skip
    return found[-1]


def members(snapshots: list[Snapshot], recovery: Snapshot) -> dict[str, str]:
    """stream -> snapshot id of the file systems of the recovery snapshot's run."""
    set_id = tags.tag_value(recovery, tags.ID)
    return {
        tags.tag_value(s, tags.FS): s["id"]
        for s in sorted(snapshots, key=lambda s: s.get("time", ""))
        if tags.tag_value(s, tags.ID) == set_id and tags.tag_value(s, tags.FS)
    }


def untar(data: bytes) -> dict[str, bytes]:
    """restic dump's tar of a small snapshot: path -> content of each file."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            fh = tar.extractfile(member) if member.isfile() else None
            if fh is not None:
                out[member.name.removeprefix("./").removeprefix("/")] = fh.read()
    return out


class ResticSet(RestoreSet):
    """A set in a restic repository. Nothing to insert and no volumes: scan/need are never called."""

    def __init__(self, source: ResticSource, ask: Ask | None = None) -> None:
        self.source = None
        self.ask = ask
        self.opened = contextlib.ExitStack()  # nothing to mount: restic reaches the repository
        self._catalog: list[CatalogEntry] | None = None
        self.repo = source.repo
        snapshots = self.repo.json("snapshots", "--tag", tags.TAG) or []
        recovery = choose_set(snapshots, source.selector, self.repo.location)
        self.set_id = tags.tag_value(recovery, tags.ID)
        self.set_name = tags.tag_value(recovery, tags.SET)
        log.info("restic set %s of %s (%s), recovery snapshot %s", self.set_name, recovery.get("hostname"),
                 recovery.get("time", "")[:19], recovery.get("short_id"))  # fmt: skip
        self.files = untar(self.repo.read_bytes("dump", recovery["id"], "/"))
        if MANIFEST not in self.files:
            raise MkrecError(f"restic snapshot {recovery.get('short_id')}: no {MANIFEST} in it")
        manifest = parse_manifest(self.files[MANIFEST].decode(), f"{source}:{MANIFEST}")
        self._streams = {s.name: s for s in manifest.streams}
        self.tops = json.loads(self.files.get(TOPS, b"{}"))
        self.snapshots = members(snapshots, recovery)
        for name, record in self._streams.items():
            if name not in self.snapshots:
                raise MkrecError(
                    f"restic set {self.set_name} has no snapshot of {record.mountpoint or record.device} "
                    f"({record.device}, stream {name}); nothing was written",
                    hint="it was forgotten or removed; choose another set: mkrec sets restic:"
                    + self.repo.location,
                )

    @property
    def streams(self) -> dict[str, StreamRecord]:
        return self._streams

    def recovery_file(self, name: str) -> bytes | None:
        return self.files.get(f"etc/recovery/{name}")

    def nodes(self) -> list[Path]:
        """A repository on a local path: its disk must not be written."""
        path = self.repo.local_path()
        return [path.resolve()] if path is not None and path.exists() else []

    def close(self) -> None:
        pass

    def catalog(self) -> tuple[list[CatalogEntry], list[int]]:
        """Every file of the set, from `restic ls` of each file system's snapshot (read once)."""
        if self._catalog is None:
            self._catalog = [e for name in self._streams for e in self.listing(name)]
        return self._catalog, []

    def listing(self, name: str) -> list[CatalogEntry]:
        record = self._streams[name]
        text = self.repo.run("ls", "--json", self.snapshots[name])
        entries = parse_ls(text, name, f"restic ls of {record.mountpoint or record.device} ({name})")
        if record.kind == "image":
            return as_image(entries)
        top = self.tops.get(name)
        return ([top_entry(name, top)] if top else []) + entries

    def chunks(self, name: str, damage: Damage | None = None) -> Iterator[bytes]:
        """An image stream as `restic dump` gives it back (restic checks its own data: no damage
        to step over here)."""
        args = ("dump", self.snapshots[name], "/" + name)
        proc = self.repo.popen(*args)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            while chunk := proc.stdout.read(CHUNK):
                yield chunk
        except BaseException:  # the reader stopped early (GeneratorExit) or failed
            proc.kill()
            proc.wait()
            raise
        err = proc.stderr.read()
        code = proc.wait()
        if code != 0:
            raise self.repo.failed(args, code, err)

    def restore_paths(
        self, name: str, dest: Path, includes: tuple[str, ...] = (), total: int | None = None
    ) -> None:
        """restic restore of a file system's snapshot (only the includes' patterns, when given) into
        dest. It prints no progress where there is no terminal: watch the file system fill."""
        record = self._streams[name]
        progress = Progress(
            f"Restoring {record.mountpoint or name}", record.size or 0 if total is None else total
        )
        before = used_bytes(dest)
        args = ("restore", self.snapshots[name], "--target", str(dest), *includes)
        proc = self.repo.popen(*args)
        while True:
            try:
                _out, err = proc.communicate(timeout=1)
                break
            except subprocess.TimeoutExpired:
                progress.update(max(used_bytes(dest) - before, 0))
        if proc.returncode != 0:
            raise self.repo.failed(args, proc.returncode, err)
        progress.update(progress.total)
        progress.finish()

    def restore_tree(self, name: str, dest: Path) -> None:
        """A file system's snapshot into dest (its mount point): owners, modes, times, xattrs and ACLs
        as saved; the top directory's own from the set's tops."""
        self.restore_paths(name, dest)
        top = self.tops.get(name)
        if top:
            os.chown(dest, top["uid"], top["gid"])
            os.chmod(dest, top["mode"])
            os.utime(dest, ns=(top["atime_ns"], top["mtime_ns"]))
