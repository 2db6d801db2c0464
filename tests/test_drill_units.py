"""The drill's decisions without a virtual machine: firmware, disks from the layout, the exact QEMU
command lines, the scratch directory's lock and space check, the report, and the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from mkrec import drill as drill_module
from mkrec.cli import main
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.drill.console import Guest, Seen
from mkrec.drill.machine import (
    DRILL_CMDLINE,
    Accel,
    Firmware,
    Machine,
    choose_firmware,
    find_ovmf,
    first_boot_argv,
    rescue_argv,
    virtual_disks,
)
from mkrec.drill.report import Phase, Report, lines_around, render, report_paths
from mkrec.drill.scratch import SLACK, needed_space, scratch
from mkrec.drill.setfiles import DrillSet, newest_set, open_drill_set
from mkrec.errors import MkrecError
from mkrec.layout.model import Disk, Layout

LAYOUT = Layout(
    hostname="pc1",
    captured="2026-12-01T06:00:00",
    disks=(
        Disk(name="sda", size=500107862016, model="Samsung SSD 860", serial="S3Z9NB0K123456 X/1"),
        Disk(name="nvme0n1", size=1000, serial="ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ),
)


# ---- firmware and disks ----


def test_firmware_follows_the_machine_unless_chosen(tmp_path: Path) -> None:
    assert choose_firmware(None, tmp_path / "efi") is Firmware.BIOS
    (tmp_path / "efi").mkdir()
    assert choose_firmware(None, tmp_path / "efi") is Firmware.UEFI
    assert choose_firmware("bios", tmp_path / "efi") is Firmware.BIOS
    assert choose_firmware("uefi", tmp_path / "none") is Firmware.UEFI


def test_missing_ovmf_is_one_line_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MkrecError, match="OVMF") as exc:
        find_ovmf(((tmp_path / "CODE.fd", tmp_path / "VARS.fd"),))
    assert exc.value.hint == "apt-get install ovmf, or --firmware bios"
    (tmp_path / "CODE.fd").touch()
    (tmp_path / "VARS.fd").touch()
    assert find_ovmf(((tmp_path / "CODE.fd", tmp_path / "VARS.fd"),)) == (
        tmp_path / "CODE.fd",
        tmp_path / "VARS.fd",
    )


def test_virtual_disks_have_the_saved_sizes_and_serials(tmp_path: Path) -> None:
    disks = virtual_disks(LAYOUT, tmp_path)
    assert [(d.saved, d.size, d.serial, d.path.name) for d in disks] == [
        ("sda", 500107862016, "S3Z9NB0K123456X1", "sda.img"),
        # rounded up to a whole sector; a serial is at most 20 bytes for virtio-blk
        ("nvme0n1", 1024, "ABCDEFGHIJKLMNOPQRST", "nvme0n1.img"),
    ]


# ---- QEMU command lines, exact ----


def test_rescue_boot_argv_bios_tcg(tmp_path: Path) -> None:
    m = Machine(Accel.TCG, Firmware.BIOS, 1536, 2)
    disks = virtual_disks(LAYOUT, Path("/s"))
    volumes = (Path("/set/v1.iso"), Path("/set/v2.iso"))
    dset = DrillSet(Path("/set"), "CDrec-x", volumes[0], volumes, None, "", LAYOUT, 0)
    argv = rescue_argv(m, disks, Path("/s/k"), Path("/s/i"), dset)
    assert argv == [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "1536", "-smp", "2", "-display", "none",
        "-net", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
        "-drive", "if=none,id=disk0,file=/s/sda.img,format=raw,cache=unsafe",
        "-device", "virtio-blk-pci,drive=disk0,serial=S3Z9NB0K123456X1",
        "-drive", "if=none,id=disk1,file=/s/nvme0n1.img,format=raw,cache=unsafe",
        "-device", "virtio-blk-pci,drive=disk1,serial=ABCDEFGHIJKLMNOPQRST",
        "-device", "virtio-scsi-pci,id=scsi0",
        "-drive", "if=none,id=vol1,file=/set/v1.iso,format=raw,media=cdrom,readonly=on",
        "-device", "scsi-cd,bus=scsi0.0,drive=vol1",
        "-drive", "if=none,id=vol2,file=/set/v2.iso,format=raw,media=cdrom,readonly=on",
        "-device", "scsi-cd,bus=scsi0.0,drive=vol2",
        "-kernel", "/s/k", "-initrd", "/s/i",
        "-append", "quiet console=ttyS0,115200 panic=5 mkrec.run=unattended",
    ]  # fmt: skip
    assert DRILL_CMDLINE.split()[-1] == "mkrec.run=unattended"


def test_a_tape_set_is_shared_read_only_and_named_on_the_command_line() -> None:
    m = Machine(Accel.TCG, Firmware.BIOS, 1536, 2)
    dset = DrillSet(
        Path("/t"), "CDrec-x", Path("/o/r.iso"), (), Path("/t"), "/run/mkrec/backup/tape", LAYOUT, 0
    )
    argv = rescue_argv(m, [], Path("/s/k"), Path("/s/i"), dset)
    assert "scsi-cd" not in " ".join(argv)  # the rescue disc's kernel boots directly: no CD drive
    assert argv[argv.index("-fsdev") + 1] == "local,id=set,path=/t,security_model=none,readonly=on"
    assert argv[argv.index("-fsdev") + 3] == "virtio-9p-pci,fsdev=set,mount_tag=mkrecset"
    assert argv[-1].endswith(" mkrec.run=unattended mkrec.share=mkrecset mkrec.source=/run/mkrec/backup/tape")


def test_first_boot_argv_uefi_kvm_has_the_disks_alone() -> None:
    m = Machine(Accel.KVM, Firmware.UEFI, 2048, 1, Path("/ovmf/CODE.fd"), Path("/s/VARS.fd"))
    disks = virtual_disks(Layout("pc1", "x", disks=(Disk("vda", 4096),)), Path("/s"))
    assert first_boot_argv(m, disks) == [
        "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "2048", "-smp", "1",
        "-display", "none", "-net", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
        "-machine", "q35",
        "-drive", "if=pflash,format=raw,readonly=on,file=/ovmf/CODE.fd",
        "-drive", "if=pflash,format=raw,file=/s/VARS.fd",
        "-drive", "if=none,id=disk0,file=/s/vda.img,format=raw,cache=unsafe",
        "-device", "virtio-blk-pci,drive=disk0",
    ]  # fmt: skip


# ---- scratch directory ----


def test_scratch_is_locked_checked_and_removed(tmp_path: Path) -> None:
    work = tmp_path / "drill"
    with scratch(work, need=1) as run_dir:
        (run_dir / "disk.img").write_bytes(b"x")
        assert (work / "drill.lock").read_text() == f"{os.getpid()}\n"
        # A second drill (another process: flock is per open file) refuses, naming the first.
        code = (
            "import sys; from pathlib import Path; from mkrec.drill.scratch import scratch\n"
            "from mkrec.errors import MkrecError\n"
            "try:\n  with scratch(Path(sys.argv[1]), 1): pass\n"
            "except MkrecError as e: print(e.message)\n"
        )
        out = subprocess.run([sys.executable, "-c", code, str(work)], capture_output=True, text=True)
        assert out.stdout.strip() == f"another mkrec drill (pid {os.getpid()}) is running in {work}"
    assert not work.exists(), "made by the drill, removed by the drill"


def test_scratch_refuses_without_room_and_keeps_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("not the drill's")
    with pytest.raises(MkrecError, match=r"free; the drill needs") as exc, scratch(tmp_path, need=1 << 60):
        pass
    assert exc.value.hint == "free some space or set [drill] workdir to a larger file system"
    assert (tmp_path / "mine.txt").exists() and not (tmp_path / "run").exists()
    assert needed_space(1000) == 1100 + SLACK


# ---- the report ----


def test_report_pass_fail_and_lines_around_the_error() -> None:
    r = Report("CDrec-20261201-0600", "/set", "2026-12-01T06:00:00", "bios", "tcg", "login:")
    r.phases = [
        Phase("rescue boot", 21.5, True),
        Phase("restore", 40.0, True),
        Phase("first boot", 9.9, True),
    ]
    assert r.passed
    text = (
        "\n".join(f"line {i}" for i in range(30))
        + "\n\x1b[6;78H  \x1b[m\nmkrec: error: sfdisk failed\nafter\n"
    )
    r.phases[2].ok = False
    r.fail("first boot", "mkrec: error: sfdisk failed", lines_around(text, text.index("mkrec: error")))
    r.fail("later", "ignored", [])
    assert not r.passed and r.failed_phase == "first boot"
    assert r.error_lines[0] == "line 19" and r.error_lines[-2:] == ["mkrec: error: sfdisk failed", "after"]
    shown = render(r)
    assert shown[0] == "Drill of CDrec-20261201-0600 (bios, tcg): FAIL in first boot"
    assert shown[1] == "  rescue boot     21.5 s  ok" and shown[3] == "  first boot       9.9 s  FAILED"
    assert json.loads(r.to_json())["result"] == "FAIL"
    r.error_lines = []
    assert render(r)[-1] == "  (nothing on the serial console)"
    assert report_paths(Path("/set"), datetime(2026, 12, 1, 6, 5, 9)) == (
        Path("/set/drill-20261201-060509.log"),
        Path("/set/drill-20261201-060509.json"),
    )


# ---- finding the set, and bad input as one line ----


def _ctx(tmp_path: Path) -> Context:
    return Context(config_from_dict({"build": {"output": str(tmp_path)}}), hostname="pc1")


def test_newest_set_of_this_host(tmp_path: Path) -> None:
    for date in ("20261120", "20261130", "20261201"):
        (tmp_path / "pc1" / date).mkdir(parents=True)
    (tmp_path / "pc1" / "20261130" / "CDrec-20261130-0100-vol2.iso").touch()
    (tmp_path / "pc1" / "20261120" / "CDrec-20261120-0100-vol2.iso").touch()
    # 20261201 holds only an unreadable vol1.iso: a rescue-only disc has no manifest, so no set
    (tmp_path / "pc1" / "20261201" / "CDrec-20261201-0100-vol1.iso").touch()
    assert newest_set(_ctx(tmp_path)) == tmp_path / "pc1" / "20261130"


def test_newest_set_may_be_a_path_set(tmp_path: Path) -> None:
    ctx = Context(
        config_from_dict(
            {"build": {"output": str(tmp_path / "out")}, "path": {"dir": str(tmp_path / "sets")}}
        ),
        hostname="pc1",
    )
    (tmp_path / "out" / "pc1" / "20261130").mkdir(parents=True)
    (tmp_path / "out" / "pc1" / "20261130" / "CDrec-20261130-0100-vol2.iso").touch()
    newer = tmp_path / "sets" / "pc1" / "20261201"
    newer.mkdir(parents=True)
    assert newest_set(ctx) == tmp_path / "out" / "pc1" / "20261130"  # an empty day is no set
    (newer / "backup").mkdir()
    (newer / "backup" / "manifest.json").write_text("{}")
    assert newest_set(ctx) == newer


def test_no_set_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MkrecError, match=rf"no backup set of pc1 found in {tmp_path}/pc1/<YYYYMMDD>/"):
        newest_set(_ctx(tmp_path))
    with pytest.raises(MkrecError, match="no such file or directory"):
        open_drill_set(tmp_path / "nothing", tmp_path)


def test_a_drive_is_refused_with_the_way_round(tmp_path: Path) -> None:
    with pytest.raises(MkrecError, match=r"/dev/null: a drive cannot be lent") as err:
        open_drill_set(Path("/dev/null"), tmp_path)
    assert "dd if=/dev/null of=FILE" in str(err.value.hint)


def test_cli_without_qemu_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(drill_module, "open_drill_set", lambda path, output: None)
    monkeypatch.setattr(drill_module, "which", lambda tool: None)
    config = tmp_path / "c.toml"
    config.write_text(f'[build]\noutput = "{tmp_path}"\n')
    assert main(["--config", str(config), "drill", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "mkrec: error: qemu-system-x86_64 is not installed",
        "mkrec: hint: apt-get install qemu-system-x86",
    ]


# ---- the console wait: a pattern, the exit, or the deadline, never longer ----


def test_guest_wait_sees_a_pattern_an_exit_and_keeps_its_deadline() -> None:
    script = (
        "printf 'booting\\r\\n\\033[KUnpacking 1\\rUnpacking 2\\n'; read line; echo got $line; exec sleep 30"
    )
    with Guest(["sh", "-c", script]) as guest:
        seen = guest.wait({"up": r"booting", "panic": r"Kernel panic"}, timeout=10)
        assert (seen.name, seen.text) == ("up", "booting")
        time.sleep(0.3)
        assert guest.last_line() == "Unpacking 2"
        guest.send("poweroff")
        assert guest.wait({"reply": r"got \w+"}, timeout=10, since=seen.at).text == "got poweroff"
        start = time.monotonic()
        ticks: list[str] = []
        seen = guest.wait({"never": r"login:"}, timeout=1.0, tick=lambda s, line: ticks.append(line))
        assert seen.name == "timeout" and time.monotonic() - start < 2 and ticks[-1] == "got poweroff"
    with Guest(["sh", "-c", "echo bye; exit 3"]) as guest:
        assert guest.wait({"never": r"login:"}, timeout=10) == Seen("exit", "3", len("bye\n"))


def test_drill_settings_and_their_errors() -> None:
    cfg = config_from_dict({}).drill
    assert (cfg.expect, cfg.timeout, cfg.workdir, cfg.memory, cfg.cpus) == (
        "",
        600,
        Path("/var/tmp/mkrec-drill"),
        1536 * 1024**2,
        2,
    )
    with pytest.raises(MkrecError, match=r"\[drill\] memory: '100M' is too little .* use at least 512M"):
        config_from_dict({"drill": {"memory": "100M"}})
    with pytest.raises(MkrecError, match=r"\[drill\] timeout: 5 is out of range"):
        config_from_dict({"drill": {"timeout": 5}})
    with pytest.raises(MkrecError, match=r"\[drill\] workdir: 'scratch' must be an absolute path"):
        config_from_dict({"drill": {"workdir": "scratch"}})
