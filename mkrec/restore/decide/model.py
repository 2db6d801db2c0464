"""What the restore engine needs to know about the saved system. The layout package's model
(mkrec.layout.model) is the one model of a captured system: boot loaders, RAID arrays, volume groups
and LUKS containers are used as they are. Only two restore-side types remain, each adding what the
layout does not have:

- SavedDisk: the disk as a partition Table the restore writes, edits (clone-disk's editable sfdisk
  script) and compares after writing (decide.sfdisk: sector-exact, the sfdisk dump format), and
  its first sector as captured (the MBR boot code a boot loader may need back);
- SavedFs: a filesystem or swap joined with where its data is in the backup set (tar or image stream
  from the manifest), its mount point relative to the restored root, and its fstab options."""

from __future__ import annotations

from dataclasses import dataclass

from mkrec.layout.model import BootLoader, LuksContainer, RaidArray, VolumeGroup
from mkrec.restore.decide.sfdisk import Table, partition_node


@dataclass(frozen=True)
class SavedDisk:
    """A disk as captured. `name` is what it was called then: a hint, never trusted for mapping."""

    name: str
    size: int  # bytes
    table: Table
    model: str = ""
    serial: str = ""
    wwn: str = ""
    mbr: bytes = b""  # the first sector as captured (etc/recovery/mbr-<disk>.bin); b"" when not saved

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
class SavedSystem:
    disks: tuple[SavedDisk, ...]
    filesystems: tuple[SavedFs, ...]
    boots: tuple[BootLoader, ...] = ()  # GRUB BIOS and GRUB EFI can both be there (hybrid disks)
    set_id: str = ""  # the backup set this layout belongs to
    raids: tuple[RaidArray, ...] = ()  # recreated before anything on top of them (layout order)
    vgs: tuple[VolumeGroup, ...] = ()
    luks: tuple[LuksContainer, ...] = ()

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
