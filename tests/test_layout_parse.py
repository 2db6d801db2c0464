"""The tool-output parsers on saved real output (tests/fixtures/layout/, captured from the loop-disk
and guest set-ups of the other layout tests): GPT, MBR with extended/logical partitions, 4K sectors,
partitions with no filesystem, unmounted filesystems, MD RAID, LVM, LUKS2."""

from __future__ import annotations

import json
from pathlib import Path

from mkrec.layout import parse
from mkrec.layout.model import FstabEntry, LogicalVolume, PartitionKind, PhysicalVolume, RaidArray
from mkrec.layout.probe import parse_findmnt

FIX = Path(__file__).parent / "fixtures" / "layout"


def load(name: str) -> str:
    return (FIX / name).read_text()


def test_sfdisk_gpt() -> None:
    table = parse.parse_sfdisk(json.loads(load("gpt-sfdisk.json")))
    assert (table.label, table.id, table.first_lba, table.last_lba, table.sector_size) == (
        "gpt",
        "11111111-2222-3333-4444-555555555555",
        2048,
        1433566,
        512,
    )
    p = table.partitions
    assert [x.name for x in p] == ["loop0p1", "loop0p2", "loop0p3", "loop0p4", "loop0p5"]
    assert p[0].is_bios_boot() and p[1].is_esp() and not p[2].is_esp()
    assert (p[1].start, p[1].size, p[1].gpt_name, p[1].attrs) == (
        4096,
        131072,
        "EFI System",
        "LegacyBIOSBootable",
    )
    assert p[2].uuid == "B2A784C2-27D3-BC42-A76A-41886E116D8C"
    assert all(x.kind is PartitionKind.PRIMARY and not x.bootable for x in p)


def test_sfdisk_mbr_extended_and_logical() -> None:
    table = parse.parse_sfdisk(json.loads(load("mbr-sfdisk.json")))
    assert (table.label, table.id, table.first_lba, table.last_lba) == ("dos", "0x1234abcd", None, None)
    got = [(x.number, x.type, x.kind, x.bootable) for x in table.partitions]
    assert got == [
        (1, "83", PartitionKind.PRIMARY, True),
        (2, "82", PartitionKind.PRIMARY, False),
        (3, "5", PartitionKind.EXTENDED, False),
        (5, "83", PartitionKind.LOGICAL, False),
        (6, "83", PartitionKind.LOGICAL, False),
        (7, "c", PartitionKind.LOGICAL, False),
    ]
    assert all(x.uuid is None and x.gpt_name is None for x in table.partitions)


def test_sfdisk_4k_sectors_counts_in_4k_units() -> None:
    table = parse.parse_sfdisk(json.loads(load("4k-sfdisk.json")))
    assert (table.sector_size, table.first_lba, table.last_lba) == (4096, 256, 16378)
    assert [(x.start, x.size) for x in table.partitions] == [(256, 4096), (4352, 11776)]


def test_lsblk_sector_sizes_and_parents() -> None:
    devs = parse.parse_lsblk(json.loads(load("4k-lsblk.json")))
    disk = devs["loop2"]
    assert (disk.type, disk.size, disk.log_sec, disk.phy_sec, disk.model, disk.wwn) == (
        "loop",
        64 * 1024**2,
        4096,
        4096,
        None,
        None,
    )
    assert devs["loop2p1"].parents == ["loop2"] and devs["loop2p1"].majmin.startswith("259:")


def test_lsblk_stacked_devices_get_every_parent_from_sysfs(tmp_path: Path) -> None:
    devs = parse.parse_lsblk(json.loads(load("guest-lsblk.json")))
    assert devs["md0"].parents == ["loop1"]  # lsblk -l names one parent of a RAID over two
    for member in ("loop0", "loop1"):
        (tmp_path / "md0" / "slaves" / member).mkdir(parents=True)
    parse.add_slaves(devs, tmp_path)
    assert devs["md0"].parents == ["loop1", "loop0"]
    assert devs["md0"].type == "raid1"
    lvs = [d for d in devs.values() if d.type == "lvm"]
    assert sorted(d.name for d in lvs) == ["vg0-home", "vg0-root"]
    stack = parse.descendants(devs, ["loop0"])
    assert stack[0] == "loop0" and "md0" in stack and {d.kname for d in lvs} <= set(stack)
    assert "loop1" not in stack and "loop2" not in stack


