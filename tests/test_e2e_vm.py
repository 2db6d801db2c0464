"""The whole promise, end to end under QEMU (TCG): a bootable source system is backed up by
`mkrec build` into several ISO volumes; the rescue CD boots with every volume attached and a blank
disk, restores unattended (autorun, under UEFI: with the firmware boot entry) and powers off; the
host checks the disk; then the restored disk boots on its own — under SeaBIOS and under OVMF — and
prints the source system's marker."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from qemu import Guest, drive_args, hot_unplug, qemu_argv, restored_disk_boots
from sourcesys import MARKER, SourceSystem, build_source_system
from support import LoopDisks, sh

from mkrec.build import build
from mkrec.config import config_from_dict
from mkrec.context import Context

RESTORE_TIMEOUT = 900  # rescue boot ~25 s + restore; generous for a loaded two-core machine
BOOT_TIMEOUT = 240


def back_up(
    system: SourceSystem,
    workdir: Path,
    media: str,
    autorun: str = "start-restore",
    security: dict[str, object] | None = None,
) -> list[Path]:
    """mkrec build, mode cd: the ISO volumes of the set, volume 1 first; `security`: [security]."""
    # The host kernel has no vfat, so an ESP is unmounted here: image it, as [source] raw.
    raw = [system.esp_dev] if system.esp_dev else []
    config = config_from_dict(
        {
            "build": {"mode": "cd", "output": str(workdir / "out")},
            "media": {"size": media},
            "source": {"root": str(system.root), "disks": [system.disk], "raw": raw},
            "rescue": {"console": "ttyS0,115200", "timeout": 1, "autorun": autorun},
            "restore": {"after": "poweroff"},
            "security": security or {},
        }
    )
    build(Context(config, staging=workdir / "isofs", hostname="e2e", started=datetime(2026, 11, 23, 7, 12)))
    return sorted((workdir / "out").rglob("*.iso"), key=lambda p: int(p.stem.rsplit("vol", 1)[1]))


def facts(dev: str) -> dict[str, str]:
    """What must survive a restore: table ids, partition UUIDs/types, filesystem UUIDs/labels."""
    dump = sh("sfdisk", "--dump", dev)
    table = [line.split(":", 1)[1].strip() for line in dump.splitlines() if line.startswith(dev)]
    out = {"label-id": next(line for line in dump.splitlines() if line.startswith("label-id"))}
    for i, entry in enumerate(table, start=1):
        out[f"part{i}"] = entry
        node = f"{dev}p{i}"
        out[f"fs{i}"] = sh("blkid", "-o", "export", "-s", "UUID", "-s", "LABEL", "-s", "TYPE", node)
    return out


def listing(root: Path) -> list[str]:
    """Every entry of one filesystem with mode, size and link target, sorted (directory order differs
    on a freshly written filesystem); lost+found is mkfs's, not data."""
    out = sh("find", root, "-xdev", "-path", f"{root}/lost+found", "-prune", "-o", "-printf", "%P %m %s %l\n")
    return sorted(out.splitlines())


