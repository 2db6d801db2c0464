"""What the restore engine needs to know about the saved system: the restore-side view of a captured
layout. The layout package owns capture and the layout file; `layout_adapter` turns its model into
this one, so the engine does not depend on every field of the capture format."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mkrec.restore.sfdisk import Table, partition_node


class BootKind(StrEnum):
    GRUB_BIOS = "grub-bios"
    GRUB_EFI = "grub-efi"
    EXTLINUX = "extlinux"
    NONE = "none"


@dataclass(frozen=True)
class SavedDisk:
    """A disk as captured. `name` is what it was called then: a hint, never trusted for mapping."""

    name: str
    size: int  # bytes
    table: Table
    model: str = ""
    serial: str = ""
    wwn: str = ""

    @property
    def sector_size(self) -> int:
        return self.table.sector_size

    def node(self, number: int) -> str:
        return partition_node(self.name, number)


@dataclass(frozen=True)
class SavedFs:
    """A filesystem (or swap) as captured, and where its data is in the backup set."""

    device: str  # the saved node: /dev/sda3, /dev/mapper/vg-root, /dev/md0
    fstype: str  # ext2/3/4, xfs, vfat, btrfs, swap
    uuid: str = ""
    label: str = ""
    mountpoint: str = ""  # "" for unmounted filesystems and swap
    size: int = 0  # bytes of the filesystem
    used: int = 0  # bytes in use
    options: str = "defaults"  # mount options from fstab
    stream: str = ""  # name of its tar stream in the set ("" when none)
    raw: str = ""  # name of its raw image stream in the set ("" when not imaged)

    @property
    def is_swap(self) -> bool:
        return self.fstype == "swap"


@dataclass(frozen=True)
class SavedBoot:
    kind: BootKind = BootKind.NONE
    disk: str = ""  # the saved disk the BIOS loader or the NVRAM entry points at
    esp: str = ""  # the saved ESP node (GRUB EFI)
    efi_loader: str = "\\EFI\\BOOT\\BOOTX64.EFI"  # the NVRAM entry's loader path on the ESP


@dataclass(frozen=True)
class SavedSystem:
    disks: tuple[SavedDisk, ...]
    filesystems: tuple[SavedFs, ...]
    boots: tuple[SavedBoot, ...] = ()  # GRUB BIOS and GRUB EFI can both be there (hybrid disks)
    set_id: str = ""  # the backup set this layout belongs to

    def disk(self, name: str) -> SavedDisk:
        for disk in self.disks:
            if disk.name == name or disk.name.rsplit("/", 1)[-1] == name.rsplit("/", 1)[-1]:
                return disk
        raise KeyError(name)

    def fs_on(self, device: str) -> SavedFs | None:
        return next((fs for fs in self.filesystems if fs.device == device), None)

    def mounted_in_order(self) -> list[SavedFs]:
        """Mounted filesystems, parents before children (/ before /boot before /boot/efi)."""
        mounted = [fs for fs in self.filesystems if fs.mountpoint.startswith("/")]
        return sorted(mounted, key=lambda fs: (fs.mountpoint.rstrip("/").count("/"), fs.mountpoint))

    def root(self) -> SavedFs | None:
        return next((fs for fs in self.filesystems if fs.mountpoint == "/"), None)