def degraded_sysfs(root: Path, degraded: str) -> Path:
    """/sys/class/block as the guest showed it: md0 started with loop0p1 alone."""
    (root / "md0" / "slaves" / "loop0p1").mkdir(parents=True)
    (root / "md0" / "md").mkdir()
    (root / "md0" / "md" / "degraded").write_text(degraded + "\n")
    return root


def test_a_degraded_array_gets_its_member_that_is_out(tmp_path: Path) -> None:
    """Captured in a guest: RAID1 over loop0p1 and loop1p1, assembled with loop0p1 only."""
    devs = parse.parse_lsblk(json.loads(load("degraded-raid1-lsblk.json")))
    assert devs["loop1p1"].fstype == "linux_raid_member" and devs["loop1p1"].uuid == devs["loop0p1"].uuid
    sysfs = degraded_sysfs(tmp_path, "1")
    parse.add_slaves(devs, sysfs)
    assert parse.add_absent_members(devs, sysfs) == ["loop1p1"]
    assert devs["md0"].parents == ["loop0p1", "loop1p1"]
    assert parse.descendants(devs, ["loop1"]) == ["loop1", "md0", "loop1p1"]


def test_a_whole_array_takes_no_other_device_of_its_uuid(tmp_path: Path) -> None:
    """A copy of a member (a cloned disk attached) is not taken into an array that lacks nothing."""
    devs = parse.parse_lsblk(json.loads(load("degraded-raid1-lsblk.json")))
    sysfs = degraded_sysfs(tmp_path, "0")
    parse.add_slaves(devs, sysfs)
    assert parse.add_absent_members(devs, sysfs) == []
    assert devs["md0"].parents == ["loop0p1"]


def test_blkid_export() -> None:
    esp = parse.parse_export(load("gpt-blkid-p2.txt"))
    assert (esp["TYPE"], esp["LABEL"], esp["UUID"], esp["VERSION"]) == ("vfat", "ESP", "E143-9C1A", "FAT32")
    assert esp["PART_ENTRY_NAME"] == "EFI System"  # blkid writes "EFI\ System"
    assert "TYPE" not in parse.parse_export(load("gpt-blkid-p1.txt"))  # BIOS boot: nothing inside
    assert "TYPE" not in parse.parse_export(load("mbr-blkid-p6.txt"))  # a partition with no filesystem
    ext = parse.parse_export(load("mbr-blkid-p3.txt"))
    assert ext.get("PTTYPE") == "dos" and "TYPE" not in ext  # the extended partition's EBR chain
    assert parse.parse_export(load("mbr-blkid-p7.txt"))["VERSION"] == "FAT16"
    swap = parse.parse_export(load("gpt-blkid-p4.txt"))
    assert (swap["TYPE"], swap["LABEL"]) == ("swap", "swp")
    luks = parse.parse_export(load("luks2-blkid.txt"))
    assert (luks["TYPE"], luks["VERSION"], luks["LABEL"]) == ("crypto_LUKS", "2", "secret")


def test_tune2fs_and_xfs_info() -> None:
    ext4 = parse.parse_tune2fs(load("gpt-tune2fs-p3.txt"))
    assert (ext4.block_size, ext4.size) == (1024, 100 * 1024**2)
    assert ext4.used is not None and 0 < ext4.used < ext4.size
    assert "has_journal" in ext4.features and "metadata_csum" in ext4.features
    assert "needs_recovery" not in ext4.features  # it was mounted: a state, not a feature
    xfs = parse.parse_xfs_info(load("gpt-xfs_info-p5.txt"))
    assert (xfs.block_size, xfs.size, xfs.used) == (4096, 320 * 1024**2, None)
    assert xfs.features == ("crc", "finobt", "sparse", "reflink", "bigtime", "inobtcount")


