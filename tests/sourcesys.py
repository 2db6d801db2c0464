"""A small, real, bootable "source system" for end-to-end tests: a disk image the test builds
itself with a partition table, filesystems, a busybox userland, Debian's kernel and initramfs,
and GRUB for BIOS (and UEFI on GPT), or extlinux with syslinux's boot code in the MBR. Its
/sbin/init prints a marker on the serial console and powers off, so a test can prove that a disk
boots and which system it is."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from support import LoopDisks, kernel_for_guests, sh

from mkrec.rescue.elf import resolve_libraries

MARKER = "MKREC-SOURCE-SYSTEM-UP"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

GPT_TABLE = f"""label: gpt
size=1MiB, type={BIOS_BOOT}, name=bios
size=32MiB, type={ESP}, name=esp
size=160MiB, type={LINUX}, name=root
type={LINUX}, name=data
"""
MBR_TABLE = """label: dos
size=180MiB, type=83, bootable
type=83
"""
# extlinux boots from the root partition itself: no BIOS boot partition, no ESP. syslinux's MBR code
# starts the active partition (dos) or the one with the legacy BIOS bootable attribute (gpt).
EXTLINUX_TABLES = {
    "dos": MBR_TABLE,
    "gpt": f"""label: gpt
size=180MiB, type={LINUX}, name=root, attrs="LegacyBIOSBootable"
type={LINUX}, name=data
""",
}
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr")
# What a real system's boot loader package brings (own_tools=True), copied from the host to the same
# paths: the restore then runs it inside the restored system's chroot. Debian 12's grub-install does
# grub-mkimage's, grub-probe's and grub-bios-setup's work itself; it needs the platform's modules and
# runs `udevadm info --query path` for where a partition starts (its fallback, the HDIO_GETGEO ioctl,
# fails on loop devices), and every Debian has udevadm.
OWN_TOOLS = {
    "grub": ((Path("/usr/sbin/grub-install"), Path("/usr/bin/udevadm")), (Path("/usr/lib/grub/i386-pc"),)),
    "extlinux": ((Path("/usr/bin/extlinux"),), ()),
}

INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "{marker} $(cat /etc/marker)" > /dev/console
sleep 1
poweroff -f
"""


@dataclass
class SourceSystem:
    disk: str  # the loop device holding the image
    image: Path
    root: Path  # where its root filesystem (with /data below) is mounted
    label: str  # "gpt" or "dos"
    marker: str  # what /etc/marker holds: printed after MARKER at boot
    root_dev: str
    data_dev: str
    esp_dev: str | None


def _grub_cfg(root_uuid: str) -> str:
    return f"""serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry "source" {{
  search --no-floppy --fs-uuid --set=root {root_uuid}
  linux /boot/vmlinuz root=UUID={root_uuid} ro console=ttyS0,115200 quiet
  initrd /boot/initrd.img
}}
"""


def _extlinux_conf(root_uuid: str) -> str:
    return f"""SERIAL 0 115200
DEFAULT source
PROMPT 0
TIMEOUT 0
LABEL source
  LINUX /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND root=UUID={root_uuid} ro console=ttyS0,115200 quiet
"""


def _install_extlinux(root: Path, disk: str, label: str, root_uuid: str) -> None:
    """extlinux in /boot/extlinux of the mounted root, syslinux's boot code in the first 440 bytes."""
    directory = root / "boot" / "extlinux"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "extlinux.conf").write_text(_extlinux_conf(root_uuid))
    sh("extlinux", "--install", directory)
    code = (SYSLINUX_MBR / ("gptmbr.bin" if label == "gpt" else "mbr.bin")).read_bytes()
    with open(disk, "r+b") as fh:
        fh.write(code[:440])


def _install_userland(root: Path, marker: str) -> None:
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "var/log", "boot/grub"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "mount", "umount", "cat", "echo", "poweroff", "sleep", "ls"):
        (root / "bin" / applet).symlink_to("busybox")
    init = root / "sbin" / "init"
    init.write_text(INIT.format(marker=MARKER))
    init.chmod(0o755)
    (root / "etc" / "marker").write_text(marker + "\n")


def _install_own_tools(root: Path, boot: str) -> None:
    """The boot loader's programs, their shared libraries (found by the rescue builder's ELF resolver,
    the loader at its PT_INTERP path) and data directories, at the host's paths in the source root."""
    programs, trees = OWN_TOOLS[boot]
    for path in [*programs, *resolve_libraries(programs).values()]:
        dest = root / path.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    for tree in trees:
        shutil.copytree(tree, root / tree.relative_to("/"))


def _install_kernel(root: Path) -> None:
    found = kernel_for_guests()
    assert found is not None, "no kernel in /boot"
    image, version = found
    shutil.copy2(image, root / "boot" / "vmlinuz")
    shutil.copy2(Path("/boot") / f"initrd.img-{version}", root / "boot" / "initrd.img")


