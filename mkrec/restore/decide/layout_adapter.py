"""The layout package's model (mkrec.layout.model.Layout, read from etc/recovery/layout.toml) turned
into the restore engine's SavedSystem, with each filesystem's stream found in the backup set."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path, PurePosixPath

from mkrec.backup.manifest import StreamRecord
from mkrec.errors import MkrecError
from mkrec.layout import vgcfg
from mkrec.layout.model import BootKind, Disk, Layout
from mkrec.layout.textfmt import LAYOUT_FILE
from mkrec.restore.decide.model import SavedDisk, SavedFs, SavedSystem
from mkrec.restore.decide.sfdisk import Partition, Table
from mkrec.restore.decide.source import RestoreSet, stream_for

RESCUE_RECOVERY = Path("/etc/recovery")


def _dev(name: str | None) -> str:
    return f"/dev/{name}" if name else ""


def _table(disk: Disk) -> Table:
    if disk.label not in ("gpt", "dos"):
        raise MkrecError(
            f"saved disk {disk.name} has no partition table the restore can write ({disk.label})"
        )
    return Table(
        label=disk.label,
        label_id=disk.id or "",
        sector_size=disk.logical_sector,
        first_lba=disk.first_lba if disk.label == "gpt" else None,
        partitions=tuple(
            Partition(
                number=p.number,
                start=p.start,
                size=p.size,
                type=p.type,
                uuid=p.uuid or "",
                name=p.gpt_name or "",
                attrs=p.attrs or "",
                bootable=p.bootable,
            )
            for p in disk.partitions
        ),
    )


def relative_mountpoint(mountpoint: str | None, source_root: str) -> str:
    """Mount points as the restored system sees them: a capture of a system mounted under
    /mnt/src records /mnt/src/data, which is /data of that system."""
    if not mountpoint:
        return ""
    base = PurePosixPath(source_root)
    path = PurePosixPath(mountpoint)
    if path == base:
        return "/"
    if base in path.parents:
        return "/" + str(path.relative_to(base))
    return mountpoint


def saved_system(
    layout: Layout,
    streams: dict[str, StreamRecord],
    set_id: str = "",
    mbrs: dict[str, bytes] | None = None,
) -> SavedSystem:
    """mbrs: the saved first sector of each disk by its layout name (mbr-<disk>.bin)."""
    disks = tuple(
        SavedDisk(
            name=_dev(d.name),
            size=d.size,
            table=_table(d),
            model=d.model or "",
            serial=d.serial or "",
            wwn=d.wwn or "",
            mbr=(mbrs or {}).get(d.name, b""),
        )
        for d in layout.disks
    )
    fstab = {e.file: e for e in layout.fstab}
    filesystems: list[SavedFs] = []
    for fs in layout.filesystems:
        mountpoint = relative_mountpoint(fs.mountpoint, layout.source_root)
        tar, img = stream_for(streams, fs.device, mountpoint)
        entry = fstab.get(mountpoint)
        filesystems.append(
            SavedFs(
                device=_dev(fs.device),
                fstype=fs.type,
                uuid=fs.uuid or "",
                label=fs.label or "",
                mountpoint=mountpoint,
                size=fs.size or 0,
                used=fs.used or 0,
                options=entry.mntops if entry else (fs.options or "defaults"),
                stream=tar if not img else "",
                raw=img,
            )
        )
    for sw in layout.swaps:
        filesystems.append(
            SavedFs(
                device=_dev(sw.device),
                fstype="swap",
                uuid=sw.uuid or "",
                label=sw.label or "",
                size=sw.size or 0,
            )
        )
    boots = tuple(
        replace(b, directory=relative_mountpoint(b.directory, layout.source_root) or None)
        for b in layout.boot
        if b.kind is not BootKind.NONE
    )
    return SavedSystem(
        disks,
        tuple(filesystems),
        boots,
        set_id or layout.captured,
        raids=layout.raids,
        vgs=layout.vgs,
        luks=layout.luks,
    )


def read_saved_layout(reader: RestoreSet | None, explicit: Path | None) -> Layout:
    """The layout: --layout (a file or its etc/recovery directory), else the copy on a volume of the
    set, else the rescue system's own /etc/recovery."""
    from mkrec.layout.textfmt import parse_layout, read_layout

    if explicit is not None:
        path = explicit / LAYOUT_FILE if explicit.is_dir() else explicit
        if not path.is_file():
            raise MkrecError(
                f"--layout {explicit}: no {LAYOUT_FILE} there", hint="give the etc/recovery directory"
            )
        return read_layout(path)
    text = reader.layout_text() if reader is not None else None
    if text is not None:
        return parse_layout(text, f"{reader.set_name if reader else 'set'}:etc/recovery/{LAYOUT_FILE}")
    if (RESCUE_RECOVERY / LAYOUT_FILE).is_file():
        return read_layout(RESCUE_RECOVERY / LAYOUT_FILE)
    raise MkrecError(
        f"no saved layout found (not on the set's volumes, not in {RESCUE_RECOVERY})",
        hint="give it with --layout DIR (the etc/recovery directory of the backup)",
    )


def read_saved_file(reader: RestoreSet | None, explicit: Path | None, name: str) -> bytes | None:
    """Another file of the capture (mbr-sda.bin ...), from where the layout is read: --layout's
    directory, else a volume of the set, else the rescue system's /etc/recovery."""
    if explicit is not None:
        path = (explicit if explicit.is_dir() else explicit.parent) / name
        return path.read_bytes() if path.is_file() else None
    if reader is not None and reader.layout_text() is not None:
        return reader.recovery_file(name)
    path = RESCUE_RECOVERY / name
    return path.read_bytes() if path.is_file() else None


def load_vg_metadata(reader: RestoreSet | None, explicit: Path | None, system: SavedSystem) -> dict[str, str]:
    """VG name -> its saved vgcfgbackup text (vgcfg-<vg>.txt), for the VGs that have one."""
    texts = {}
    for vg in system.vgs:
        data = read_saved_file(reader, explicit, vgcfg.file_name(vg.name))
        if data is not None:
            texts[vg.name] = data.decode(errors="replace")
    return texts


def load_saved(reader: RestoreSet, explicit: Path | None) -> SavedSystem:
    layout = read_saved_layout(reader, explicit)
    mbrs = {d.name: read_saved_file(reader, explicit, f"mbr-{d.name}.bin") or b"" for d in layout.disks}
    return saved_system(layout, reader.streams, reader.set_id, mbrs)
