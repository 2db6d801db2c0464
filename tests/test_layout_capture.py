"""Layout capture on real loop-device disks (host kernel): GPT and MBR (with extended and logical
partitions), 4K sectors, a bootable source system with GRUB BIOS + EFI, and the unreadable root disk.
Every field is compared with what the test created, and the saved sfdisk dump is written onto a
fresh disk to show the table comes back identical."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from sourcesys import build_source_system
from support import LoopDisks, sh

from mkrec.cli import main
from mkrec.config import Config, SourceConfig
from mkrec.context import Context
from mkrec.layout import capture_for_build
from mkrec.layout.bootloader import extlinux_on, syslinux_in_mbr
from mkrec.layout.model import BootKind, BootLoader, Partition, PartitionKind
from mkrec.layout.probe import can_open
from mkrec.layout.textfmt import read_layout

BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX = "0FC63DAF-8483-4772-8E79-3D47DE47C478"
SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
UUIDS = [f"{n:08X}-0000-4000-8000-00000000000{n}" for n in range(1, 6)]

GPT_TABLE = f"""label: gpt
label-id: 5E6F7A8B-1111-2222-3333-444455556666
start=2048, size=2048, type={BIOS_BOOT}, uuid={UUIDS[0]}, name="bios"
start=4096, size=131072, type={ESP}, uuid={UUIDS[1]}, name="EFI System", attrs="LegacyBIOSBootable"
start=135168, size=204800, type={LINUX}, uuid={UUIDS[2]}, name="root"
start=339968, size=65536, type={SWAP}, uuid={UUIDS[3]}, name="swap"
start=405504, size=655360, type={LINUX}, uuid={UUIDS[4]}, name="data"
"""
MBR_TABLE = """label: dos
label-id: 0x1234abcd
start=2048, size=204800, type=83, bootable
start=206848, size=65536, type=82
start=272384, type=5
start=274432, size=655360, type=83
start=931840, size=32768, type=8e
start=966656, type=c
"""

EXT4_UUID = "3b1e0c9a-7d2f-4e51-9a60-0c6d7b2e4f11"
XFS_UUID = "8c2d4e6f-1a3b-4c5d-8e9f-a0b1c2d3e4f5"
SWAP_UUID = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"


def capture(disks: list[str], out: Path) -> float:
    argv = ["layout", "capture", "-o", str(out)]
    for disk in disks:
        argv += ["--disk", disk]
    start = time.monotonic()
    assert main(argv) == 0
    return time.monotonic() - start


def dump_without_device(dev: str) -> str:
    return sh("sfdisk", "--dump", dev).replace(dev, "DEV")


def restore_table(loop_disks: LoopDisks, size: str, dump: Path, sector_size: int = 512) -> str:
    """Write a saved dump onto a fresh disk the way the HOWTO does: sfdisk DEV < dump."""
    image = loop_disks.workdir / f"fresh{len(loop_disks.devices)}.img"
    sh("truncate", "-s", size, image)
    dev = sh("losetup", "-f", "-P", "--show", "--sector-size", str(sector_size), image).strip()
    loop_disks.devices.append(dev)
    sh("sfdisk", "-q", "--no-reread", dev, input=dump.read_text())
    return dev


@pytest.mark.root
def test_gpt_disk_every_field(tmp_path: Path, loop_disks: LoopDisks) -> None:
    dev = loop_disks.create("700M")
    name = dev.removeprefix("/dev/")
    sh("sfdisk", "-q", dev, input=GPT_TABLE)
    loop_disks.rescan(dev)
    sh("mkfs.vfat", "-F", "32", "-n", "ESP", "-i", "E1439C1A", f"{dev}p2")  # not mounted: no vfat here
    sh("mkfs.ext4", "-q", "-L", "root", "-U", EXT4_UUID, "-b", "4096", f"{dev}p3")
    sh("mkswap", "-L", "swp", "-U", SWAP_UUID, f"{dev}p4")
    sh("mkfs.xfs", "-q", "-L", "data", "-m", f"uuid={XFS_UUID}", f"{dev}p5")
    root = loop_disks.mount(f"{dev}p3", tmp_path / "mnt")
    data = loop_disks.mount(f"{dev}p5", root / "data")
    (root / "big").write_bytes(os.urandom(1024 * 1024))
    os.sync()

    seconds = capture([dev], tmp_path / "out")
    print(f"capture of a 5-partition GPT disk: {seconds:.2f} s")
    layout = read_layout(tmp_path / "out" / "layout.toml")

    (disk,) = layout.disks
    assert (disk.name, disk.size, disk.logical_sector, disk.physical_sector) == (
        name,
        700 * 1024**2,
        512,
        512,
    )
    assert (disk.label, disk.id, disk.first_lba, disk.last_lba) == (
        "gpt",
        "5E6F7A8B-1111-2222-3333-444455556666",
        2048,
        700 * 2048 - 34,
    )
    assert disk.readable and disk.note is None
    expected = [
        (1, 2048, 2048, BIOS_BOOT, "bios", None),
        (2, 4096, 131072, ESP, "EFI System", "LegacyBIOSBootable"),
        (3, 135168, 204800, LINUX, "root", None),
        (4, 339968, 65536, SWAP, "swap", None),
        (5, 405504, 655360, LINUX, "data", None),
    ]
    assert disk.partitions == tuple(
        Partition(f"{name}p{n}", n, start, size, ptype, PartitionKind.PRIMARY, UUIDS[n - 1], label, attrs)
        for n, start, size, ptype, label, attrs in expected
    )
    fs = {f.device: f for f in layout.filesystems}
    assert set(fs) == {f"{name}p2", f"{name}p3", f"{name}p5"}
    esp = fs[f"{name}p2"]
    assert (esp.type, esp.label, esp.uuid, esp.features, esp.mountpoint) == (
        "vfat",
        "ESP",
        "E143-9C1A",
        ("FAT32",),
        None,
    )
    ext4 = fs[f"{name}p3"]
    assert (ext4.type, ext4.label, ext4.uuid, ext4.block_size) == ("ext4", "root", EXT4_UUID, 4096)
    assert ext4.size == 204800 * 512 and ext4.mountpoint == str(root) and ext4.options is not None
    assert "has_journal" in ext4.features and "needs_recovery" not in ext4.features
    assert ext4.used is not None and ext4.used >= 1024 * 1024
    xfs = fs[f"{name}p5"]
    assert (xfs.type, xfs.label, xfs.uuid, xfs.block_size, xfs.size) == (
        "xfs",
        "data",
        XFS_UUID,
        4096,
        320 * 1024**2,
    )
    assert xfs.mountpoint == str(data) and "crc" in xfs.features
    assert [(s.device, s.label, s.uuid, s.size) for s in layout.swaps] == [
        (f"{name}p4", "swp", SWAP_UUID, 32 * 1024**2)
    ]
    assert [b.kind for b in layout.boot] == [BootKind.NONE]  # a BIOS boot partition, but no GRUB in it

    out = tmp_path / "out"
    assert (out / f"mbr-{name}.bin").read_bytes() == Path(dev).read_bytes()[:512]
    assert (out / f"biosboot-{name}p1.bin").stat().st_size == 2048 * 512
    assert (out / f"fatboot-{name}p2.bin").read_bytes() == Path(f"{dev}p2").read_bytes()[:512]
    assert not (out / f"gap-{name}.bin").exists()  # GPT: the sectors after the MBR are the table
    readme = (out / "README.txt").read_text()
    assert "sfdisk /dev/<disk> < sfdisk-<disk>.dump" in readme

    fresh = restore_table(loop_disks, "700M", out / f"sfdisk-{name}.dump")
    assert dump_without_device(fresh) == dump_without_device(dev)

    assert main(["layout", "show", str(out)]) == 0


@pytest.mark.root
def test_mbr_disk_with_extended_and_logical_partitions(tmp_path: Path, loop_disks: LoopDisks) -> None:
    dev = loop_disks.create("800M")
    name = dev.removeprefix("/dev/")
    sh("sfdisk", "-q", dev, input=MBR_TABLE)
    loop_disks.rescan(dev)
    sh("mkfs.ext4", "-q", "-L", "boot", f"{dev}p1")
    sh("mkswap", f"{dev}p2")
    sh("mkfs.xfs", "-q", f"{dev}p5")  # unmounted
    sh("mkfs.vfat", "-n", "DOSDATA", f"{dev}p7")  # p6: no filesystem at all
    loop_disks.mount(f"{dev}p1", tmp_path / "boot")

    capture([dev], tmp_path / "out")
    layout = read_layout(tmp_path / "out" / "layout.toml")
    (disk,) = layout.disks
    assert (disk.label, disk.id, disk.first_lba, disk.last_lba) == ("dos", "0x1234abcd", None, None)
    got = [(p.number, p.start, p.size, p.type, p.kind, p.bootable, p.uuid) for p in disk.partitions]
    end = 800 * 2048
    assert got == [
        (1, 2048, 204800, "83", PartitionKind.PRIMARY, True, None),
        (2, 206848, 65536, "82", PartitionKind.PRIMARY, False, None),
        (3, 272384, end - 272384, "5", PartitionKind.EXTENDED, False, None),
        (5, 274432, 655360, "83", PartitionKind.LOGICAL, False, None),
        (6, 931840, 32768, "8e", PartitionKind.LOGICAL, False, None),
        (7, 966656, end - 966656, "c", PartitionKind.LOGICAL, False, None),
    ]
    fs = {f.device: (f.type, f.label, f.mountpoint) for f in layout.filesystems}
    assert fs == {
        f"{name}p1": ("ext4", "boot", str(tmp_path / "boot")),
        f"{name}p5": ("xfs", None, None),
        f"{name}p7": ("vfat", "DOSDATA", None),
    }
    assert [s.device for s in layout.swaps] == [f"{name}p2"]
    out = tmp_path / "out"
    assert (out / f"gap-{name}.bin").read_bytes() == Path(dev).read_bytes()[512 : 2048 * 512]
    fresh = restore_table(loop_disks, "800M", out / f"sfdisk-{name}.dump")
    assert dump_without_device(fresh) == dump_without_device(dev)


@pytest.mark.root
def test_4k_sector_disk(tmp_path: Path, loop_disks: LoopDisks) -> None:
    image = tmp_path / "k4.img"
    sh("truncate", "-s", "64M", image)
    dev = sh("losetup", "-f", "-P", "--show", "--sector-size", "4096", image).strip()
    loop_disks.devices.append(dev)
    sh("sfdisk", "-q", dev, input=f"label: gpt\nsize=16MiB, type={ESP}\ntype={LINUX}\n")
    loop_disks.rescan(dev)
    sh("mkfs.ext4", "-q", f"{dev}p2")
    capture([dev], tmp_path / "out")
    (disk,) = read_layout(tmp_path / "out" / "layout.toml").disks
    assert (disk.logical_sector, disk.physical_sector, disk.first_lba, disk.last_lba) == (
        4096,
        4096,
        256,
        16378,
    )
    assert [(p.start, p.size) for p in disk.partitions] == [(256, 4096), (4352, 11776)]
    name = dev.removeprefix("/dev/")
    fresh = restore_table(loop_disks, "64M", tmp_path / "out" / f"sfdisk-{name}.dump", sector_size=4096)
    assert dump_without_device(fresh) == dump_without_device(dev)


@pytest.mark.root
def test_source_system_grub_bios_and_efi_through_the_build_stage(
    tmp_path: Path, loop_disks: LoopDisks
) -> None:
    src = build_source_system(loop_disks, tmp_path, label="gpt")
    name = src.disk.removeprefix("/dev/")
    config = dataclasses.replace(Config(), source=SourceConfig(root=src.root))
    ctx = Context(config, staging=tmp_path / "isofs")
    captured = capture_for_build(ctx)  # disks found from what is mounted under root
    out = ctx.recovery_dir
    layout = read_layout(out / "layout.toml")
    assert [d.name for d in layout.disks] == [name]
    boot = {b.kind: b for b in layout.boot}
    assert boot[BootKind.GRUB_BIOS].disk == name
    assert "BIOS boot partition" in (boot[BootKind.GRUB_BIOS].detail or "")
    assert (boot[BootKind.GRUB_EFI].disk, boot[BootKind.GRUB_EFI].esp) == (name, f"{name}p2")
    assert boot[BootKind.GRUB_EFI].detail == "EFI/BOOT/BOOTX64.EFI"
    assert [(e.file, e.vfstype, e.passno) for e in layout.fstab] == [("/", "ext4", 1), ("/data", "ext4", 2)]
    assert (out / "fstab").read_text() == (src.root / "etc" / "fstab").read_text()
    assert (out / "hostname").read_text() == ctx.hostname + "\n"
    core = (out / f"biosboot-{name}p1.bin").read_bytes()  # GRUB's core image was saved
    assert core == Path(f"{src.disk}p1").read_bytes() and core.strip(b"\0")

    backed = captured.mounted_under(str(ctx.config.source.root))  # what the backup streams
    assert [(f.device, f.type, f.mountpoint) for f in backed] == [
        (f"{name}p3", "ext4", str(src.root)),
        (f"{name}p4", "ext4", str(src.root / "data")),
    ]


def test_syslinux_boot_code_is_told_from_grubs_and_from_none() -> None:
    mbrs = Path("/usr/lib/syslinux/mbr")
    for name in ("mbr.bin", "gptmbr.bin", "altmbr.bin"):
        assert syslinux_in_mbr((mbrs / name).read_bytes()), name
    assert not syslinux_in_mbr(Path("/usr/lib/grub/i386-pc/boot.img").read_bytes())
    assert not syslinux_in_mbr(bytes(512))


def test_extlinux_directory_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "boot" / "syslinux").mkdir(parents=True)
    (tmp_path / "boot" / "syslinux" / "ldlinux.sys").touch()
    code = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()
    assert extlinux_on(str(tmp_path), "sda", code) == BootLoader(
        BootKind.EXTLINUX,
        "sda",
        detail=f"{tmp_path}/boot/syslinux/ldlinux.sys; syslinux boot code in the MBR",
        directory=f"{tmp_path}/boot/syslinux",
    )
    assert extlinux_on(str(tmp_path), "sda", bytes(512)) == BootLoader(
        BootKind.EXTLINUX,
        "sda",
        detail=f"{tmp_path}/boot/syslinux/ldlinux.sys",
        directory=f"{tmp_path}/boot/syslinux",
    )
    assert extlinux_on(str(tmp_path / "boot"), "sda", bytes(512)) is not None  # /boot of its own
    assert extlinux_on(str(tmp_path / "boot" / "syslinux"), "sda", bytes(512)) is None


@pytest.mark.root
def test_extlinux_belongs_to_the_filesystem_that_holds_it(tmp_path: Path, loop_disks: LoopDisks) -> None:
    """/ and /boot mounted: ldlinux.sys seen through / is /boot's, recorded once, with /boot's disk."""
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    boot = loop_disks.mount("none", root / "boot", "-t", "tmpfs")
    (boot / "extlinux").mkdir()
    (boot / "extlinux" / "ldlinux.sys").touch()
    assert extlinux_on(str(root), "sda", bytes(512)) is None
    found = extlinux_on(str(boot), "sdb", bytes(512))
    assert found is not None and (found.disk, found.directory) == ("sdb", f"{boot}/extlinux")


@pytest.mark.root
def test_unreadable_root_disk_degrades_to_lsblk_and_mounts(tmp_path: Path) -> None:
    if not Path("/dev/vda").exists() or can_open("/dev/vda") is None:
        pytest.skip("needs a root disk that refuses to open (this machine's /dev/vda)")
    capture(["/dev/vda"], tmp_path / "out")
    layout = read_layout(tmp_path / "out" / "layout.toml")
    (disk,) = layout.disks
    assert not disk.readable and disk.note is not None and "EPERM" in disk.note
    assert disk.size == int(Path("/sys/block/vda/size").read_text()) * 512
    (fs,) = [f for f in layout.filesystems if f.device == "vda"]
    assert (fs.type, fs.mountpoint) == ("ext4", "/") and fs.used
    assert not list((tmp_path / "out").glob("*.dump"))
