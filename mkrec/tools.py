"""The one table of what mkrec needs from Debian: every external tool (and the packages that bring
files rather than commands), its package, and who needs it. The preflight, the rescue builder and
`make deps` (through `python3 -m mkrec.tools packages`) all read it.

Only the standard library and mkrec.config (itself standard library only) are imported here:
`make deps` runs this with the system's python3, before the virtualenv exists."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import StrEnum

from mkrec.config import Config, Mode


class Need(StrEnum):
    BUILD = "build"  # every build runs it (the preflight fails without it)
    BURN = "burn"  # builds that burn discs ([media] burn in mode cd)
    IMAGES = "images"  # builds that image partitions ([source] raw): used blocks only
    RESCUE = "rescue"  # the rescue system cannot start a restore without it (the build fails)
    RESTORE = "restore"  # the rescue system carries it when it is installed here
    RESTIC = "restic"  # mode restic: the build and its rescue system (the build fails without it)
    SFTP = "sftp"  # mode restic with an sftp: repository: restic runs ssh (build and rescue system)
    TESTS = "tests"  # the test suite only


@dataclass(frozen=True)
class Tool:
    command: str | None  # looked up on PATH; None: the package brings files (kernel, boot loaders)
    package: str
    needs: frozenset[Need]


def _t(command: str | None, package: str, *needs: Need) -> Tool:
    return Tool(command, package, frozenset(needs))


B, BURN, IMG, RSC, RST, T = Need.BUILD, Need.BURN, Need.IMAGES, Need.RESCUE, Need.RESTORE, Need.TESTS
RESTIC, SFTP = Need.RESTIC, Need.SFTP

TOOLS: tuple[Tool, ...] = (
    # bootstrap: the table is read with python3; the venv needs python3-venv
    _t(None, "python3", B),
    _t(None, "python3-venv", B),
    # the streams
    _t("tar", "tar", B, RSC),
    _t("zstd", "zstd", B, RSC),
    _t("getfacl", "acl", RST),
    _t("setfacl", "acl", RST),
    _t("getfattr", "attr", RST),
    _t("setfattr", "attr", RST),
    _t("partclone.restore", "partclone", IMG, RST),  # and every partclone.<fs> (imaging.PARTCLONE)
    _t("ntfsclone", "ntfs-3g", IMG, RST),
    _t("ntfsresize", "ntfs-3g", RST),
    # disks and partitions
    _t("lsblk", "util-linux", B, RSC),
    _t("blkid", "util-linux", B, RSC),
    _t("findmnt", "util-linux", B, RST),
    _t("losetup", "mount", RST, T),
    _t("partx", "util-linux", RST),
    _t("wipefs", "util-linux", RST),
    _t("mount", "mount", RSC),
    _t("umount", "mount", RST),
    _t("sfdisk", "fdisk", B, RSC),
    _t("fdisk", "fdisk", RST),
    _t("sgdisk", "gdisk", B, RST),
    _t("parted", "parted", B, RST),
    # file systems
    _t("mkfs.ext4", "e2fsprogs", B, RSC),
    _t("e2fsck", "e2fsprogs", B, RSC),
    _t("mke2fs", "e2fsprogs", RST),
    _t("mkfs.ext2", "e2fsprogs", RST),
    _t("mkfs.ext3", "e2fsprogs", RST),
    _t("tune2fs", "e2fsprogs", RST),
    _t("resize2fs", "e2fsprogs", RST),
    _t("dumpe2fs", "e2fsprogs", RST),
    _t("e2label", "e2fsprogs", RST),
    _t("mkfs.xfs", "xfsprogs", B, RST),
    _t("xfs_repair", "xfsprogs", RST),
    _t("xfs_admin", "xfsprogs", RST),
    _t("xfs_db", "xfsprogs", RST),
    _t("xfs_growfs", "xfsprogs", RST),
    _t("mkfs.vfat", "dosfstools", B, RST),
    _t("mkfs.fat", "dosfstools", RST),
    _t("fatlabel", "dosfstools", RST),
    _t("mkfs.btrfs", "btrfs-progs", RST),
    _t("btrfs", "btrfs-progs", RST),
    _t("btrfstune", "btrfs-progs", RST),
    _t("mkswap", "util-linux", B, RSC),
    # stacked devices
    _t("lvm", "lvm2", B, RST),
    _t("dmsetup", "dmsetup", RST),
    _t("mdadm", "mdadm", B, RST),
    _t("cryptsetup", "cryptsetup", B, RST),
    # the rescue system and its disc
    _t(None, "linux-image-amd64", B),  # the rescue kernel and its modules
    _t("depmod", "kmod", B),
    _t("busybox", "busybox-static", B),
    _t("cpio", "cpio", B),
    _t("mcopy", "mtools", B),  # the EFI boot image
    _t("grub-mkstandalone", "grub-common", B),
    _t(None, "isolinux", B),  # isolinux.bin
    _t(None, "syslinux-common", B),  # isolinux's modules; the MBR code extlinux restores write
    _t(None, "grub-efi-amd64-bin", B),  # the UEFI boot of the disc
    _t(None, "shim-signed", B),  # Secure Boot: the signed shim (mkrec.rescue.efi)
    _t(None, "grub-efi-amd64-signed", B),  # Secure Boot: Debian's signed GRUB for CDs
    _t(None, "grub-pc-bin", B),  # BIOS GRUB modules, carried for the restore's grub-install
    _t(None, "memtest86+", B),  # a boot menu entry when present
    _t(None, "pxelinux", B),  # pxelinux.0 of the netboot tree (BIOS PXE); its modules: syslinux-common
    _t("xorriso", "xorriso", BURN, T),
    # the boot loaders a restore reinstalls
    _t("grub-install", "grub2-common", RST),
    _t("grub-probe", "grub-common", RST),
    _t("grub-mkimage", "grub-common", B, RST),  # and bootx64.efi of the netboot tree (UEFI network boot)
    _t("grub-editenv", "grub-common", RST),
    _t("efibootmgr", "efibootmgr", RST),
    _t("extlinux", "extlinux", RST),
    _t("bash", "bash", RST),
    # network sources of a restore (--source nfs:// and ssh://; http:// needs no tool)
    _t("ssh", "openssh-client", RST, SFTP, T),
    _t("mount.nfs", "nfs-common", RST),
    # mode restic: restic itself
    _t("restic", "restic", RESTIC),
    # the tests
    _t("qemu-system-x86_64", "qemu-system-x86", T),
    _t(None, "ovmf", T),  # UEFI firmware for QEMU
    _t("isoinfo", "genisoimage", T),
    _t("dnsmasq", "dnsmasq-base", T),  # the README's network boot configuration is checked with it
    _t(None, "ipxe-qemu", T),  # the NICs' boot ROMs: PXE under SeaBIOS
    _t("debootstrap", "debootstrap", T),  # the real Debian systems of the restore matrix (tests/realsys)
    _t(
        None, "libfuse2", T
    ),  # fusepy's library: a disk with bad sectors for the fault suite (tests/badblocks.py)
    _t("fusermount", "fuse3", T),
    _t("systemd-analyze", "systemd", T),  # make install's units are verified (tests/test_install.py)
    _t("make", "make", T),  # tests/test_install.py runs make install / uninstall
    _t("nginx", "nginx", T),  # the web server the http:// source tests read a set from
    _t("sshd", "openssh-server", T),  # ssh:// source tests
    _t("ganesha.nfsd", "nfs-ganesha", T),  # nfs:// source tests: userspace NFS (the host kernel has no nfsd)
    _t(None, "nfs-ganesha-vfs", T),  # its backend that exports a local directory
    _t("rclone", "rclone", T),  # rclone serve restic: the rest: repository of the restic tests
    # on the Makefile's list before this table; no code found that needs them
    _t(None, "syslinux", B),
    _t(None, "file", B),
)

PACKAGE = {t.command: t.package for t in TOOLS if t.command}  # tool -> Debian package


def commands(*needs: Need) -> tuple[str, ...]:
    """The commands any of `needs` asks for, in table order."""
    return tuple(t.command for t in TOOLS if t.command and t.needs & set(needs))


def packages() -> list[str]:
    """Every Debian package in the table, once: what `make deps` installs."""
    return list(dict.fromkeys(t.package for t in TOOLS))


CORE = list(commands(Need.BUILD))  # needed for every build: capture, rescue system, backup streams


def restic_tools(config: Config) -> tuple[str, ...]:
    """What mode restic adds, for the build and its rescue system: restic (and ssh for sftp:)."""
    if config.build.mode is not Mode.RESTIC:
        return ()
    sftp = config.restic.repository.startswith("sftp:")
    return commands(Need.RESTIC) + (commands(Need.SFTP) if sftp else ())


def needed_tools(config: Config) -> list[str]:
    tools = list(CORE)
    if config.media.burn and config.build.mode is Mode.CD:
        tools += commands(Need.BURN)
    tools += restic_tools(config)
    if config.source.raw:  # used-blocks images; without them every block is read
        tools += commands(Need.IMAGES)
    return tools


def main(argv: list[str]) -> int:
    if argv != ["packages"]:
        print("usage: python3 -m mkrec.tools packages", file=sys.stderr)
        return 2
    print(" ".join(packages()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
