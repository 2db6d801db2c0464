"""Making the restored disk boot again: the boot loaders that were captured, reinstalled for the
disk they are on now. Inside the restored system's chroot when it has its own GRUB (for that
platform) or extlinux (its version matches its config and modules), else from the rescue system
(--boot-directory, or the restored directory's path). extlinux also needs syslinux's boot code in
the MBR: the saved one when it was syslinux's, else the rescue system's mbr.bin / gptmbr.bin; only
the first 440 bytes are written, never the partition table."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.layout.bootloader import EXTLINUX_FILES, MBR_CODE, syslinux_in_mbr
from mkrec.layout.model import BootKind, BootLoader
from mkrec.restore.apply.argv import (
    chroot_argv,
    efi_entries,
    efibootmgr_argv,
    extlinux_argv,
    grub_bios_argv,
    grub_efi_argv,
    grub_modules_for,
)
from mkrec.restore.apply.mounts import bind_system, unbind
from mkrec.restore.decide.plan import DiskPlan, Plan
from mkrec.restore.decide.sfdisk import Table, partition_node
from mkrec.runner import run, which

log = logging.getLogger("mkrec.restore")

EFIVARS = Path("/sys/firmware/efi/efivars")
NVRAM_LABEL = "mkrec restored"
EFI_FALLBACK = "\\EFI\\BOOT\\BOOTX64.EFI"  # the NVRAM entry's loader: the path every firmware boots
# Debian's signed boot chain, relative to the restored root (grub-install --uefi-secure-boot copies them).
SIGNED_SHIM = "usr/lib/shim/shimx64.efi.signed"
SIGNED_GRUB_EFI = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
# syslinux-common has the boot code here; the extlinux package has a copy in /usr/lib/EXTLINUX.
SYSLINUX_MBR_DIRS = (Path("/usr/lib/syslinux/mbr"), Path("/usr/lib/EXTLINUX"))


def has_own(root: Path, tool: str) -> bool:
    return any((root / d / tool).exists() for d in ("usr/sbin", "sbin", "usr/bin", "bin"))


def has_own_grub(root: Path, platform: str) -> bool:
    """The restored system's grub-install, with the modules of the platform it must install for: a
    UEFI Debian has x86_64-efi but often no i386-pc (grub-pc-bin), and the other way round."""
    return has_own(root, "grub-install") and (root / "usr/lib/grub" / platform).is_dir()


def has_signed_chain(root: Path) -> bool:
    """The restored system has Debian's signed shim and GRUB (shim-signed, grub-efi-amd64-signed):
    it was installed for Secure Boot, and its grub-install can put the signed chain back."""
    return (root / SIGNED_SHIM).is_file() and (root / SIGNED_GRUB_EFI).is_file()


def disk_plan(plan: Plan, saved_disk: str) -> DiskPlan:
    for d in plan.disks:
        if d.choice.saved.name.removeprefix("/dev/") == saved_disk.removeprefix("/dev/"):
            return d
    raise MkrecError(f"the boot loader was on saved disk {saved_disk}, which is not being restored")


def target_disk(plan: Plan, saved_disk: str) -> tuple[str, str]:
    """(device now, table label) of a saved disk."""
    d = disk_plan(plan, saved_disk)
    return d.device, d.table.label


def bios_bootable(table: Table) -> bool:
    """Whether a partition carries what syslinux's mbr.bin (the active flag) or gptmbr.bin
    (LegacyBIOSBootable) looks for."""
    return any(p.bootable or "LegacyBIOSBootable" in p.attrs for p in table.partitions)


def _in_chroot(root: Path, argv: list[str]) -> None:
    binds = bind_system(root)
    try:
        run(chroot_argv(root, argv))
    finally:
        unbind(binds)


def install_boot(plan: Plan, boot: BootLoader, root: Path) -> None:
    if boot.kind is BootKind.NONE:
        return
    disk, label = target_disk(plan, boot.disk or "")
    if boot.kind is BootKind.GRUB_BIOS:
        if has_own_grub(root, "i386-pc"):
            _in_chroot(root, grub_bios_argv(disk))
            return
        boot_fs = plan.target("/boot") or plan.target("/")
        modules = grub_modules_for(boot_fs.saved.fstype if boot_fs else "", label)
        run(grub_bios_argv(disk, root / "boot", modules))
    elif boot.kind is BootKind.GRUB_EFI:
        _install_efi(plan, boot, root, disk)
    elif boot.kind is BootKind.EXTLINUX:
        _install_extlinux(plan, boot, root, disk, label)


def extlinux_dir(boot: BootLoader, root: Path) -> str:
    """Where ldlinux.sys goes, as the restored system sees it ("/boot/extlinux"): the directory the
    capture recorded, else (a layout from before it was recorded) where the backup put ldlinux.sys."""
    directory = boot.directory
    if directory is None:
        found = [rel for rel in EXTLINUX_FILES if (root / rel).is_file()]
        directory = "/" + str(Path(found[0]).parent) if found else None
    if directory is None or not (root / directory.lstrip("/")).is_dir():
        raise MkrecError(
            f"extlinux: its directory ({directory or 'not recorded'}) is not in the restored system",
            hint='set directory = "/boot/extlinux" (where ldlinux.sys was) in the extlinux [[boot]] of '
            "layout.toml, or install a boot loader by hand",
        )
    return directory


def mbr_code(saved: bytes, label: str, dirs: tuple[Path, ...] = SYSLINUX_MBR_DIRS) -> tuple[bytes, str]:
    """The boot code extlinux needs in the MBR, and where it came from: the saved MBR's when it is
    syslinux's (the version and variant the system had), else syslinux's mbr.bin (gptmbr.bin on GPT)."""
    if syslinux_in_mbr(saved):
        return saved[:MBR_CODE], "the saved MBR"
    name = "gptmbr.bin" if label == "gpt" else "mbr.bin"
    for d in dirs:
        if (d / name).is_file():
            return (d / name).read_bytes()[:MBR_CODE], str(d / name)
    raise MkrecError(
        f"extlinux: syslinux's {name} is not here ({', '.join(map(str, dirs))}) and the saved MBR has no "
        "syslinux code",
        hint="install syslinux-common, or write a boot code to the first 440 bytes of the disk by hand",
    )


def write_boot_code(device: str, code: bytes) -> None:
    """Only the boot code: the disk signature and the partition table (bytes 440-511) stay."""
    if len(code) > MBR_CODE:
        raise MkrecError(f"{device}: {len(code)} bytes of boot code, more than the {MBR_CODE} the MBR holds")
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, code, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _install_extlinux(plan: Plan, boot: BootLoader, root: Path, disk: str, label: str) -> None:
    directory = extlinux_dir(boot, root)
    if has_own(root, "extlinux"):
        _in_chroot(root, extlinux_argv(Path(directory)))
    else:
        run(extlinux_argv(root / directory.lstrip("/")))
    if any(b.kind is BootKind.GRUB_BIOS and b.disk == boot.disk for b in plan.system.boots):
        log.info("    %s: the MBR keeps GRUB's boot code (GRUB boots this disk too)", disk)
        return
    d = disk_plan(plan, boot.disk or "")
    code, origin = mbr_code(d.choice.saved.mbr, label)
    if not syslinux_in_mbr(d.choice.saved.mbr) and not bios_bootable(d.table):
        flag = "the LegacyBIOSBootable attribute" if label == "gpt" else "the active flag"
        log.warning("warning: %s: no partition has %s: syslinux's boot code finds none to boot", disk, flag)
    write_boot_code(disk, code)
    log.info("    %s: syslinux boot code from %s in the MBR (partition table untouched)", disk, origin)


def _install_efi(plan: Plan, boot: BootLoader, root: Path, disk: str) -> None:
    esp_node = f"/dev/{boot.esp}" if boot.esp else ""
    esp = plan.system.fs_on(esp_node)
    if esp is not None and esp.raw:
        # The ESP came back block for block: its loaders are the saved ones, byte for byte.
        log.info("    %s: ESP restored as an image, its EFI loaders are the saved ones", boot.esp)
    else:
        mounted = plan.target("/boot/efi")
        if mounted is None:
            raise MkrecError(f"GRUB EFI: the ESP {boot.esp} is not mounted at /boot/efi in the saved layout")
        if has_own_grub(root, "x86_64-efi"):
            secure = has_signed_chain(root)
            if secure:
                log.info("    signed shim and GRUB in the restored system: installed for Secure Boot")
            _in_chroot(root, grub_efi_argv(Path("/boot/efi"), secure_boot=secure))
        else:
            run(grub_efi_argv(root / "boot" / "efi", root / "boot"))
    if not EFIVARS.is_dir():
        log.info("    not booted under UEFI: no NVRAM entry made (the fallback path EFI/BOOT boots)")
        return
    if which("efibootmgr") is None:
        log.warning("warning: efibootmgr is missing: no NVRAM entry made (the fallback path boots)")
        return
    number = next(
        (n for saved, n in _esp_numbers(plan) if saved == esp_node),
        None,
    )
    if number is None:
        raise MkrecError(f"GRUB EFI: the ESP {boot.esp} is not a partition of a restored disk")
    make_nvram_entry(disk, number)


def make_nvram_entry(disk: str, partition: int, label: str = NVRAM_LABEL) -> None:
    """Exactly one firmware boot entry for the restored system: an entry of the same label (an
    earlier restore of this machine) is replaced, not joined by another on every restore."""
    for number, _label in [e for e in efi_entries(run(["efibootmgr"]).stdout) if e[1] == label]:
        run(["efibootmgr", "--quiet", "--bootnum", number, "--delete-bootnum"])
        log.info("    NVRAM boot entry Boot%s (%s) of an earlier restore removed", number, label)
    listing = run(efibootmgr_argv(disk, partition, EFI_FALLBACK, label)).stdout
    ours = [f"Boot{n}" for n, lab in efi_entries(listing) if lab == label]
    log.info("    NVRAM boot entry made: %s partition %d, %s (entries labelled %r: %s)",
             disk, partition, EFI_FALLBACK, label, ", ".join(ours))  # fmt: skip


def _esp_numbers(plan: Plan) -> list[tuple[str, int]]:
    return [
        (d.choice.saved.node(p.number), p.number)
        for d in plan.disks
        for p in d.table.partitions
        if partition_node(d.device, p.number)
    ]
