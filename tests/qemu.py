"""Booting disks and ISOs under QEMU (TCG) with the serial console captured, for VM tests."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


@dataclass
class Machine:
    """One QEMU guest: disks and CDs attached in order, BIOS (SeaBIOS) or UEFI (OVMF)."""

    workdir: Path
    uefi: bool = False
    memory: str = "1024"
    disks: list[Path] = field(default_factory=list)
    cdroms: list[Path] = field(default_factory=list)
    boot_from_cd: bool = False

    def argv(self, serial_log: Path) -> list[str]:
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", self.memory, "-nographic", "-net", "none"]
        argv += ["-serial", f"file:{serial_log}", "-monitor", "none", "-no-reboot"]
        if self.uefi:
            vars_copy = self.workdir / "OVMF_VARS.fd"
            vars_copy.write_bytes(OVMF_VARS.read_bytes())
            argv += ["-machine", "q35"]
            argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
            argv += ["-drive", f"if=pflash,format=raw,file={vars_copy}"]
        for i, disk in enumerate(self.disks):
            argv += ["-drive", f"file={disk},format=raw,if=virtio,index={i}"]
        for cd in self.cdroms:
            argv += ["-drive", f"file={cd},format=raw,media=cdrom,readonly=on"]
        argv += ["-boot", "d" if self.boot_from_cd else "c"]
        return argv

    def run_until_poweroff(self, timeout: float, name: str = "serial") -> str:
        """Boot, wait for the guest to power off (or the timeout), return the serial console text."""
        log = self.workdir / f"{name}.log"
        log.write_bytes(b"")
        proc = subprocess.Popen(
            self.argv(log), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return log.read_bytes().decode(errors="replace")
