"""Making the restored disk boot again: the boot loaders that were captured, reinstalled for the
disk they are on now. Inside the restored system's chroot when it has its own GRUB (its version
matches its config), else from the rescue system with --boot-directory."""

from __future__ import annotations

import logging
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.layout.model import BootKind, BootLoader
from mkrec.restore.commands import (
    chroot_argv,
    efibootmgr_argv,
    extlinux_argv,
    grub_bios_argv,
    grub_efi_argv,
    grub_modules_for,
)
from mkrec.restore.mounts import bind_system, unbind
from mkrec.restore.plan import Plan
from mkrec.restore.sfdisk import partition_node
from mkrec.runner import run, which

log = logging.getLogger("mkrec.restore")

EFIVARS = Path("/sys/firmware/efi/efivars")
EFI_FALLBACK = "\\EFI\\BOOT\\BOOTX64.EFI"  # the NVRAM entry's loader: the path every firmware boots


def has_own(root: Path, tool: str) -> bool:
    return any((root / d / tool).exists() for d in ("usr/sbin", "sbin", "usr/bin", "bin"))


def target_disk(plan: Plan, saved_disk: str) -> tuple[str, str]:
    """(device now, table label) of a saved disk."""
    for d in plan.disks:
        if d.choice.saved.name.removeprefix("/dev/") == saved_disk.removeprefix("/dev/"):
            return d.device, d.table.label
    raise MkrecError(f"the boot loader was on saved disk {saved_disk}, which is not being restored")


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
        if has_own(root, "grub-install"):
            _in_chroot(root, grub_bios_argv(disk))
            return
        boot_fs = plan.target("/boot") or plan.target("/")
        modules = grub_modules_for(boot_fs.saved.fstype if boot_fs else "", label)
        run(grub_bios_argv(disk, root / "boot", modules))
    elif boot.kind is BootKind.GRUB_EFI:
        _install_efi(plan, boot, root, disk)
    elif boot.kind is BootKind.EXTLINUX:
        if has_own(root, "extlinux"):
            _in_chroot(root, extlinux_argv(Path("/boot")))
        else:
            run(extlinux_argv(root / "boot"))


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
        if has_own(root, "grub-install"):
            _in_chroot(root, grub_efi_argv(Path("/boot/efi")))
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
    run(efibootmgr_argv(disk, number, EFI_FALLBACK))
    log.info("    NVRAM boot entry made: %s partition %d, %s", disk, number, EFI_FALLBACK)


def _esp_numbers(plan: Plan) -> list[tuple[str, int]]:
    return [
        (d.choice.saved.node(p.number), p.number)
        for d in plan.disks
        for p in d.table.partitions
        if partition_node(d.device, p.number)
    ]
