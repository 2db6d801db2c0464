"""`mkrec layout capture`: probe the disks and write the recovery folder.

DIR/layout.toml       the layout, hand-editable (textfmt)
DIR/README.txt        how to read and edit it
DIR/sfdisk-<disk>.dump  exact input for `sfdisk <disk> < file`
DIR/mbr-<disk>.bin    the first sector (boot code + table), as the Backup & Recovery HOWTO saves it
DIR/gap-<disk>.bin    MBR disks: the sectors between the MBR and the first partition (GRUB's core)
DIR/biosboot-<part>.bin  GPT disks: the BIOS boot partition (GRUB's core)
DIR/fatboot-<dev>.bin the boot sector of each FAT filesystem
DIR/vgcfg-<vg>.txt    each LVM volume group's metadata as vgcfgbackup writes it (UUIDs, extents)
DIR/fstab, hostname, date  small copies the rescue system's welcome screen shows
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from mkrec.layout import bootloader, parse, vgcfg
from mkrec.layout.model import Disk, Layout, PartitionKind
from mkrec.layout.probe import Probed, can_open, probe
from mkrec.layout.readme import README
from mkrec.layout.textfmt import LAYOUT_FILE, write_layout

log = logging.getLogger("mkrec.layout")

# A gap larger than this is not boot-loader space but unused disk: GRUB's core fits in 1 MiB.
MAX_GAP = 8 * 1024**2
OWN_PATTERNS = ("sfdisk-*.dump", "mbr-*.bin", "gap-*.bin", "biosboot-*.bin", "fatboot-*.bin", "vgcfg-*.txt")


def file_name(device: str) -> str:
    """A device name as part of a file name: "vg0/root" -> "vg0-root"."""
    return device.replace("/", "-")


def build_layout(
    disks: list[str], root: Path, hostname: str, captured: datetime
) -> tuple[Layout, Probed, str | None]:
    """Probe and assemble the Layout; also returns the probe (for the files) and the fstab text."""
    found = probe(disks)
    fstab_path = root / "etc" / "fstab"
    fstab_text = fstab_path.read_text(errors="replace") if fstab_path.is_file() else None
    boot = bootloader.detect(found.disks, found.filesystems, found.paths, found.disk_of)
    layout = Layout(
        hostname=hostname,
        captured=captured.isoformat(timespec="seconds"),
        source_root=str(root),
        disks=tuple(found.disks),
        raids=tuple(found.raids),
        vgs=tuple(found.vgs),
        luks=tuple(found.luks),
        filesystems=tuple(found.filesystems),
        swaps=tuple(found.swaps),
        fstab=parse.parse_fstab(fstab_text) if fstab_text else (),
        boot=boot,
    )
    return layout, found, fstab_text


def _save_boot_areas(disk: Disk, path: str, out: Path) -> None:
    ls = disk.logical_sector
    (out / f"mbr-{disk.name}.bin").write_bytes(bootloader.read_sectors(path, 0, 512))
    starts = [p.start for p in disk.partitions if p.kind is not PartitionKind.LOGICAL]
    if disk.label == "dos" and starts and min(starts) > 1 and (min(starts) - 1) * ls <= MAX_GAP:
        (out / f"gap-{disk.name}.bin").write_bytes(bootloader.read_sectors(path, ls, (min(starts) - 1) * ls))


def write_capture(layout: Layout, found: Probed, fstab_text: str | None, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for pattern in OWN_PATTERNS:  # a disk captured last time but not now must not leave a stale dump
        for old in out.glob(pattern):
            old.unlink()
    (out / LAYOUT_FILE).write_text(write_layout(layout))
    (out / "README.txt").write_text(README)
    (out / "hostname").write_text(layout.hostname + "\n")
    (out / "date").write_text(layout.captured + "\n")
    if fstab_text is not None:
        (out / "fstab").write_text(fstab_text)
    for name, dump in found.dumps.items():
        (out / f"sfdisk-{name}.dump").write_text(dump)
    for vg, text in found.vg_metadata.items():
        (out / vgcfg.file_name(vg)).write_text(text)
    for disk in layout.disks:
        if not disk.readable:
            log.warning("warning: disk %s: %s", disk.name, disk.note)
            continue
        _save_boot_areas(disk, found.paths[disk.name], out)
        for part in disk.partitions:
            if part.is_bios_boot() and part.size * disk.logical_sector <= MAX_GAP:
                data = bootloader.read_sectors(found.paths[part.name], 0, part.size * disk.logical_sector)
                (out / f"biosboot-{part.name}.bin").write_bytes(data)
    for fs in layout.filesystems:
        path = found.paths[fs.device]
        if fs.type == "vfat" and can_open(path) is None:
            (out / f"fatboot-{file_name(fs.device)}.bin").write_bytes(bootloader.read_sectors(path, 0, 512))


def capture(disks: list[str], out: Path, root: Path, hostname: str, captured: datetime) -> Layout:
    layout, found, fstab_text = build_layout(disks, root, hostname, captured)
    write_capture(layout, found, fstab_text, out)
    return layout
