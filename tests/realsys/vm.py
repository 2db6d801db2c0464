"""The guests of one matrix run, one at a time under QEMU TCG: the installer (virtme-ng), the
source system backing itself up with mkrec, the rescue disc restoring onto blank disks, and the
restored disks booting alone. Each phase returns its seconds or raises StepFailed with the line
that shows why."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qemu import Guest
from support import VENV_BIN, kernel_for_guests

from realsys import install
from realsys.cells import System

OVMF = Path("/usr/share/OVMF")
# Firmware code and the variable store each guest starts from.
FIRMWARE = {
    "uefi": (OVMF / "OVMF_CODE_4M.fd", OVMF / "OVMF_VARS_4M.fd"),
    "uefisb": (OVMF / "OVMF_CODE_4M.secboot.fd", OVMF / "OVMF_VARS_4M.ms.fd"),
}
# One vCPU: with two, restored systems hung in soft lockups (lvm, systemd-random-seed) under TCG
# on this loaded two-core host.
SMP = os.environ.get("MKREC_MATRIX_SMP", "1")
SOURCE_BOOT_TIMEOUT = 600
BUILD_TIMEOUT = 3600
RESTORE_TIMEOUT = 3600
TARGET_BOOT_TIMEOUT = 600
RESCUE_READY = "mkrec rescue system ready"  # mkrec.rescue.rdbase.MARKER
MARKER_RE = re.compile(install.MARKER + r" host=\S+ token=\S+ files=\d+ sum=\w+")
# Lines that say what went wrong, searched from the end of a log when a step fails.
ERROR_RE = re.compile(
    r"(mkrec: error.*|Traceback.*|Kernel panic.*|.*[Ee]rror.*|.*FAIL.*|Gave up waiting.*|"
    r".*not found.*|.*cannot .*|.*No such .*|.*unable.*|grub rescue>.*|ALERT!.*)"
)


class StepFailed(Exception):
    def __init__(self, step: str, line: str, log: Path | None = None) -> None:
        super().__init__(f"{step}: {line}")
        self.step = step
        self.line = line
        self.log = log


def evidence(text: str, fallback: str = "") -> str:
    """The last line of a log that looks like an error, else its last non-empty line."""
    lines = [ln.strip() for ln in text.replace("\r", "").splitlines() if ln.strip()]
    for line in reversed(lines):
        if ERROR_RE.fullmatch(line) and "echo" not in line:
            return line[:300]
    return (lines[-1] if lines else fallback)[:300]


@dataclass
class Disks:
    """The raw disk images a guest gets, on virtio in this order (vda, vdb, ...)."""

    images: list[Path]

    def args(self) -> list[str]:
        out: list[str] = []
        for i, image in enumerate(self.images):
            out += ["-drive", f"file={image},format=raw,if=virtio,index={i}"]
        return out


def qemu(
    firmware: str, nvram: Path | None, media: list[str], memory: str = "2048", extra: list[str] | None = None
) -> list[str]:
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-smp", SMP, "-m", memory]
    argv += ["-display", "none", "-net", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"]
    if firmware != "bios":
        assert nvram is not None
        code, _ = FIRMWARE[firmware]
        argv += ["-machine", "q35,smm=on" if firmware == "uefisb" else "q35"]
        if firmware == "uefisb":
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}"]
        argv += ["-drive", f"if=pflash,format=raw,unit=1,file={nvram}"]
    return argv + media + (extra or [])


def fresh_nvram(firmware: str, path: Path) -> Path | None:
    if firmware == "bios":
        return None
    shutil.copyfile(FIRMWARE[firmware][1], path)
    return path


def run_installer(system: System, workdir: Path, tarball: Path, token: str) -> float:
    """The root tree and its images on the host, then partitions, stack and boot loader in a
    virtme-ng guest."""
    started = time.monotonic()
    log = workdir / "install.log"
    ids = install.Ids.new()
    try:
        install.prepare(system, workdir, tarball, token, ids)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise StepFailed("install (host)", str(exc), log) from None
    script = workdir / "install.sh"
    script.write_text(install.guest_script(system, workdir, ids))
    found = kernel_for_guests()
    assert found is not None, "no kernel for virtme-ng guests (make deps installs linux-image-amd64)"
    argv = [
        "vng", "--run", str(found[0]), "--disable-kvm", "--cpus", "2", "--memory", "2G",
        "--rwdir", str(workdir),
        *(arg for name, _ in install.guest_disks(system, workdir) for arg in ("--disk", str(workdir / name))),
        "--", f"bash {script}",
    ]  # fmt: skip
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    # A pipe, not the file: QEMU reopens its stdout path (/proc/self/fd/1) and would truncate it.
    deadline = time.monotonic() + 1800
    with open(log, "a") as out:
        out.write(f"--- guest: {script}\n")
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line.decode(errors="replace"))
            out.flush()
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait()
    text = log.read_text()
    if "REALSYS-INSTALL-DONE" not in text.split("--- guest:")[-1]:
        raise StepFailed("install (guest)", evidence(text, f"exit {proc.returncode}"), log)
    for image in ("root.img", "boot.img"):
        (workdir / image).unlink(missing_ok=True)
    return time.monotonic() - started


def _expect(guest: Guest, step: str, pattern: str, timeout: float, since: int = 0) -> re.Match[str]:
    try:
        return guest.expect(pattern, timeout, since)
    except AssertionError:
        raise StepFailed(
            step, evidence(guest.text(), f"no {pattern!r} within {timeout:.0f} s"), guest.log
        ) from None


def type_keys(guest: Guest, text: str) -> None:
    """Type like a person: a few characters at a time (a burst into the UART lost keys here)."""
    assert guest.proc.stdin is not None
    for i in range(0, len(text), 8):
        guest.proc.stdin.write(text[i : i + 8].encode())
        guest.proc.stdin.flush()
        time.sleep(0.05)


def shell(
    guest: Guest, step: str, line: str, timeout: float, answers: tuple[tuple[str, str], ...] = ()
) -> str:
    """Run a command line at the guest's shell prompt, typing each answer when its prompt (a
    regex) shows; its output, or StepFailed on a non-zero exit."""
    guest.serial += 1
    begin, end = f"BEGIN-{guest.serial}", f"END-{guest.serial}"
    since = len(guest.text())
    type_keys(guest, f"echo {begin}; {line}; echo {end}-$?\r")
    start = _expect(guest, step, rf"(?m)(?:^|\r){begin}\r?$", 60, since)
    at = start.end()
    for prompt, answer in answers:
        seen = _expect(guest, step, rf"{prompt}|{end}-\d+", timeout, at)
        if seen.group(0).startswith(end):
            break  # the command ended without asking
        at = seen.end()
        time.sleep(0.5)
        type_keys(guest, answer + "\r")
    done = _expect(guest, step, rf"{end}-(\d+)", timeout, at)
    text = guest.text()[start.end() : done.start()].replace("\r", "").strip()
    if done.group(1) != "0":
        raise StepFailed(step, evidence(text, f"exit {done.group(1)}"), guest.log)
    return text


def _unlock_luks(guest: Guest, step: str, timeout: float) -> None:
    """Type the passphrase at cryptsetup's initramfs prompt, as a person at the console would."""
    _expect(guest, step, r"Please unlock disk \S+:", timeout)
    time.sleep(1)
    guest.send(install.PASSPHRASE)


