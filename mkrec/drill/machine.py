"""The drill's virtual machine as pure decisions: firmware, accelerator, virtual disks of the saved
disks' sizes, and the exact QEMU command lines of the two boots (rescue disc, restored disks)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mkrec.drill.setfiles import DrillSet
from mkrec.errors import MkrecError
from mkrec.layout.model import Layout
from mkrec.runner import run

QEMU = "qemu-system-x86_64"
EFI_DIR = Path("/sys/firmware/efi")
OVMF_PAIRS = (  # (code, variables template): Debian's ovmf package, newest layout first
    (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")),
    (Path("/usr/share/OVMF/OVMF_CODE.fd"), Path("/usr/share/OVMF/OVMF_VARS.fd")),
)
# The drill's own kernel command line for the rescue disc's kernel: whatever [rescue] console the set
# was built with, the console is the first serial port (where the drill reads and types); the
# unattended restore starts on it (the rescue profile acts on mkrec.run); a panic reboots, and
# -no-reboot turns that into QEMU exiting, so a broken rescue system fails at once, not at the timeout.
DRILL_CMDLINE = "quiet console=ttyS0,115200 panic=5 mkrec.run=unattended"
SHARE_TAG = "mkrecset"  # the virtio-9p mount tag of a shared set directory
SERIAL_MAX = 20  # virtio-blk serial numbers are at most 20 bytes


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class Accel(StrEnum):
    KVM = "kvm"
    TCG = "tcg"


def choose_firmware(requested: str | None, efi_dir: Path = EFI_DIR) -> Firmware:
    """--firmware wins; else the way this machine booted: UEFI when /sys/firmware/efi exists."""
    if requested:
        return Firmware(requested)
    return Firmware.UEFI if efi_dir.is_dir() else Firmware.BIOS


def find_ovmf(pairs: tuple[tuple[Path, Path], ...] = OVMF_PAIRS) -> tuple[Path, Path]:
    for code, variables in pairs:
        if code.is_file() and variables.is_file():
            return code, variables
    raise MkrecError(
        "UEFI firmware for QEMU (OVMF) is not installed", hint="apt-get install ovmf, or --firmware bios"
    )


def kvm_works(kernel: Path) -> bool:
    """/dev/kvm can open on a machine whose nested virtualisation cannot run a kernel (QEMU then
    resets at once): boot the rescue kernel under KVM for a moment and look for its banner."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    argv = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-display", "none", "-nodefaults"]
    argv += ["-serial", "stdio", "-no-reboot", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
    try:
        out = run(argv, check=False, timeout=30).stdout
    except MkrecError:  # did not finish: neither a banner nor a panic, so not usable
        return False
    return "Linux version" in out


@dataclass(frozen=True)
class VirtualDisk:
    saved: str  # the saved disk's name ("sda")
    size: int  # bytes, the saved disk's size
    serial: str  # the saved disk's serial: the restore maps disks by it when several have one size
    path: Path  # the sparse file


def virtual_disks(layout: Layout, directory: Path) -> list[VirtualDisk]:
    """One blank disk per saved disk, of its size (rounded up to whole 512-byte sectors)."""
    out = []
    for disk in layout.disks:
        size = -(-disk.size // 512) * 512
        serial = "".join(ch for ch in (disk.serial or "") if ch.isalnum() or ch in "-_.")[:SERIAL_MAX]
        out.append(VirtualDisk(disk.name, size, serial, directory / f"{disk.name.replace('/', '_')}.img"))
    return out


@dataclass(frozen=True)
class Machine:
    accel: Accel
    firmware: Firmware
    memory_mib: int
    cpus: int
    ovmf_code: Path | None = None
    ovmf_vars: Path | None = None  # the drill's own copy: the restore's boot entry lands in it


def base_argv(m: Machine) -> list[str]:
    argv = [QEMU, "-accel", str(m.accel)]
    if m.accel is Accel.KVM:
        argv += ["-cpu", "host"]
    argv += ["-m", str(m.memory_mib), "-smp", str(m.cpus), "-display", "none", "-net", "none"]
    argv += ["-serial", "stdio", "-monitor", "none", "-no-reboot"]
    if m.firmware is Firmware.UEFI:
        argv += ["-machine", "q35"]
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={m.ovmf_code}"]
        argv += ["-drive", f"if=pflash,format=raw,file={m.ovmf_vars}"]
    return argv


def disk_argv(disks: list[VirtualDisk]) -> list[str]:
    """virtio disks (vda, vdb, ...) in the saved order. cache=unsafe: the files are scratch, and
    what the guest wrote is in the host's page cache once QEMU exits."""
    argv = []
    for i, d in enumerate(disks):
        argv += ["-drive", f"if=none,id=disk{i},file={d.path},format=raw,cache=unsafe"]
        argv += ["-device", f"virtio-blk-pci,drive=disk{i}" + (f",serial={d.serial}" if d.serial else "")]
    return argv


def volume_argv(volumes: tuple[Path, ...]) -> list[str]:
    """Every volume of the set in a CD drive (/dev/sr0, sr1, ...), where the rescue system looks for
    them; on one virtio-scsi controller, so a set of many volumes fits (IDE has four places)."""
    if not volumes:
        return []
    argv = ["-device", "virtio-scsi-pci,id=scsi0"]
    for i, iso in enumerate(volumes):
        argv += ["-drive", f"if=none,id=vol{i + 1},file={iso},format=raw,media=cdrom,readonly=on"]
        argv += ["-device", f"scsi-cd,bus=scsi0.0,drive=vol{i + 1}"]
    return argv


def share_argv(share: Path | None) -> list[str]:
    """A path or tape set's directory, read-only over virtio-9p: the rescue system mounts it where
    it looks for a set (rc.rescue, mkrec.share=), and nothing is copied however big the set."""
    if share is None:
        return []
    fsdev = f"local,id=set,path={share},security_model=none,readonly=on"
    return ["-fsdev", fsdev, "-device", f"virtio-9p-pci,fsdev=set,mount_tag={SHARE_TAG}"]


def drill_cmdline(share: Path | None, source: str) -> str:
    extra = (f" mkrec.share={SHARE_TAG}" if share else "") + (f" mkrec.source={source}" if source else "")
    return DRILL_CMDLINE + extra


def rescue_argv(
    m: Machine, disks: list[VirtualDisk], kernel: Path, initrd: Path, dset: DrillSet
) -> list[str]:
    """Boot 1: the set's rescue kernel and RAM disks with the drill's command line, the blank disks
    and the set attached (its ISO volumes in CD drives, or its directory shared)."""
    argv = base_argv(m) + disk_argv(disks) + volume_argv(dset.volumes) + share_argv(dset.share)
    cmdline = drill_cmdline(dset.share, dset.source)
    return [*argv, "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline]


def first_boot_argv(m: Machine, disks: list[VirtualDisk]) -> list[str]:
    """Boot 2: the restored disks alone, started by the firmware as a real machine would."""
    return base_argv(m) + disk_argv(disks)
