"""What the drill needs from a backup set: its volumes (all present, or the missing one named), the
saved layout, the rescue system's boot files and the bytes the restore will write. The only module
of the drill that reads a set: the set reader may move, and this import is the one to change."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mkrec.backup.manifest import Manifest
from mkrec.backup.setreader import BackupSet, Volume, open_set, open_volume, read_volume, volume_sources
from mkrec.backup.volumes import MANIFEST, RECOVERY_IN_SET
from mkrec.context import Context
from mkrec.errors import MkrecError, die
from mkrec.layout.model import Layout
from mkrec.layout.textfmt import LAYOUT_FILE, parse_layout
from mkrec.rescue.bootcfg import INITRD, KERNEL, RDBASE
from mkrec.restore.decide.present import is_block
from mkrec.restore.decide.source import RESCUE_MOUNT

SET_DATE = re.compile(r"^\d{8}$")  # <output>/<host>/<YYYYMMDD>/


@dataclass(frozen=True)
class DrillSet:
    directory: Path  # the set's directory (a tape file's directory): the reports go here
    name: str  # CDrec-YYYYMMDD-HHMM
    rescue: Path  # the rescue disc: volume 1 of a cd set, the rescue-only disc of a path or tape set
    volumes: tuple[Path, ...]  # ISO volumes for the CD drives (a cd set), volume 1 first
    share: Path | None  # a path or tape set: the directory the rescue system mounts at RESCUE_MOUNT
    source: str  # start-restore --source inside the rescue system; "" when it finds the set itself
    layout: Layout
    restore_bytes: int  # uncompressed bytes of every stream: what the restore writes at most


def newest_set(ctx: Context) -> Path:
    """The newest set of this host: a cd set under [build] output, a path set under [path] dir
    (both <root>/<host>/<YYYYMMDD>/), the latest date first; a cd set before a path set of one day."""
    roots = [ctx.config.build.output / ctx.hostname]
    if ctx.config.path.dir:
        roots.append(ctx.config.path.dir / ctx.hostname)
    found = [
        (d.name, -rank, d)
        for rank, root in enumerate(roots)
        for d in root.glob("*")
        if SET_DATE.match(d.name) and d.is_dir() and _holds_a_set(d)
    ]
    if found:
        return max(found)[2]
    where = " or ".join(f"{root}/<YYYYMMDD>/" for root in roots)
    die(f"no backup set of {ctx.hostname} found in {where}", hint="run 'mkrec build' first, or name the set")


def _holds_a_set(d: Path) -> bool:
    """A directory of a set's data: a path set's manifest, or ISO volumes beyond a rescue-only disc."""
    return (d / MANIFEST).is_file() or any(d.glob("*-vol2.iso")) or _iso_with_manifest(d)


def _iso_with_manifest(d: Path) -> bool:
    """A one-volume cd set; a rescue-only disc (mode rescue, path, tape) carries no manifest."""
    for iso in d.glob("*-vol1.iso"):
        ov = read_volume("iso", iso)
        if ov is not None:
            ov.volume.close()
            return True
    return False


def open_drill_set(path: Path, output: Path) -> DrillSet:
    """Check that every volume of the set at path is there, find its rescue disc (a path or tape
    set's is in output, [build] output) and read its layout; no VM starts before this passed, so a
    missing volume is named at once."""
    if is_block(path) or path.is_char_device():
        die(
            f"{path}: a drive cannot be lent to the virtual machine",
            hint=f"copy the tape to a file first (dd if={path} of=FILE bs=1M) and drill FILE",
        )
    where = path.parent if path.is_file() and path.suffix == ".iso" else path
    kinds = {kind for kind, _ in volume_sources(where)}
    bset = open_set(where)
    try:
        name = bset.set_name
        _require_every_volume(bset, where)
        if bset.encryption is not None:
            die(
                f"{name} is encrypted: it cannot be drilled yet (the drill's restore has nobody to ask "
                "for the key)",
                hint="check it with 'mkrec verify --deep --identity FILE'; no virtual machine was started",
            )
        first = bset.volumes[1]
        layout = _read_layout(first.volume)
        restore_bytes = sum(s.size or 0 for s in bset.streams.values())
        if kinds == {"iso"}:
            volumes = tuple(Path(bset.volumes[n].volume.name) for n in sorted(bset.volumes))
            return DrillSet(where, name, volumes[0], volumes, None, "", layout, restore_bytes)
        rescue = rescue_disc(output, first.manifest)
    finally:
        bset.close()
    if kinds == {"tape"}:  # the tape file's directory is shared; the restore reads the file there
        tape_dir, source = where.parent, f"{RESCUE_MOUNT}/{where.name}"
        return DrillSet(tape_dir, name, rescue, (), tape_dir, source, layout, restore_bytes)
    return DrillSet(where, name, rescue, (), where, "", layout, restore_bytes)


def _require_every_volume(bset: BackupSet, where: Path) -> None:
    name = bset.set_name
    if bset.unreadable:
        die(f"{name}: {bset.unreadable[0]}", hint="run 'mkrec verify' on the set")
    missing = bset.missing()
    if missing or bset.total is None:
        # Only the last volume knows the set's size: without it, the one after the last present.
        n = missing[0] if missing else max(bset.volumes) + 1
        total = f" of {bset.total}" if bset.total else ""
        die(
            f"{name}: volume {n}{total} ({name}-vol{n}.iso) is missing in {where}",
            hint="put every volume of the set into one directory; no virtual machine was started",
        )


def _read_layout(volume: Volume) -> Layout:
    name = f"{RECOVERY_IN_SET}/{LAYOUT_FILE}"
    try:
        with volume.open(name) as fh:
            return parse_layout(fh.read().decode(), f"{volume.name}:{name}")
    except MkrecError:
        raise
    except Exception as exc:  # pycdlib's "not found" and a damaged disc alike: one line
        die(f"{volume.name}: no readable {name} ({exc})")


def rescue_disc(output: Path, manifest: Manifest) -> Path:
    """The rescue-only disc written with a path or tape set: [build] output/<host>/<YYYYMMDD>/."""
    date = manifest.set_name.split("-")[1] if manifest.set_name.count("-") >= 2 else "<YYYYMMDD>"
    iso = output / manifest.host / date / f"{manifest.set_name}-vol1.iso"
    if not iso.is_file():
        die(
            f"{manifest.set_name}: its rescue disc {iso} is not there",
            hint="a mode path or tape set boots the rescue disc its build wrote to [build] output",
        )
    return iso


def copy_boot_files(dset: DrillSet, dest: Path) -> tuple[Path, Path]:
    """The rescue disc's kernel and its two initrds as one file (the kernel unpacks concatenated
    cpio archives the way the boot loader hands them over): (kernel, initrd) in dest."""
    kernel, initrd = dest / "vmlinuz", dest / "initrd.img"
    try:
        rescue = open_volume("iso", dset.rescue)
    except MkrecError as exc:
        die(f"{dset.rescue}: cannot read the rescue disc ({exc})")
    try:
        with rescue.open(KERNEL.lstrip("/")) as src, open(kernel, "wb") as out:
            shutil.copyfileobj(src, out)
        with open(initrd, "wb") as out:
            for part in (INITRD, RDBASE):
                with rescue.open(part.lstrip("/")) as src:
                    shutil.copyfileobj(src, out)
                out.write(b"\0" * (-out.tell() % 4))  # each archive starts 4-byte aligned
    except Exception as exc:  # pycdlib's "not found" and a damaged disc alike: one line
        die(f"{dset.rescue}: cannot read the rescue system's boot files ({exc})")
    finally:
        rescue.close()
    return kernel, initrd
