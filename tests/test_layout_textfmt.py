"""layout.toml: round trip, hand edits read back, and the exact one-line errors for bad edits."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from mkrec.errors import MkrecError
from mkrec.layout.model import (
    BootKind,
    BootLoader,
    Disk,
    Filesystem,
    FstabEntry,
    Layout,
    LogicalVolume,
    LuksContainer,
    Partition,
    PartitionKind,
    PhysicalVolume,
    RaidArray,
    Swap,
    VolumeGroup,
)
from mkrec.layout.textfmt import parse_layout, write_layout

GPT_DISK = Disk(
    name="sda",
    size=2 * 1024**3,
    logical_sector=512,
    physical_sector=4096,
    label="gpt",
    id="11111111-2222-3333-4444-555555555555",
    first_lba=2048,
    last_lba=4194270,
    model='Disk "Q" 1\\2',
    serial="S3RIAL",
    wwn="0x5000c500a1b2c3d4",
    partitions=(
        Partition("sda1", 1, 2048, 2048, "21686148-6449-6E6F-744E-656564454649", gpt_name="bios"),
        Partition(
            "sda2", 2, 4096, 131072, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", attrs="LegacyBIOSBootable"
        ),
        Partition("sda3", 3, 135168, 2097152, "A19D880F-05FC-4D3B-A006-743F0F84911E", uuid="AB-CD"),
        Partition("sda4", 4, 2232320, 1048576, "A19D880F-05FC-4D3B-A006-743F0F84911E"),
    ),
)
MBR_DISK = Disk(
    name="sdb",
    size=1024**3,
    label="dos",
    id="0x1234abcd",
    partitions=(
        Partition("sdb1", 1, 2048, 204800, "83", bootable=True),
        Partition("sdb2", 2, 206848, 1000000, "5", kind=PartitionKind.EXTENDED),
        Partition("sdb5", 5, 208896, 65536, "82", kind=PartitionKind.LOGICAL),
        Partition("sdb6", 6, 276480, 100000, "8e", kind=PartitionKind.LOGICAL),
    ),
)
VDA = Disk(name="vda", size=256 * 1024**3, readable=False, note="cannot be opened (EPERM)")

FULL = Layout(
    hostname="host1",
    captured="2024-05-01T10:00:00",
    disks=(GPT_DISK, MBR_DISK, VDA),
    raids=(RaidArray("md0", "raid1", ("sda3", "sda4"), "1.2", "a:b:c:d", "host1:0", 2, None, 1073741824),),
    vgs=(
        VolumeGroup(
            "vg0",
            4194304,
            "vg-uuid",
            pvs=(PhysicalVolume("md0", "pv-uuid", 1073741824), PhysicalVolume("sdb6")),
            lvs=(LogicalVolume("root", 536870912, "linear", "lv1", 1), LogicalVolume("secret", 104857600)),
        ),
    ),
    luks=(LuksContainer("vg0/secret", "cryptsecret", 2, "luks-uuid", "aes-xts-plain64", 512, "sec"),),
    filesystems=(
        Filesystem(
            "vg0/root", "ext4", "u1", "root", 4096, ("has_journal", "extent"), 536870912, 1000, "/", "rw"
        ),
        Filesystem("sda2", "vfat", "AB12-CD34", "ESP", None, ("FAT32",), 67108864),
        Filesystem("cryptsecret", "xfs", "u3", None, 4096, ("crc",), 100000000, 5, "/srv", "rw,noatime"),
        Filesystem("vda", "ext4", mountpoint="/mnt", size=10, used=5),
        Filesystem("sdb1", "ext2", label="bo\tot\x7f"),
    ),
    swaps=(Swap("sdb5", "swap-uuid", "sw", 33554432),),
    fstab=(
        FstabEntry("UUID=u1", "/", "ext4", "errors=remount-ro", 0, 1),
        FstabEntry("/dev/sdb5", "none", "swap", "sw"),
    ),
    boot=(
        BootLoader(BootKind.GRUB_BIOS, "sda", detail="GRUB boot code in MBR"),
        BootLoader(BootKind.GRUB_EFI, "sda", "sda2", "EFI/debian/grubx64.efi"),
        BootLoader(BootKind.EXTLINUX, "sdb", detail="/boot/syslinux/ldlinux.sys", directory="/boot/syslinux"),
    ),
)


def test_round_trip_of_every_kind_of_item() -> None:
    text = write_layout(FULL)
    assert parse_layout(text) == FULL
    tomllib.loads(text)  # plain TOML for any other reader too
    assert "# BIOS boot" in text and "# sectors; ends at sector 4095" in text


def test_round_trip_of_an_empty_layout() -> None:
    empty = Layout(hostname="h", captured="2024-01-01T00:00:00", boot=(BootLoader(BootKind.NONE),))
    assert parse_layout(write_layout(empty)) == empty


def test_hand_edit_shrink_and_rename_are_read_back() -> None:
    text = write_layout(FULL).replace('"sdb', '"vdb')  # sdb is now vdb: every reference follows
    text = text.replace("size = 100000  ", "size = 50000   ")  # shrink the last logical partition
    layout = parse_layout(text)
    disk = layout.disk("vdb")
    assert disk is not None and disk.partitions[3] == dataclasses.replace(
        MBR_DISK.partitions[3], name="vdb6", size=50000
    )
    assert layout.vgs[0].pvs[1].device == "vdb6"
    assert layout.swaps[0].device == "vdb5"


def edited(old: str, new: str, count: int = 1) -> str:
    text = write_layout(FULL)
    assert old in text, old
    return text.replace(old, new, count)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "start = 276480",
            "start = 270000",
            'layout.toml: partition "sdb6": overlaps partition "sdb5" (sectors 208896-274431)',
        ),
        (
            "start = 4096\n",
            "start = 3000\n",
            'layout.toml: partition "sda2": overlaps partition "sda1" (sectors 2048-4095)',
        ),
        (
            "size = 1048576 ",
            "size = 1962000 ",
            'layout.toml: partition "sda4": ends at sector 4194319, beyond the last usable sector 4194270 '
            'of disk "sda"',
        ),
        (
            "start = 276480",
            "start = 1300000",
            'layout.toml: partition "sdb6": lies outside the extended partition "sdb2" '
            "(sectors 206848-1206847)",
        ),
        (
            'type = "xfs"',
            'type = "xfs2"',
            'layout.toml: filesystem on "cryptsecret": unknown filesystem type "xfs2"',
        ),
        (
            'device = "sdb5"',
            'device = "sdb9"',
            'layout.toml: swap on "sdb9": unknown device "sdb9"',
        ),
        (
            'members = ["sda3", "sda4"]',
            'members = ["sda3", "sdz4"]',
            'layout.toml: raid "md0": unknown device "sdz4"',
        ),
        (
            'device = "sdb5"',
            'device = "sdb1"',
            'layout.toml: swap on "sdb1": device "sdb1" is already used by filesystem on "sdb1"',
        ),
        (
            "size = 1048576 ",
            'size = "big" ',
            'layout.toml: partition "sda4": size must be a whole number, got "big"',
        ),
        (
            "bootable = true",
            "bootable = 1",
            'layout.toml: partition "sdb1": bootable must be true or false, got 1',
        ),
        (
            'kind = "logical"',
            'kind = "secondary"',
            'layout.toml: partition "sdb5": kind must be one of primary, extended, logical, got "secondary"',
        ),
        ("number = 6", "sise = 6", 'layout.toml: partition "sdb6": unknown key "sise"'),
        ('name = "sdb5"', 'name = "sdb6"', 'layout.toml: device "sdb6": the name is used twice'),
        ("version = 1", "version = 7", "layout.toml: format version 7 is not known"),
        ("version = 1", "", 'layout.toml: missing key "version"'),
        ('hostname = "host1"', "", 'layout.toml: missing key "hostname"'),
        (
            'kind = "grub-efi"',
            'kind = "lilo"',
            'layout.toml: boot "lilo": kind must be one of grub-bios, grub-efi, extlinux, none, got "lilo"',
        ),
        (
            'directory = "/boot/syslinux"',
            'directory = "boot/syslinux"',
            'layout.toml: boot "extlinux": directory must be an absolute path, got "boot/syslinux"',
        ),
        (
            'disk = "sdb"\ndetail',
            'disk = "sdc"\ndetail',
            'layout.toml: boot "extlinux": unknown device "sdc"',
        ),
    ],
)
def test_impossible_edits_give_one_line_errors(old: str, new: str, message: str) -> None:
    with pytest.raises(MkrecError) as err:
        parse_layout(edited(old, new))
    assert err.value.message == message


def test_missing_required_key_names_the_item() -> None:
    text = write_layout(FULL)
    lines = [line for line in text.splitlines() if not line.startswith("extent_size")]
    with pytest.raises(MkrecError) as err:
        parse_layout("\n".join(lines))
    assert err.value.message == 'layout.toml: vg "vg0": missing key "extent_size"'


def test_errors_name_the_file_and_hint_at_the_fix() -> None:
    with pytest.raises(MkrecError) as err:
        parse_layout(edited('device = "sdb5"', 'device = "sdb9"'), "/etc/recovery/layout.toml")
    assert err.value.message.startswith('/etc/recovery/layout.toml: swap on "sdb9"')
    assert err.value.hint is not None and "sdb5" in err.value.hint and "vg0/secret" in err.value.hint


def test_broken_toml_is_one_line() -> None:
    with pytest.raises(MkrecError) as err:
        parse_layout("version = 1\nhostname = \n")
    assert err.value.message.startswith("layout.toml: not valid TOML: ")
    assert "\n" not in err.value.message
