"""QEMU guests (TCG) for VM tests: one argv builder and one driver that reads the serial console
(stdio) and can type into it."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot enforced: the SMM build of the firmware, and variables with Microsoft's keys enrolled
# (shim is signed by Microsoft's UEFI CA).
OVMF_CODE_SECBOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS_MS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")


class Guest:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.buffer = b""
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.serial = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log, "wb") as log:
            while chunk := self.proc.stdout.read1(4096):
                log.write(chunk)
                log.flush()
                with self.lock:
                    self.buffer += chunk

    def text(self) -> str:
        with self.lock:
            return self.buffer.decode(errors="replace")

    def expect(self, pattern: str, timeout: float, since: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            found = regex.search(self.text(), since)
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = self.text()[-3000:]
        raise AssertionError(
            f"no {pattern!r} on the serial console within {timeout:.0f} s; last output:\n{tail}"
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def command(self, line: str, timeout: float = 120) -> tuple[int, str]:
        """Run a shell command line in the guest; returns (exit status, output)."""
        self.serial += 1
        begin, end = f"BEGIN-{self.serial}", f"END-{self.serial}"
        since = len(self.text())
        self.send(f"echo {begin}; {line}; echo {end}-$?")
        # The typed line is echoed with "$?" and "; " around the markers: only real output matches.
        start = self.expect(rf"(?m)^{begin}\r?$", timeout, since)
        done = self.expect(rf"{end}-(\d+)", timeout, start.end())
        return int(done.group(1)), self.text()[start.end() : done.start()].replace("\r", "").strip()

    def wait_poweroff(self, timeout: float) -> bool:
        """Wait for the guest to power off (QEMU exits: -no-reboot); False on timeout."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        self.reader.join(timeout=5)
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=5)


def qemu_argv(
    media: list[str],
    workdir: Path,
    uefi: bool = False,
    memory: str = "1024",
    secure_boot: bool = False,
    keep_nvram: bool = False,
    net: Sequence[str] = ("-net", "none"),
) -> list[str]:
    """keep_nvram: UEFI with the variables the last UEFI guest in workdir left (its boot entries).
    net: the network devices (none by default, so the firmware does not try PXE first)."""
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", memory, "-display", "none", *net]
    argv += ["-serial", "stdio", "-monitor", "none", "-no-reboot"]
    if secure_boot:
        vars_copy = workdir / "OVMF_VARS.ms.fd"
        vars_copy.write_bytes(OVMF_VARS_MS.read_bytes())
        argv += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE_SECBOOT}"]
        argv += ["-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    elif uefi:
        vars_copy = workdir / "OVMF_VARS.fd"
        if not (keep_nvram and vars_copy.exists()):
            vars_copy.write_bytes(OVMF_VARS.read_bytes())
        argv += ["-machine", "q35"]
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
        argv += ["-drive", f"if=pflash,format=raw,file={vars_copy}"]
    return argv + media


def hot_unplug(monitor: Path, device: str) -> str:
    """Pull a device out of a running guest (QEMU's human monitor on a unix socket: `-monitor
    unix:PATH,server,nowait`), as a disk whose cable is pulled; returns what the monitor said."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(monitor))
        sock.settimeout(5)
        sock.sendall(f"device_del {device}\n".encode())
        time.sleep(1)
        try:
            return sock.recv(65536).decode(errors="replace")
        except TimeoutError:
            return ""


def restored_disk_boots(target: Path, workdir: Path, marker: str, timeout: float, uefi: bool = False) -> None:
    """The restored disk boots on its own until its system prints marker on the serial console."""
    log = workdir / f"boot-{'uefi' if uefi else 'bios'}.log"
    guest = Guest(qemu_argv(drive_args([target]), workdir, uefi=uefi), log)
    try:
        guest.expect(marker, timeout=timeout)
    finally:
        guest.kill()


def drive_args(
    disks: Sequence[Path], cdroms: Sequence[Path] = (), boot_cd: bool = False, write_bps: int | None = None
) -> list[str]:
    """Disks on virtio, CDs on the IDE bus (up to four), booting from the first CD or disk.
    write_bps: the disks write at most this many bytes per second (QEMU's throttling)."""
    limit = f",throttling.bps-write={write_bps}" if write_bps else ""
    args: list[str] = []
    for i, disk in enumerate(disks):
        args += ["-drive", f"file={disk},format=raw,if=virtio,index={i}{limit}"]
    for cd in cdroms:
        args += ["-drive", f"file={cd},format=raw,media=cdrom,readonly=on"]
    return [*args, "-boot", "d" if boot_cd else "c"]