@pytest.mark.vm
def test_backup_boot_rescue_restore_unattended_and_boot_the_restored_disk(
    tmp_path: Path, loop_disks: LoopDisks
) -> None:
    system = build_source_system(loop_disks, tmp_path, "gpt", marker="e2e-gpt")
    volumes = back_up(system, tmp_path, media="100M")
    assert len(volumes) >= 2, volumes  # rescue (~70 MiB) + ~50 MiB of data
    source_facts = facts(system.disk)
    assert system.esp_dev is not None
    esp_digest = hashlib.sha256(Path(system.esp_dev).read_bytes()).hexdigest()
    tree = listing(system.root)

    target = tmp_path / "target.img"
    sh("truncate", "-s", "256M", target)
    # The rescue CD boots under UEFI here, so the restore also makes the firmware's boot entry.
    guest = Guest(
        qemu_argv(drive_args([target], volumes, boot_cd=True), tmp_path, uefi=True, memory="1536"),
        tmp_path / "restore.log",
    )
    try:
        guest.expect(r"Restore plan", timeout=300)
        guest.expect(r"Restore finished", timeout=RESTORE_TIMEOUT)
        assert guest.wait_poweroff(120), "the rescue system did not power off after the restore"
    finally:
        guest.kill()
    console = guest.text()
    assert "mkrec: error" not in console
    assert re.search(
        r"NVRAM boot entry made: .* \(entries labelled 'mkrec restored': Boot[0-9A-F]{4}\)", console
    )
    assert "mkrec restored".encode("utf-16-le") in (tmp_path / "OVMF_VARS.fd").read_bytes()

    # Restored again (onto another blank disk) with the same NVRAM: still exactly one entry.
    again = tmp_path / "again.img"
    sh("truncate", "-s", "256M", again)
    argv = qemu_argv(
        drive_args([again], volumes, boot_cd=True), tmp_path, uefi=True, memory="1536", keep_nvram=True
    )
    guest = Guest(argv, tmp_path / "restore-again.log")
    try:
        guest.expect(r"Restore finished", timeout=RESTORE_TIMEOUT)
        assert guest.wait_poweroff(120), "the rescue system did not power off after the second restore"
    finally:
        guest.kill()
    console = guest.text()
    assert re.search(
        r"NVRAM boot entry Boot[0-9A-F]{4} \(mkrec restored\) of an earlier restore removed", console
    )
    assert re.search(r"\(entries labelled 'mkrec restored': Boot[0-9A-F]{4}\)", console), console[-2000:]
    again.unlink()

    # The host checks the restored disk before booting it.
    restored = loop_disks.attach(target)
    loop_disks.rescan(restored)
    assert facts(restored) == {k: v.replace(system.disk, restored) for k, v in source_facts.items()}
    assert hashlib.sha256(Path(f"{restored}p2").read_bytes()).hexdigest() == esp_digest
    mnt = loop_disks.mount(f"{restored}p3", tmp_path / "restored")
    loop_disks.mount(f"{restored}p4", mnt / "data")
    assert (mnt / "etc" / "marker").read_text() == "e2e-gpt\n"
    assert (mnt / "var" / "log" / "mkrec-restore.log").is_file()
    ignore = ("boot/grub", "var/log/mkrec-restore")  # grub-install rewrites its files; the log is new
    assert [x for x in listing(mnt) if not x.startswith(ignore)] == [
        x for x in tree if not x.startswith(ignore)
    ]
    assert (mnt / "data" / "hello.txt").read_text() == "data partition content\n"
    for done in (mnt / "data", mnt):
        sh("umount", done)
        loop_disks.mounts.remove(done)
    loop_disks.detach(restored)

    # The restored disk boots on its own, on BIOS and on UEFI.
    for uefi in (False, True):
        restored_disk_boots(target, tmp_path, f"{MARKER} e2e-gpt", BOOT_TIMEOUT, uefi=uefi)


@pytest.mark.vm
def test_mbr_system_cloned_onto_a_larger_disk_from_the_rescue_shell_boots(
    tmp_path: Path, loop_disks: LoopDisks
) -> None:
    from mkrec.rescue.rdbase import MARKER as RESCUE_READY

    system = build_source_system(loop_disks, tmp_path, "dos", marker="e2e-mbr")
    volumes = back_up(system, tmp_path, media="100M", autorun="")
    saved = Path(system.disk).name
    source_sizes = [
        int(x) for x in sh("lsblk", "-b", "-n", "-o", "SIZE", system.root_dev, system.data_dev).split()
    ]

    target = tmp_path / "larger.img"
    sh("truncate", "-s", "384M", target)  # 1.5 times the source disk
    guest = Guest(
        qemu_argv(drive_args([target], volumes, boot_cd=True), tmp_path, memory="1536"),
        tmp_path / "clone.log",
    )
    try:
        guest.expect(RESCUE_READY, timeout=300)
        code, out = guest.command(f"clone-disk --yes --map {saved}=/dev/vda", timeout=RESTORE_TIMEOUT)
        assert code == 0, out[-3000:]
        guest.send("poweroff -f")
        assert guest.wait_poweroff(120)
    finally:
        guest.kill()

    restored = loop_disks.attach(target)
    loop_disks.rescan(restored)
    sizes = [int(x) for x in sh("lsblk", "-b", "-n", "-o", "SIZE", f"{restored}p1", f"{restored}p2").split()]
    assert all(new > old * 1.3 for new, old in zip(sizes, source_sizes, strict=True)), (sizes, source_sizes)
    for old, new in ((system.root_dev, f"{restored}p1"), (system.data_dev, f"{restored}p2")):
        assert sh("blkid", "-s", "UUID", "-o", "value", new) == sh("blkid", "-s", "UUID", "-o", "value", old)
    loop_disks.detach(restored)

    restored_disk_boots(target, tmp_path, f"{MARKER} e2e-mbr", BOOT_TIMEOUT)


