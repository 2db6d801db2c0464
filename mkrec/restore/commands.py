"""Argument lists for the commands that rebuild a system. Pure: each returns the argv, callers run it
through mkrec.runner. Kept in one module so tests can assert every exact command line."""

from __future__ import annotations

from pathlib import Path

from mkrec.errors import MkrecError

MKFS_TYPES = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "swap")


def mkfs_argv(fstype: str, device: str, uuid: str = "", label: str = "") -> list[str]:
    """Make a filesystem with the saved UUID and label, so fstab, GRUB and initramfs find it."""
    if fstype in ("ext2", "ext3", "ext4"):
        argv = [f"mkfs.{fstype}", "-F", "-q"]
        argv += ["-U", uuid] if uuid else []
        argv += ["-L", label] if label else []
    elif fstype == "xfs":
        argv = ["mkfs.xfs", "-f", "-q"]
        argv += ["-m", f"uuid={uuid}"] if uuid else []
        argv += ["-L", label] if label else []
    elif fstype == "btrfs":
        argv = ["mkfs.btrfs", "-f", "-q"]
        argv += ["-U", uuid] if uuid else []
        argv += ["-L", label] if label else []
    elif fstype == "vfat":
        argv = ["mkfs.vfat"]
        # blkid shows a FAT volume id as "ABCD-1234"; mkfs.vfat -i takes the 8 hex digits.
        argv += ["-i", uuid.replace("-", "")] if uuid else []
        argv += ["-n", label] if label else []
    elif fstype == "swap":
        argv = ["mkswap", "-f"]
        argv += ["-U", uuid] if uuid else []
        argv += ["-L", label] if label else []
    else:
        raise MkrecError(
            f"{device}: cannot make a {fstype} filesystem",
            hint=f"supported: {', '.join(MKFS_TYPES)}; restore it as another type with --as-type",
        )
    return [*argv, device]


def uuid_fits(fstype: str, uuid: str) -> bool:
    """Whether a saved UUID can be given to a new filesystem of this type (FAT ids are 8 hex digits)."""
    if fstype == "vfat":
        return len(uuid.replace("-", "")) == 8
    return len(uuid) == 36


def sfdisk_argv(device: str) -> list[str]:
    # --wipe: old signatures (a filesystem, RAID or LVM superblock at the disk start) would make
    # blkid and the kernel see ghosts; --wipe-partitions does the same for each new partition.
    return ["sfdisk", "-q", "--wipe", "always", "--wipe-partitions", "always", device]


def grub_bios_argv(disk: str, boot_dir: Path | None = None, modules: str = "") -> list[str]:
    """grub-install for BIOS. With boot_dir: run from outside the restored system (it has no GRUB of
    its own); without: inside its chroot, where /boot is where GRUB expects it."""
    argv = ["grub-install", "--target=i386-pc", "--recheck"]
    if boot_dir is not None:
        argv.append(f"--boot-directory={boot_dir}")
    if modules:
        argv.append(f"--modules={modules}")
    return [*argv, disk]


def grub_efi_argv(efi_dir: Path, boot_dir: Path | None = None) -> list[str]:
    """grub-install for UEFI into the fallback path (EFI/BOOT/BOOTX64.EFI): it boots even when the
    firmware's NVRAM entries are gone. --no-nvram: the entry is made by efibootmgr_argv when the
    rescue system runs under UEFI."""
    argv = ["grub-install", "--target=x86_64-efi", f"--efi-directory={efi_dir}", "--removable", "--no-nvram"]
    if boot_dir is not None:
        argv.append(f"--boot-directory={boot_dir}")
    return argv


def efibootmgr_argv(disk: str, partition: int, loader: str, label: str = "mkrec restored") -> list[str]:
    return [
        "efibootmgr",
        "--create",
        "--disk",
        disk,
        "--part",
        str(partition),
        "--label",
        label,
        "--loader",
        loader,
    ]


def extlinux_argv(boot_dir: Path) -> list[str]:
    return ["extlinux", "--install", str(boot_dir)]


def chroot_argv(root: Path, argv: list[str]) -> list[str]:
    return ["chroot", str(root), *argv]


def grub_modules_for(fstype: str, label: str) -> str:
    """The modules core.img needs to read /boot: the partition map and the filesystem."""
    fs_module = {"ext2": "ext2", "ext3": "ext2", "ext4": "ext2", "xfs": "xfs", "btrfs": "btrfs"}.get(
        fstype, ""
    )
    part = "part_gpt" if label == "gpt" else "part_msdos"
    return " ".join(m for m in (part, fs_module) if m)
