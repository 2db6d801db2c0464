"""Which boot loader the system uses, and from which disk: GRUB in the MBR boot code (BIOS),
GRUB on an EFI system partition, extlinux/syslinux on a mounted filesystem, or none."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mkrec.layout.model import BootKind, BootLoader, Disk, Filesystem
from mkrec.runner import run

MBR_CODE = 440  # boot code ends where the disk signature and partition entries start
EXTLINUX_FILES = ("boot/extlinux/ldlinux.sys", "boot/syslinux/ldlinux.sys", "extlinux/ldlinux.sys")


def read_sectors(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def grub_in_mbr(mbr: bytes) -> bool:
    """GRUB's boot.img carries the string "GRUB " in its error messages, inside the boot code."""
    return b"GRUB" in mbr[:MBR_CODE]


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
    for disk in disks:
        if not disk.readable:
            continue
        if grub_in_mbr(read_sectors(paths[disk.name], 0, 512)):
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
        if fs.mountpoint is None:
            continue
        for rel in EXTLINUX_FILES:
            if (Path(fs.mountpoint) / rel).is_file():
                where = f"{fs.mountpoint}/{rel}"
                found.append(BootLoader(BootKind.EXTLINUX, _first(disk_of, fs.device), detail=where))
                break
    return tuple(found) or (BootLoader(BootKind.NONE),)
