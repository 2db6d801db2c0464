"""The captured layout as typed, frozen values: what the restore engine rebuilds from.

Every block device is referred to by one name, the kernel's name at capture time without /dev/:
a disk "sda", a partition "sda1" (or "nvme0n1p1", "loop0p1"), an MD array "md0", a logical volume
"vg0/root", an opened LUKS container by its mapping name "cryptroot". Filesystems, swap areas, LUKS
containers, RAID members and LVM PVs point at devices by that name, so renaming a device in the text
is one search-and-replace. Names are not trusted to survive a reboot onto new hardware: each Disk
also carries its size, model, serial, WWN and partition-table id for the restore to map it.

Units: disk, filesystem and LV sizes are bytes; partition start and size are sectors of the disk's
logical sector size (exactly what sfdisk reads and writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath


class BootKind(StrEnum):
    GRUB_BIOS = "grub-bios"
    GRUB_EFI = "grub-efi"
    EXTLINUX = "extlinux"
    NONE = "none"


class PartitionKind(StrEnum):
    """GPT partitions are all "primary"; an MBR table also has one extended and its logicals."""

    PRIMARY = "primary"
    EXTENDED = "extended"
    LOGICAL = "logical"


# Filesystem types the restore knows how to make (mkfs.<type>); anything else is an edit error.
FS_TYPES = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "ntfs", "f2fs", "jfs")

GPT_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MBR_ESP = "ef"
MBR_EXTENDED = ("5", "f", "85")


@dataclass(frozen=True)
class Partition:
    name: str  # "sda1"
    number: int
    start: int  # sectors
    size: int  # sectors
    type: str  # GPT type GUID (upper case) or MBR type in hex without 0x ("83", "ef", "5")
    kind: PartitionKind = PartitionKind.PRIMARY
    uuid: str | None = None  # GPT partition GUID
    gpt_name: str | None = None
    attrs: str | None = None  # GPT attributes as sfdisk writes them ("LegacyBIOSBootable")
    bootable: bool = False  # MBR active flag

    @property
    def end(self) -> int:
        """The last sector, inclusive (as fdisk shows it)."""
        return self.start + self.size - 1

    def is_bios_boot(self) -> bool:
        return self.type.upper() == GPT_BIOS_BOOT

    def is_esp(self) -> bool:
        return self.type.upper() == GPT_ESP or self.type.lower() == MBR_ESP


@dataclass(frozen=True)
class Disk:
    name: str  # "sda"
    size: int  # bytes
    logical_sector: int = 512
    physical_sector: int = 512
    label: str | None = None  # "gpt" | "dos"; None: no partition table (or it could not be read)
    id: str | None = None  # GPT disk GUID, or the MBR disk identifier as "0x1234abcd"
    first_lba: int | None = None  # GPT usable range, from sfdisk
    last_lba: int | None = None
    model: str | None = None
    serial: str | None = None
    wwn: str | None = None
    readable: bool = True
    note: str | None = None  # why something could not be read, for the person restoring
    partitions: tuple[Partition, ...] = ()

    @property
    def sectors(self) -> int:
        return self.size // self.logical_sector

    def last_usable(self) -> int:
        """The last sector a partition may use."""
        if self.last_lba is not None:
            return self.last_lba
        return self.sectors - 1


@dataclass(frozen=True)
class RaidArray:
    name: str  # "md0"
    level: str  # "raid1"
    members: tuple[str, ...]  # device names
    metadata: str | None = None  # "1.2"
    uuid: str | None = None
    md_name: str | None = None  # the array's own name, "host:0"
    raid_devices: int | None = None
    chunk_size: int | None = None  # bytes, striped levels only
    size: int | None = None  # bytes


@dataclass(frozen=True)
class PhysicalVolume:
    device: str
    uuid: str | None = None
    size: int | None = None  # bytes


@dataclass(frozen=True)
class LogicalVolume:
    name: str  # "root" (its device name is "<vg>/<name>")
    size: int  # bytes
    segtype: str = "linear"
    uuid: str | None = None
    stripes: int | None = None


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    extent_size: int  # bytes
    uuid: str | None = None
    pvs: tuple[PhysicalVolume, ...] = ()
    lvs: tuple[LogicalVolume, ...] = ()


@dataclass(frozen=True)
class LuksContainer:
    device: str  # the encrypted device ("sda3", "vg0/secret")
    name: str  # the opened mapping, "cryptroot": what the filesystem inside refers to
    version: int
    uuid: str | None = None
    cipher: str | None = None  # "aes-xts-plain64"
    key_size: int | None = None  # bits
    label: str | None = None  # LUKS2 label
    opened: bool = True  # False: found but not open, so nothing inside is known


@dataclass(frozen=True)
class Filesystem:
    device: str
    type: str
    uuid: str | None = None
    label: str | None = None
    block_size: int | None = None
    features: tuple[str, ...] = ()
    size: int | None = None  # bytes
    used: int | None = None  # bytes
    mountpoint: str | None = None
    options: str | None = None  # mount options as mounted


@dataclass(frozen=True)
class Swap:
    device: str
    uuid: str | None = None
    label: str | None = None
    size: int | None = None  # bytes


@dataclass(frozen=True)
class FstabEntry:
    spec: str  # "UUID=...", "/dev/sda1", "LABEL=root"
    file: str
    vfstype: str
    mntops: str = "defaults"
    freq: int = 0
    passno: int = 0


@dataclass(frozen=True)
class BootLoader:
    kind: BootKind
    disk: str | None = None  # the disk it boots from
    esp: str | None = None  # grub-efi: the ESP partition
    detail: str | None = None  # what was seen, e.g. "GRUB in MBR boot code", "EFI/debian/grubx64.efi"
    # extlinux: the directory that holds ldlinux.sys, a path as captured (like a mount point)
    directory: str | None = None


@dataclass(frozen=True)
class Layout:
    hostname: str
    captured: str  # ISO date and time
    source_root: str = "/"
    disks: tuple[Disk, ...] = ()
    raids: tuple[RaidArray, ...] = ()
    vgs: tuple[VolumeGroup, ...] = ()
    luks: tuple[LuksContainer, ...] = ()
    filesystems: tuple[Filesystem, ...] = ()
    swaps: tuple[Swap, ...] = ()
    fstab: tuple[FstabEntry, ...] = ()
    boot: tuple[BootLoader, ...] = field(default=())

    def device_names(self) -> list[str]:
        """Every block device name the layout defines, in order."""
        names: list[str] = []
        for disk in self.disks:
            names.append(disk.name)
            names += [p.name for p in disk.partitions]
        names += [r.name for r in self.raids]
        names += [f"{vg.name}/{lv.name}" for vg in self.vgs for lv in vg.lvs]
        names += [c.name for c in self.luks]
        return names

    def disk(self, name: str) -> Disk | None:
        return next((d for d in self.disks if d.name == name), None)

    def partition(self, name: str) -> Partition | None:
        return next((p for d in self.disks for p in d.partitions if p.name == name), None)

    def filesystem_on(self, device: str) -> Filesystem | None:
        return next((f for f in self.filesystems if f.device == device), None)

    def mounted_under(self, root: str = "/") -> list[Filesystem]:
        """Mounted filesystems at or below root, parents first: what a backup of root reads."""
        base = PurePosixPath(root)
        found = [
            fs
            for fs in self.filesystems
            if fs.mountpoint is not None
            and (PurePosixPath(fs.mountpoint) == base or base in PurePosixPath(fs.mountpoint).parents)
        ]
        return sorted(found, key=lambda fs: (len(PurePosixPath(fs.mountpoint or "/").parts), fs.mountpoint))
