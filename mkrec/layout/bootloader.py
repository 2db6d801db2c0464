"""Which boot loader the system uses, and from which disk: GRUB in the MBR boot code (BIOS),
GRUB on an EFI system partition, extlinux/syslinux on a mounted filesystem (and the directory
holding its ldlinux.sys), or none."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mkrec.layout.model import BootKind, BootLoader, Disk, Filesystem
from mkrec.runner import run

MBR_CODE = 440  # boot code ends where the disk signature and partition entries start
# Relative to a filesystem's mount point: on the root filesystem, or on a /boot of its own.
EXTLINUX_FILES = (
    "boot/extlinux/ldlinux.sys",
    "boot/syslinux/ldlinux.sys",
    "extlinux/ldlinux.sys",
    "syslinux/ldlinux.sys",
)


def read_sectors(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def grub_in_mbr(mbr: bytes) -> bool:
    """GRUB's boot.img carries the string "GRUB " in its error messages, inside the boot code."""
    return b"GRUB" in mbr[:MBR_CODE]


def syslinux_in_mbr(mbr: bytes) -> bool:
    """Syslinux's mbr.bin, altmbr.bin and gptmbr.bin carry these messages inside the boot code
    (other MBRs say "Missing operating system" too, so that one is not enough)."""
    code = mbr[:MBR_CODE]
    return b"Operating system load error" in code or b"Multiple active partitions" in code


def esp_loaders(fs: Filesystem, path: str) -> list[str]:
    """The .efi files under EFI/ of an ESP: from its mount point, or read with mtools when it is
    not mounted (the kernel may lack vfat; mtools reads the device directly)."""
    if fs.mountpoint:
        base = Path(fs.mountpoint)
        return sorted(str(p.relative_to(base)) for p in base.glob("EFI/*/*") if p.suffix.lower() == ".efi")
    proc = run(["mdir", "-/", "-b", "-i", path, "::/EFI"], check=False, env={"MTOOLS_SKIP_CHECK": "1"})
    found = [line.strip().removeprefix("::/") for line in proc.stdout.splitlines()]
    return sorted(f for f in found if f.lower().endswith(".efi"))


def _is_grub_efi(files: list[str], read: Callable[[str], bytes]) -> str | None:
    for f in files:
        if "grub" in Path(f).name.lower():
            return f
    for f in files:  # the removable-media fallback, EFI/BOOT/BOOTX64.EFI, may be GRUB itself
        if Path(f).name.upper() == "BOOTX64.EFI" and b"GRUB" in read(f):
            return f
    return None


def _first(disk_of: dict[str, list[str]], device: str) -> str | None:
    disks = disk_of.get(device) or []
    return disks[0] if disks else None


def detect(
    disks: list[Disk],
    filesystems: list[Filesystem],
    paths: dict[str, str],
    disk_of: dict[str, list[str]],
) -> tuple[BootLoader, ...]:
    found: list[BootLoader] = []
    mbrs = {d.name: read_sectors(paths[d.name], 0, 512) for d in disks if d.readable}
    for disk in disks:
        if not disk.readable:
            continue
        if grub_in_mbr(mbrs[disk.name]):
            bios = [p.name for p in disk.partitions if p.is_bios_boot()]
            where = f"; core image in BIOS boot partition {bios[0]}" if bios else ""
            found.append(
                BootLoader(BootKind.GRUB_BIOS, disk=disk.name, detail=f"GRUB boot code in MBR{where}")
            )
    esps = {p.name for d in disks for p in d.partitions if p.is_esp()}
    for fs in filesystems:
        if fs.type != "vfat" or fs.device not in esps:
            continue
        path = paths[fs.device]

        def read(name: str, fs: Filesystem = fs, path: str = path) -> bytes:
            if fs.mountpoint:
                return (Path(fs.mountpoint) / name).read_bytes()
            proc = run(["mtype", "-i", path, f"::/{name}"], check=False, env={"MTOOLS_SKIP_CHECK": "1"})
            return proc.stdout.encode(errors="replace")

        loader = _is_grub_efi(esp_loaders(fs, path), read)
        if loader:
            found.append(
                BootLoader(BootKind.GRUB_EFI, _first(disk_of, fs.device), esp=fs.device, detail=loader)
            )
    for fs in filesystems:
        on = _first(disk_of, fs.device)
        if fs.mountpoint is not None and (boot := extlinux_on(fs.mountpoint, on, mbrs.get(on or "", b""))):
            found.append(boot)
    return tuple(found) or (BootLoader(BootKind.NONE),)


def extlinux_on(mountpoint: str, disk: str | None, mbr: bytes) -> BootLoader | None:
    """extlinux installed on the filesystem mounted at mountpoint: the directory holding its
    ldlinux.sys. A file seen through another filesystem mounted below (/boot under /) is that
    filesystem's, not this one's."""
    base = Path(mountpoint)
    for rel in EXTLINUX_FILES:
        path = base / rel
        if path.is_file() and path.stat().st_dev == base.stat().st_dev:
            code = "; syslinux boot code in the MBR" if syslinux_in_mbr(mbr) else ""
            return BootLoader(BootKind.EXTLINUX, disk, detail=f"{path}{code}", directory=str(path.parent))
    return None