def test_mdadm_export() -> None:
    raid = parse.parse_mdadm_export(load("md0-mdadm-export.txt"), "md0", {"/dev/loop1": "sdb"})
    assert raid == RaidArray(
        name="md0",
        level="raid1",
        members=("loop0", "sdb"),
        metadata="1.2",
        uuid="3cbb98c1:56eb5cc7:8c381b11:07a9e23d",
        md_name="virtme-ng:mkrectest",
        raid_devices=2,
    )


def test_luks2_dump() -> None:
    info = parse.parse_luksdump(load("luks2-luksdump.txt"))
    assert info == parse.LuksInfo(2, "2cbd85ce-3edf-4ebe-8eab-2deae89535b3", "aes-xts-plain64", 512, "secret")


def test_luks1_dump() -> None:
    text = (
        "LUKS header information for /dev/sdb1\n\nVersion:       \t1\nCipher name:   \taes\n"
        "Cipher mode:   \txts-plain64\nHash spec:     \tsha256\nPayload offset:\t4096\nMK bits:       \t512\n"
        "UUID:          \t0d5b1c3e-1111-2222-3333-444455556666\n"
    )
    info = parse.parse_luksdump(text)
    assert info == parse.LuksInfo(1, "0d5b1c3e-1111-2222-3333-444455556666", "aes-xts-plain64", 512, None)


def test_lvm_reports() -> None:
    (vg,) = parse.parse_lvm(
        json.loads(load("lvm-pvs.json")),
        json.loads(load("lvm-vgs.json")),
        json.loads(load("lvm-lvs.json")),
        {"/dev/md0": "md0"},
    )
    assert (vg.name, vg.extent_size, vg.uuid) == ("vg0", 4194304, "uq3vSl-uQew-jzYh-IyKx-ep3p-PJ5Z-ZftqOF")
    assert vg.pvs == (PhysicalVolume("md0", "uxPOtP-b2Es-RFdx-KzMC-ApY4-7XeD-Pm0hej", 310378496),)
    assert vg.lvs == (
        LogicalVolume("home", 41943040, "linear", "keZEOC-gXSu-kbOV-aLK2-iHjD-KQT3-3NKs0t", 1),
        LogicalVolume("root", 62914560, "linear", "VhYBPM-7Uhq-Xdve-VXa0-eKbp-Kesr-Xc2c2F", 1),
    )


def test_fstab() -> None:
    text = (
        "# /etc/fstab\nUUID=abc / ext4 errors=remount-ro 0 1\n"
        "/dev/sda2 none swap sw\n"
        "LABEL=My\\040Data /srv/my\\040data xfs defaults,noatime 0 2  # trailing comment\n\nbad line\n"
    )
    assert parse.parse_fstab(text) == (
        FstabEntry("UUID=abc", "/", "ext4", "errors=remount-ro", 0, 1),
        FstabEntry("/dev/sda2", "none", "swap", "sw", 0, 0),
        FstabEntry("LABEL=My Data", "/srv/my data", "xfs", "defaults,noatime", 0, 2),
    )


def test_findmnt_prefers_the_mount_of_the_filesystem_root() -> None:
    data = {
        "filesystems": [
            {"source": "/dev/sda1[/sub]", "target": "/bind", "fstype": "ext4", "options": "rw",
             "size": 10, "used": 1, "maj:min": "8:1", "fsroot": "/sub"},
            {"source": "/dev/sda1", "target": "/srv", "fstype": "ext4", "options": "rw,noatime",
             "size": 10, "used": 1, "maj:min": "8:1", "fsroot": "/"},
            {"source": "/dev/sda1", "target": "/again", "fstype": "ext4", "options": "rw",
             "size": 10, "used": 1, "maj:min": "8:1", "fsroot": "/"},
        ]
    }  # fmt: skip
    mounts = parse_findmnt(data)
    assert (mounts["8:1"].target, mounts["8:1"].options) == ("/srv", "rw,noatime")
