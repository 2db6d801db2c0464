"""What the drill needs from a backup set: its volumes (all present, or the missing one named), the
saved layout, the rescue system's boot files and the bytes the restore will write. The only module
of the drill that reads a set: the set reader may move, and this import is the one to change."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mkrec.backup.setreader import open_set, volume_sources
from mkrec.context import Context
from mkrec.errors import MkrecError, die
from mkrec.layout.model import Layout
from mkrec.layout.textfmt import LAYOUT_FILE, parse_layout
from mkrec.rescue.bootcfg import INITRD, KERNEL, RDBASE

SET_DATE = re.compile(r"^\d{8}$")  # <output>/<host>/<YYYYMMDD>/


@dataclass(frozen=True)
class DrillSet:
    directory: Path  # where the volumes are; the reports go here too
    name: str  # CDrec-YYYYMMDD-HHMM
    volumes: tuple[Path, ...]  # ISO files, volume 1 (the rescue disc) first
    layout: Layout
    restore_bytes: int  # uncompressed bytes of every stream: what the restore writes at most


def newest_set(ctx: Context) -> Path:
    """The newest set of this host: <[build] output>/<host>/<YYYYMMDD>/, the latest date first."""
    host_dir = ctx.config.build.output / ctx.hostname
    dates = sorted((d for d in host_dir.glob("*") if SET_DATE.match(d.name) and d.is_dir()), reverse=True)
    for d in dates:
        if any(d.glob("*-vol1.iso")):
            return d
    where = f"{host_dir}/<YYYYMMDD>/"
    if ctx.config.path.dir and any((ctx.config.path.dir / ctx.hostname).glob("*")):
        die(
            f"no set with ISO volumes in {where}; mode path sets cannot be drilled yet",
            hint="drill a mode cd set: mkrec drill DIR",
        )
    die(f"no backup set of {ctx.hostname} found in {where}", hint="run 'mkrec build' first, or name the set")


def _set_directory(path: Path) -> Path:
    if path.is_file() and path.suffix == ".iso":
        return path.parent
    return path


def open_drill_set(path: Path) -> DrillSet:
    """Check that every volume of the set at path is there and read its layout; no VM starts
    before this passed, so a missing volume is named at once."""
    directory = _set_directory(path)
    kinds = {kind for kind, _ in volume_sources(directory)}
    if kinds != {"iso"}:
        die(
            f"{directory}: only sets of ISO volumes (mode cd) can be drilled yet",
            hint="a mode path or tape set has no rescue disc next to its data",
        )
    bset = open_set(directory)
    try:
        name = bset.set_name
        if bset.unreadable:
            die(f"{name}: {bset.unreadable[0]} is unreadable", hint="run 'mkrec verify' on the set")
        missing = bset.missing()
        if missing or bset.total is None:
            # Only the last volume knows the set's size: without it, the one after the last present.
            n = missing[0] if missing else max(bset.volumes) + 1
            total = f" of {bset.total}" if bset.total else ""
            die(
                f"{name}: volume {n}{total} ({name}-vol{n}.iso) is missing in {directory}",
                hint="put every volume of the set into one directory; no virtual machine was started",
            )
        if 1 not in bset.volumes:
            die(f"{name}: volume 1 (the rescue disc) is missing in {directory}")
        if bset.encryption is not None:
            die(
                f"{name} is encrypted: it cannot be drilled yet (the drill's restore has nobody to ask "
                "for the key)",
                hint="check it with 'mkrec verify --deep --identity FILE'; no virtual machine was started",
            )
        rescue = bset.volumes[1].volume
        try:
            with rescue.open(f"etc/recovery/{LAYOUT_FILE}") as fh:
                layout = parse_layout(fh.read().decode(), f"{rescue.name}:etc/recovery/{LAYOUT_FILE}")
        except MkrecError:
            raise
        except Exception as exc:  # pycdlib's "not found" and a damaged disc alike: one line
            die(f"{rescue.name}: no readable etc/recovery/{LAYOUT_FILE} ({exc})")
        volumes = tuple(Path(bset.volumes[n].volume.name) for n in sorted(bset.volumes))
        restore_bytes = sum(s.size or 0 for s in bset.streams.values())
    finally:
        bset.close()
    return DrillSet(directory, name, volumes, layout, restore_bytes)


def copy_boot_files(dset: DrillSet, dest: Path) -> tuple[Path, Path]:
    """The rescue disc's kernel and its two initrds as one file (the kernel unpacks concatenated
    cpio archives the way the boot loader hands them over): (kernel, initrd) in dest."""
    bset = open_set(dset.directory)
    try:
        rescue = bset.volumes[1].volume
        kernel, initrd = dest / "vmlinuz", dest / "initrd.img"
        with rescue.open(KERNEL.lstrip("/")) as src, open(kernel, "wb") as out:
            shutil.copyfileobj(src, out)
        with open(initrd, "wb") as out:
            for part in (INITRD, RDBASE):
                with rescue.open(part.lstrip("/")) as src:
                    shutil.copyfileobj(src, out)
                out.write(b"\0" * (-out.tell() % 4))  # each archive starts 4-byte aligned
    except MkrecError:
        raise
    except Exception as exc:  # pycdlib's "not found" and a damaged disc alike: one line
        die(f"{dset.volumes[0]}: cannot read the rescue system's boot files ({exc})")
    finally:
        bset.close()
    return kernel, initrd
