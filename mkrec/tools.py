"""Which external tools mkrec uses, for what, and which Debian package provides each.
The preflight reads this to say exactly what to install; the Makefile's DEBS installs them."""

from __future__ import annotations

from mkrec.config import Config, Mode

# tool -> Debian package
PACKAGE = {
    "tar": "tar",
    "zstd": "zstd",
    "lsblk": "util-linux",
    "blkid": "util-linux",
    "findmnt": "util-linux",
    "losetup": "util-linux",
    "partx": "util-linux",
    "wipefs": "util-linux",
    "sfdisk": "fdisk",
    "sgdisk": "gdisk",
    "parted": "parted",
    "mkfs.ext4": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "tune2fs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "xfs_admin": "xfsprogs",
    "mkfs.vfat": "dosfstools",
    "mkswap": "util-linux",
    "mcopy": "mtools",
    "busybox": "busybox-static",
    "cpio": "cpio",
    "depmod": "kmod",
    "grub-mkstandalone": "grub-common",
    "lvm": "lvm2",
    "mdadm": "mdadm",
    "cryptsetup": "cryptsetup",
    "getfacl": "acl",
    "partclone.restore": "partclone",  # and every partclone.<fs> (mkrec.backup.imaging.PARTCLONE)
    "ntfsclone": "ntfs-3g",
    "xorriso": "xorriso",
    "qemu-system-x86_64": "qemu-system-x86",
}

# Needed for every build: capture, rescue system, backup streams.
CORE = [
    "tar",
    "zstd",
    "lsblk",
    "blkid",
    "findmnt",
    "sfdisk",
    "sgdisk",
    "parted",
    "mkfs.ext4",
    "e2fsck",
    "mkfs.xfs",
    "mkfs.vfat",
    "mkswap",
    "mcopy",
    "busybox",
    "cpio",
    "depmod",
    "grub-mkstandalone",
    "lvm",
    "mdadm",
    "cryptsetup",
]


def needed_tools(config: Config) -> list[str]:
    tools = list(CORE)
    if config.media.burn and config.build.mode is Mode.CD:
        tools.append("xorriso")
    if config.source.raw:  # used-blocks images; without them every block is read
        tools += ["partclone.restore", "ntfsclone"]
    return tools