@dataclass
class Backup:
    marker: str  # the source system's marker line
    volumes: list[Path]
    boot_seconds: float
    build_seconds: float


def run_backup(system: System, workdir: Path) -> Backup:
    """Boot the installed source system, log in on its serial console and run mkrec build into the
    9p share at /var/lib/mkrec, then power it off."""
    out = workdir / "set"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    disks = Disks([workdir / f"src-{i}.img" for i in range(system.disks)])
    share = ["-virtfs", f"local,path={out},mount_tag=mkrecout,security_model=none,id=mkrecout"]
    nvram = fresh_nvram(system.firmware, workdir / "source-vars.fd")
    guest = Guest(qemu(system.firmware, nvram, disks.args(), extra=share), workdir / "source.log")
    step = "source boot"
    try:
        if system.stack == "luks":
            _unlock_luks(guest, step, SOURCE_BOOT_TIMEOUT)
        marker = _expect(guest, step, MARKER_RE.pattern, SOURCE_BOOT_TIMEOUT).group(0)
        _expect(guest, step, rf"root@{system.hostname}:~# ", 120)
        boot_seconds = time.monotonic() - guest.started
        time.sleep(2)
        shell(
            guest,
            "mount the share",
            "mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 mkrecout /var/lib/mkrec",
            120,
        )
        if system.stack == "raid1":  # into source.log: whether md0 came up whole (CI once saw it not)
            shell(guest, "raid state", "cat /proc/mdstat", 60)
        started = time.monotonic()
        try:
            shell(
                guest,
                "mkrec build",
                "mkrec --config /etc/mkrec/Config.toml build --mode cd >/root/build.log 2>&1",
                BUILD_TIMEOUT,
            )
        except StepFailed as exc:
            exc.line = evidence(shell(guest, "mkrec build", "tail -n 30 /root/build.log", 60), exc.line)
            raise
        finally:
            build_seconds = time.monotonic() - started
            shell(guest, "copy the build log", "cp /root/build.log /var/lib/mkrec/", 120)
        type_keys(guest, "umount /var/lib/mkrec; poweroff\r")
        if not guest.wait_poweroff(300):
            raise StepFailed("source poweroff", "the source system did not power off in 300 s", guest.log)
    finally:
        guest.kill()
    volumes = sorted(out.rglob("*.iso"), key=lambda p: int(p.stem.rsplit("vol", 1)[1]))
    if not volumes:
        raise StepFailed("mkrec build", "no *.iso in the set directory", out / "build.log")
    return Backup(marker, volumes, boot_seconds, build_seconds)