@pytest.mark.vm
def test_power_lost_during_the_restore_resumes_on_the_next_boot_and_the_disk_boots(
    tmp_path: Path, loop_disks: LoopDisks
) -> None:
    """The fault suite's power loss: the virtual machine is killed while a file system unpacks; the
    rescue CD boots again, the unattended restore reads the journal it left on the target's root file
    system, skips what finished and completes; the data is whole and the restored disk boots.
    The cut must land inside the step: /data holds 24 MiB that does not compress and the first run's
    target writes at 4 MiB/s, so the step's closing sync takes seconds, not the serial line's latency."""
    system = build_source_system(loop_disks, tmp_path, "gpt", marker="e2e-power")
    payload = os.urandom(24 << 20)
    (system.root / "data" / "payload.bin").write_bytes(payload)
    sh("sync")
    volumes = back_up(system, tmp_path, media="100M")
    target = tmp_path / "target.img"
    sh("truncate", "-s", "256M", target)
    guest = Guest(
        qemu_argv(drive_args([target], volumes, boot_cd=True, write_bps=4 << 20), tmp_path, memory="1536"),
        tmp_path / "cut.log",
    )
    try:
        guest.expect(r"==> Unpack /data", timeout=RESTORE_TIMEOUT)
    finally:
        guest.kill()  # the power cord: nothing is synced, the guest's page cache is lost
    assert "Unpack /data: done" not in guest.text()

    guest = Guest(
        qemu_argv(drive_args([target], volumes, boot_cd=True), tmp_path, memory="1536"),
        tmp_path / "resume.log",
    )
    try:
        guest.expect(r"Restore finished", timeout=RESTORE_TIMEOUT)
        assert guest.wait_poweroff(120)
    finally:
        guest.kill()
    console = guest.text()
    assert "mkrec: error" not in console
    assert re.search(r"Resuming: \d+ step\(s\) already done", console), console[-3000:]
    assert "Unpack /: finished in an earlier run, skipped" in console
    assert "==> Unpack /data" in console  # the step that was cut is done again, whole

    restored = loop_disks.attach(target)
    loop_disks.rescan(restored)
    copy = subprocess.run(
        ["debugfs", "-R", "cat /payload.bin", f"{restored}p4"], capture_output=True, check=True
    ).stdout
    assert hashlib.sha256(copy).digest() == hashlib.sha256(payload).digest()
    loop_disks.detach(restored)

    restored_disk_boots(target, tmp_path, f"{MARKER} e2e-power", BOOT_TIMEOUT)


@pytest.mark.vm
def test_the_target_disk_pulled_out_mid_restore_stops_with_one_line(
    tmp_path: Path, loop_disks: LoopDisks
) -> None:
    """The fault suite's removed target: the disk is unplugged (QEMU's device_del, the guest's PCI
    hotplug) while a file system unpacks. The restore stops with one line naming the step; no
    traceback; the volumes and the rescue system are unharmed (the shell is still there)."""
    system = build_source_system(loop_disks, tmp_path, "gpt", marker="e2e-pull")
    volumes = back_up(system, tmp_path, media="100M")
    target = tmp_path / "target.img"
    sh("truncate", "-s", "256M", target)
    monitor = tmp_path / "monitor.sock"
    disk = [
        "-drive",
        f"if=none,id=t0,file={target},format=raw",
        "-device",
        "virtio-blk-pci,drive=t0,id=target0",
    ]
    argv = qemu_argv([*disk, *drive_args([], volumes, boot_cd=True)], tmp_path, memory="1536")
    argv[argv.index("-monitor") + 1] = f"unix:{monitor},server,nowait"
    guest = Guest(argv, tmp_path / "pulled.log")
    try:
        guest.expect(r"==> Unpack /", timeout=RESTORE_TIMEOUT)
        hot_unplug(monitor, "target0")
        error = guest.expect(r"mkrec: error: [^\n]*", timeout=300).group(0)
        code, out = guest.command("echo the shell is alive", timeout=120)
        assert code == 0 and "the shell is alive" in out
    finally:
        guest.kill()
    console = guest.text()
    assert "Traceback" not in console
    # Where the disk went away decides the words: tar's own complaint about a file (not its closing
    # summary), or the system's error when mkrec itself wrote next (the journal, fstab).
    assert re.search(r"step '[^']+' failed: (tar failed \(exit 2\): tar: \./|Input/output error)", error), (
        error
    )
    assert "Exiting with failure status" not in error
