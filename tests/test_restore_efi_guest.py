"""GRUB EFI reinstalled onto a restored ESP that was backed up as files, not as an image.

The host kernel has no vfat, so everywhere else the ESP is imaged and comes back with its loaders byte for
byte. Here the host builds a GPT source system whose ESP holds GRUB where Debian puts it
(EFI/debian/grubx64.efi, no EFI/BOOT fallback) and is listed in fstab at /boot/efi; one virtme-ng guest
(tests/efi_guest.py) mounts it there, captures it, backs it up (mode path: the ESP as a tar stream),
loses it, and restores onto a blank disk image with `mkrec restore start --yes --map ...`: a new FAT
filesystem, its files unpacked, then grub-install from the rescue side (the restored system has no GRUB
of its own) with --efi-directory, --boot-directory and --removable. The host boots that image under OVMF
with empty NVRAM: only the fallback path EFI/BOOT/BOOTX64.EFI the restore installed can start it, so
reaching the marker proves grub-install did its job."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from efi_guest import DONE, MARK, SOURCE
from qemu import Guest, drive_args, qemu_argv
from sourcesys import MARKER, build_source_system
from support import LoopDisks, run_in_guest

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
GUEST_SIDE = Path(__file__).resolve().parent / "efi_guest.py"
BOOT_TIMEOUT = 240


@pytest.mark.vm
def test_grub_efi_reinstalled_onto_a_restored_mounted_esp_boots_under_ovmf(
    tmp_path: Path, loop_disks: LoopDisks
) -> None:
    src = build_source_system(loop_disks, tmp_path, "gpt", MARK, boot="grub-efi")
    assert src.image == tmp_path / SOURCE
    loop_disks.cleanup()  # the guest attaches the image itself
    loop_disks.devices.clear()
    loop_disks.mounts.clear()
    t0 = time.monotonic()
    proc = run_in_guest(f"{PYTHON} {GUEST_SIDE} {tmp_path}", tmp_path, timeout=900)
    guest_s = time.monotonic() - t0
    assert DONE in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    facts = json.loads((tmp_path / "facts.json").read_text())
    log = (tmp_path / "restore.log").read_text()
    assert facts["restore_rc"] == 0, log[-3000:]
    target, root = facts["target"], facts["root"]
    assert f"run: mount -t vfat {target}p2 {root}/boot/efi\n" in log
    # grub-install from the rescue side into the ESP mounted at /boot/efi, modules and grub.cfg under /boot
    grub = (
        f"run: grub-install --target=x86_64-efi --efi-directory={root}/boot/efi --removable --no-nvram "
        f"--boot-directory={root}/boot\n"
    )
    assert grub in log, log[-3000:]
    assert "EFI/debian/grubx64.efi" in facts["esp_before"]
    assert "EFI/BOOT/BOOTX64.EFI" not in facts["esp_before"]
    # Only the fallback path is new; where shim-signed is installed, grub-install puts shim there as
    # BOOTX64.EFI with grubx64.efi, mmx64.efi, BOOTX64.CSV and grub.cfg beside it.
    added = set(facts["esp_after"]) - set(facts["esp_before"])
    assert "EFI/BOOT/BOOTX64.EFI" in added and all(f.startswith("EFI/BOOT/") for f in added), added
    assert set(facts["esp_before"]) <= set(facts["esp_after"])
    assert facts["fstab_after"] == facts["fstab_before"]  # UUID= lines: the ESP kept its volume id
    assert " /boot/efi vfat " in facts["fstab_after"]

    t1 = time.monotonic()
    image = tmp_path / "target.img"
    guest = Guest(qemu_argv(drive_args([image]), tmp_path, uefi=True), tmp_path / "boot-uefi.log")
    try:
        guest.expect(f"{MARKER} {MARK}", timeout=BOOT_TIMEOUT)
    finally:
        guest.kill()
    inside = ", ".join(f"{k} {v} s" for k, v in facts["times"].items())
    booted = time.monotonic() - t1
    print(
        f"guest run {guest_s:.0f} s ({inside}); restored disk booted under OVMF in {booted:.0f} s",
        file=sys.stderr,
    )