def _install_efi_loader(
    esp_dev: str, root_uuid: str, workdir: Path, loader: str = "EFI/BOOT/BOOTX64.EFI"
) -> None:
    """A standalone GRUB EFI binary that finds the root by UUID, copied in with mtools: the host
    kernel has no vfat, so the ESP is never mounted."""
    early = workdir / "early.cfg"
    early.write_text(
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\nset prefix=($root)/boot/grub\n"
        "configfile /boot/grub/grub.cfg\n"
    )
    efi = workdir / "BOOTX64.EFI"
    modules = "part_gpt part_msdos ext2 search_fs_uuid configfile linux normal serial terminal"
    sh(
        "grub-mkstandalone",
        "-O",
        "x86_64-efi",
        "-o",
        efi,
        f"--modules={modules}",
        f"boot/grub/grub.cfg={early}",
    )
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    for argv in (
        ["mmd", "-i", esp_dev, "::/EFI", f"::/{Path(loader).parent}"],
        ["mcopy", "-i", esp_dev, str(efi), f"::/{loader}"],
    ):
        subprocess.run(argv, check=True, env=env, capture_output=True)


def build_source_system(
    disks: LoopDisks,
    workdir: Path,
    label: str = "gpt",
    marker: str = "marker-1",
    boot: str = "grub",
    own_tools: bool = False,
) -> SourceSystem:
    """Build and mount a 256 MiB bootable system; the caller's LoopDisks cleans it up.
    boot: "grub" (BIOS, and UEFI on gpt), "grub-efi" (gpt, UEFI only, where Debian installs it:
    EFI/debian/grubx64.efi and no EFI/BOOT fallback, the ESP in fstab at /boot/efi; the host cannot
    mount vfat, a guest mounts it there) or "extlinux" (root and data partitions only).
    own_tools: the system has its own grub-install (i386-pc) or extlinux, as a real one has (17 MiB
    with their libraries for GRUB, 2.3 MiB for extlinux: the root stays half empty); without them a
    restore uses the rescue system's."""
    name = label if boot == "grub" else f"{label}-{boot}"
    image = workdir / f"source-{name}.img"
    sh("truncate", "-s", "256M", image)
    disk = disks.attach(image)
    tables = EXTLINUX_TABLES if boot == "extlinux" else {"gpt": GPT_TABLE, "dos": MBR_TABLE}
    sh("sfdisk", "-q", disk, input=tables[label])
    disks.rescan(disk)
    if boot == "extlinux":
        esp_dev, root_dev, data_dev = None, f"{disk}p1", f"{disk}p2"
    elif label == "gpt":
        esp_dev, root_dev, data_dev = f"{disk}p2", f"{disk}p3", f"{disk}p4"
        sh("mkfs.vfat", "-n", "ESP", esp_dev)
    else:
        esp_dev, root_dev, data_dev = None, f"{disk}p1", f"{disk}p2"
    sh("mkfs.ext4", "-q", "-L", "root", root_dev)
    sh("mkfs.ext4", "-q", "-L", "data", data_dev)
    root = disks.mount(root_dev, workdir / f"root-{name}")
    (root / "data").mkdir()
    disks.mount(data_dev, root / "data")
    fstab = ""
    if boot == "grub-efi" and esp_dev:
        (root / "boot" / "efi").mkdir(parents=True)
        esp_uuid = sh("blkid", "-s", "UUID", "-o", "value", esp_dev).strip()
        fstab = f"UUID={esp_uuid} /boot/efi vfat umask=0077 0 1\n"
    _install_userland(root, marker)
    _install_kernel(root)
    if own_tools:
        _install_own_tools(root, boot)
    (root / "data" / "hello.txt").write_text("data partition content\n")
    root_uuid = sh("blkid", "-s", "UUID", "-o", "value", root_dev).strip()
    data_uuid = sh("blkid", "-s", "UUID", "-o", "value", data_dev).strip()
    (root / "etc" / "fstab").write_text(
        f"UUID={root_uuid} / ext4 defaults 0 1\nUUID={data_uuid} /data ext4 defaults 0 2\n" + fstab
    )
    if boot == "extlinux":
        _install_extlinux(root, disk, label, root_uuid)
        sh("sync")
        return SourceSystem(disk, image, root, label, marker, root_dev, data_dev, esp_dev)
    (root / "boot" / "grub" / "grub.cfg").write_text(_grub_cfg(root_uuid))
    if boot == "grub-efi" and esp_dev:
        _install_efi_loader(esp_dev, root_uuid, workdir, "EFI/debian/grubx64.efi")
        sh("sync")
        return SourceSystem(disk, image, root, label, marker, root_dev, data_dev, esp_dev)
    sh(
        "grub-install",
        "--target=i386-pc",
        f"--boot-directory={root / 'boot'}",
        "--modules=part_gpt part_msdos ext2",
        disk,
    )
    if esp_dev:
        _install_efi_loader(esp_dev, root_uuid, workdir)
    sh("sync")
    return SourceSystem(disk, image, root, label, marker, root_dev, data_dev, esp_dev)
