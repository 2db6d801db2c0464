"""Argument lists for the commands that rebuild a system: partition tables, RAID, LVM, LUKS,
filesystems, boot loaders. Pure: each returns the argv, callers run it through mkrec.runner. Kept in
one module so tests can assert every exact command line."""

from __future__ import annotations

from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.layout.model import LuksContainer, RaidArray, VolumeGroup

# No udev in the rescue system (nor in the tests): LVM creates /dev/mapper nodes itself and does not
# consult a devices file written for another machine.
LVM_CONFIG = "devices { use_devicesfile=0 } activation { udev_sync=0 udev_rules=0 }"

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


def grub_efi_argv(efi_dir: Path, boot_dir: Path | None = None, secure_boot: bool = False) -> list[str]:
    """grub-install for UEFI into the fallback path (EFI/BOOT/BOOTX64.EFI): it boots even when the
    firmware's NVRAM entries are gone. --no-nvram: the entry is made by efibootmgr_argv when the
    rescue system runs under UEFI. secure_boot: Debian's grub-install puts the signed shim there,
    the signed GRUB beside it (as the installer does), so the system boots with Secure Boot on."""
    argv = ["grub-install", "--target=x86_64-efi", f"--efi-directory={efi_dir}", "--removable", "--no-nvram"]
    if secure_boot:
        argv.append("--uefi-secure-boot")
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


def efi_entries(listing: str) -> list[tuple[str, str]]:
    """(boot number, label) of every entry `efibootmgr` lists: 'Boot0004* mkrec restored<TAB>HD(...)'
    (the '*' marks an active entry; older versions print no device path without -v)."""
    out = []
    for line in listing.splitlines():
        head, sep, rest = line.partition(" ")
        if sep and head.startswith("Boot") and len(head.rstrip("*")) == 8 and head[4:8].isalnum():
            out.append((head[4:8], rest.split("\t", 1)[0].strip()))
    return out


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


# ---- RAID, LVM, LUKS ----


def mdadm_create_argv(raid: RaidArray, members: list[str]) -> list[str]:
    """A member the saved array lacked (degraded at the backup, its disk gone) stays "missing": the
    array comes back as it was, degraded, rather than not at all."""
    count = max(raid.raid_devices or 0, len(members))
    argv = ["mdadm", "--create", f"/dev/{raid.name}", "--run", f"--level={raid.level}"]
    argv.append(f"--raid-devices={count}")
    if raid.metadata:
        argv.append(f"--metadata={raid.metadata}")
    if raid.uuid:
        argv.append(f"--uuid={raid.uuid}")
    if raid.md_name:
        argv.append(f"--name={raid.md_name}")
    if raid.chunk_size:
        argv.append(f"--chunk={raid.chunk_size // 1024}K")
    return [*argv, *members, *["missing"] * (count - len(members))]


def mdadm_assemble_argv(raid: RaidArray, members: list[str]) -> list[str]:
    return ["mdadm", "--assemble", "--run", f"/dev/{raid.name}", *members]


def pvcreate_argv(uuid: str | None, node: str, restorefile: str = "") -> list[str]:
    """restorefile: the VG's saved metadata, whose header and extent layout the PV gets."""
    argv = ["pvcreate", "--config", LVM_CONFIG, "-ff", "-y"]
    if uuid and restorefile:
        argv += ["--uuid", uuid, "--restorefile", restorefile]
    elif uuid:
        # --norestorefile: the UUID is taken as it is, without a metadata backup to check it against
        argv += ["--uuid", uuid, "--norestorefile"]
    return [*argv, node]


def vgcfgrestore_argv(vg: VolumeGroup, restorefile: str) -> list[str]:
    return ["vgcfgrestore", "--config", LVM_CONFIG, "-y", "-f", restorefile, vg.name]


def vgcreate_argv(vg: VolumeGroup, nodes: list[str]) -> list[str]:
    return [
        "vgcreate",
        "--config",
        LVM_CONFIG,
        "-y",
        "--physicalextentsize",
        f"{vg.extent_size // 1024}k",
        vg.name,
        *nodes,
    ]


def lvcreate_argv(vg: VolumeGroup, lv_index: int) -> list[str]:
    lv = vg.lvs[lv_index]
    argv = [
        "lvcreate",
        "--config",
        LVM_CONFIG,
        "-y",
        "-W",
        "y",
        "-Z",
        "y",
        "--name",
        lv.name,
        "--size",
        f"{lv.size}b",
    ]
    if lv.stripes and lv.stripes > 1:
        argv += ["--stripes", str(lv.stripes)]
    return [*argv, vg.name]


def vgchange_argv(vg: VolumeGroup, active: bool = True) -> list[str]:
    return ["vgchange", "--config", LVM_CONFIG, "-ay" if active else "-an", vg.name]


def luks_format_argv(c: LuksContainer, node: str, key_file: str, pbkdf_iterations: int = 0) -> list[str]:
    """luksFormat with the saved UUID, cipher, key size and label; the key from key_file ("-": stdin)."""
    argv = ["cryptsetup", "luksFormat", "--batch-mode", f"--type=luks{c.version}"]
    if c.uuid:
        argv.append(f"--uuid={c.uuid}")
    if c.cipher:
        argv.append(f"--cipher={c.cipher}")
    if c.key_size:
        argv.append(f"--key-size={c.key_size}")
    if c.label and c.version >= 2:
        argv.append(f"--label={c.label}")
    if pbkdf_iterations:
        # slow machines and tests: a fixed-cost PBKDF2 instead of memory-hard argon2id benchmarking
        argv += ["--pbkdf=pbkdf2", f"--pbkdf-force-iterations={pbkdf_iterations}"]
    return [*argv, f"--key-file={key_file}", node]


def luks_open_argv(c: LuksContainer, node: str, key_file: str) -> list[str]:
    return ["cryptsetup", "open", f"--key-file={key_file}", node, c.name]