def blank_targets(system: System, workdir: Path, size: int, tag: str) -> Disks:
    images = []
    for i in range(system.disks):
        image = workdir / f"target-{tag}-{i}.img"
        image.unlink(missing_ok=True)
        with open(image, "wb") as f:
            f.truncate(size)
        images.append(image)
    return Disks(images)


def run_restore(system: System, workdir: Path, backup: Backup, targets: Disks, tag: str) -> float:
    """Boot volume 1 (the other volumes attached) with the blank targets; the default boot entry
    restores unattended and powers off."""
    nvram = fresh_nvram(system.firmware, workdir / f"target-{tag}-vars.fd")
    cds: list[str] = []
    for volume in backup.volumes:
        cds += ["-drive", f"file={volume},format=raw,media=cdrom,readonly=on"]
    guest = Guest(
        qemu(system.firmware, nvram, targets.args() + cds + ["-boot", "d"], memory="2048"),
        workdir / f"restore-{tag}.log",
    )
    step = "restore"
    try:
        # An error drops the rescue system to its shell: stop waiting there.
        for pattern, timeout in ((r"Restore plan", 900), (r"Restore finished", RESTORE_TIMEOUT)):
            done = _expect(guest, step, rf"{pattern}|mkrec: error.*", timeout)
            if done.group(0).startswith("mkrec: error"):
                raise StepFailed(step, done.group(0).strip(), guest.log)
        if not guest.wait_poweroff(300):
            raise StepFailed(step, "the rescue system did not power off after the restore", guest.log)
    finally:
        guest.kill()
    if "mkrec: error" in guest.text():
        raise StepFailed(step, evidence(guest.text()), guest.log)
    return time.monotonic() - guest.started


LUKS_ANSWERS = (
    (r"New passphrase for the LUKS container", install.PASSPHRASE),
    (r"The same passphrase again", install.PASSPHRASE),
)


def run_clone(system: System, workdir: Path, backup: Backup, targets: Disks, tag: str) -> float:
    """From the rescue shell, as a person would: choose it at the boot menu, then clone-disk each
    saved disk onto the target of the same name (another size; one clone-disk restores all of a
    RAID's disks), or start-restore (same size), and power off. LUKS asks the new passphrase in
    both, which the test types."""
    nvram = fresh_nvram(system.firmware, workdir / f"target-{tag}-vars.fd")
    cds: list[str] = []
    for volume in backup.volumes:
        cds += ["-drive", f"file={volume},format=raw,media=cdrom,readonly=on"]
    guest = Guest(
        qemu(system.firmware, nvram, targets.args() + cds + ["-boot", "d"], memory="2048"),
        workdir / f"restore-{tag}.log",
    )
    try:
        # isolinux's menu.c32 and GRUB both title the menu with the host; Ctrl-P moves up in both,
        # Enter boots. Not the Up arrow: on a loaded host GRUB took its ESC alone and typed "[A".
        # The rescue shell is the first entry and Ctrl-P stops there: more presses than needed.
        _expect(guest, "rescue boot menu", rf"mkrec rescue[^\n]*{system.hostname}|Unattended restore", 300)
        for _ in range(5):
            type_keys(guest, "\x10")
            time.sleep(0.4)
        type_keys(guest, "\r")
        _expect(guest, "rescue boot", RESCUE_READY, 900)
        time.sleep(2)
        answers = LUKS_ANSWERS if system.stack == "luks" else ()
        if tag == "same":  # as a person: confirm the plan, type the new passphrase twice
            confirm = ((r"Type yes to erase the disks above", "yes"),)
            shell(guest, "start-restore", "start-restore", RESTORE_TIMEOUT, confirm + answers)
        if tag != "same":  # every saved disk onto the target of its name, in one clone
            disks = [f"vd{chr(ord('a') + i)}" for i in range(system.disks)]
            line = "clone-disk --yes " + " ".join(f"--map {d}=/dev/{d}" for d in disks)
            shell(guest, "clone-disk", line, RESTORE_TIMEOUT, answers)
        type_keys(guest, "sync; poweroff -f\r")
        if not guest.wait_poweroff(300):
            raise StepFailed("clone-disk", "the rescue system did not power off", guest.log)
    finally:
        guest.kill()
    return time.monotonic() - guest.started


def run_target_boot(system: System, workdir: Path, targets: Disks, tag: str) -> tuple[str, float]:
    """Boot the restored disks alone (with the NVRAM the restore wrote); their marker line."""
    nvram = workdir / f"target-{tag}-vars.fd"
    guest = Guest(
        qemu(system.firmware, nvram if system.uefi else None, targets.args()), workdir / f"boot-{tag}.log"
    )
    step = "restored boot"
    try:
        if system.stack == "luks":
            _unlock_luks(guest, step, TARGET_BOOT_TIMEOUT)
        marker = _expect(guest, step, MARKER_RE.pattern, TARGET_BOOT_TIMEOUT).group(0)
    finally:
        guest.kill()
    return marker, time.monotonic() - guest.started


def sh_quiet(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True).stdout
