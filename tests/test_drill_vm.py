"""`mkrec drill` for real, under QEMU (TCG): a set of a bootable source system drills to PASS with
its report files; a set whose restored system cannot boot FAILs within the timeout, naming the
phase; a set with a volume missing fails before any virtual machine starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from qemu import OVMF_CODE
from sourcesys import MARKER, build_source_system
from support import LoopDisks

from mkrec.build import build
from mkrec.config import config_from_dict
from mkrec.context import Context

MKREC = [sys.executable, "-m", "mkrec"]
DRILL_TIMEOUT = 900  # the subprocess's own limit: far above the [drill] timeouts below


def make_set(workdir: Path, exclude: tuple[str, ...] = (), mode: str = "cd") -> Path:
    """A source system backed up in mode cd, path or tape, without a serial console on the rescue
    disc (the drill brings its own): the set's directory (the tape file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    disks = LoopDisks(workdir)
    try:
        system = build_source_system(disks, workdir, "gpt", marker="drill")
        defaults = ["/proc/*", "/sys/*", "/dev/*", "/run/*", "/tmp/*", "/var/tmp/*"]
        config = config_from_dict(
            {
                "build": {"mode": mode, "output": str(workdir / "out")},
                "media": {"size": "100M"},
                "path": {"dir": str(workdir / "sets")},
                "tape": {"device": str(workdir / "tape" / "tape0")},
                "source": {
                    "root": str(system.root),
                    "disks": [system.disk],
                    "raw": [system.esp_dev] if system.esp_dev else [],
                    "exclude": defaults + list(exclude),
                },
                "rescue": {"timeout": 1},
            }
        )
        ctx = Context(
            config, staging=workdir / "isofs", hostname="drilled", started=datetime(2026, 12, 1, 6, 0)
        )
        (workdir / "sets").mkdir()
        (workdir / "tape").mkdir()
        (workdir / "tape" / "tape0").touch()  # a file stands in for the drive
        build(ctx)
        if mode == "path":
            return workdir / "sets" / ctx.set_dir.relative_to(workdir / "out")
        return workdir / "tape" / "tape0" if mode == "tape" else ctx.set_dir
    finally:
        disks.cleanup()


def write_config(path: Path, workdir: Path, timeout: int, output: Path | None = None) -> Path:
    path.write_text(
        f'[build]\noutput = "{output or str(workdir) + "-out"}"\n'
        f'[drill]\nexpect = "{MARKER} drill"\ntimeout = {timeout}\nworkdir = "{workdir}"\n'
        'memory = "1536M"\ncpus = 2\n'
    )
    return path


def drill(config: Path, set_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        [*MKREC, "--config", str(config), "drill", str(set_dir), *args],
        capture_output=True,
        text=True,
        timeout=DRILL_TIMEOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    return proc, time.monotonic() - start


@pytest.fixture(scope="module")
def good_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield make_set(tmp_path_factory.mktemp("good"))


@pytest.mark.vm
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_a_bootable_set_drills_to_pass_with_its_reports(
    good_set: Path, tmp_path: Path, firmware: str
) -> None:
    if firmware == "uefi" and not OVMF_CODE.exists():
        pytest.skip(f"needs {OVMF_CODE} (apt-get install ovmf)")
    config = write_config(tmp_path / "drill.toml", tmp_path / "scratch", timeout=600)
    before = set(good_set.glob("drill-*.json"))
    proc, seconds = drill(config, good_set, "--firmware", firmware)
    print(f"\ndrill wall time under TCG ({firmware}): {seconds:.0f} s\n{proc.stderr[-1500:]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "PASS" in proc.stderr
    (report,) = set(good_set.glob("drill-*.json")) - before
    data = json.loads(report.read_text())
    assert data["result"] == "PASS" and data["firmware"] == firmware
    assert data["accel"] == "kvm" or "note: KVM is not usable" in proc.stderr
    assert [p["name"] for p in data["phases"]] == ["rescue boot", "restore", "first boot"]
    assert all(p["ok"] and p["seconds"] > 0 for p in data["phases"])
    console = Path(data["log"]).read_text()
    assert f"{MARKER} drill" in console and "Restore finished" in console
    assert not (tmp_path / "scratch").exists(), "the scratch directory is removed afterwards"


@pytest.mark.vm
@pytest.mark.parametrize("mode", ["path", "tape"])
def test_a_path_or_tape_set_drills_with_its_rescue_disc_and_a_shared_directory(
    tmp_path: Path, mode: str
) -> None:
    where = make_set(tmp_path / "src", mode=mode)
    reports = where.parent if mode == "tape" else where
    config = write_config(
        tmp_path / "drill.toml", tmp_path / "scratch", timeout=600, output=tmp_path / "src" / "out"
    )
    proc, seconds = drill(config, where, "--firmware", "bios")
    print(f"\ndrill of a mode {mode} set under TCG: {seconds:.0f} s\n{proc.stderr[-1500:]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"shared from {reports}" in proc.stderr
    (report,) = reports.glob("drill-*.json")
    data = json.loads(report.read_text())
    assert data["result"] == "PASS"
    console = Path(data["log"]).read_text()
    assert f"{MARKER} drill" in console and "Restore finished" in console


@pytest.mark.vm
def test_a_set_without_its_kernel_fails_in_the_first_boot_with_grubs_lines(tmp_path: Path) -> None:
    # The kernel and initramfs left out of the backup: GRUB comes up, but finds nothing to boot.
    set_dir = make_set(tmp_path / "set", exclude=("/boot/vmlinuz", "/boot/initrd.img"))
    config = write_config(tmp_path / "drill.toml", tmp_path / "scratch", timeout=240)
    proc, seconds = drill(config, set_dir, "--firmware", "bios")
    print(f"\nfailing drill: {seconds:.0f} s\n{proc.stderr[-1500:]}")
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "FAIL in first boot" in proc.stderr
    (report,) = set_dir.glob("drill-*.json")
    data = json.loads(report.read_text())
    assert data["result"] == "FAIL" and data["failed_phase"] == "first boot"
    assert [p["ok"] for p in data["phases"]] == [True, True, False]
    assert data["error"] == "error: you need to load the kernel first."
    assert "error: file `/boot/vmlinuz' not found." in data["error_lines"]
    assert "error: you need to load the kernel first." in Path(data["log"]).read_text()


@pytest.mark.vm
def test_a_set_without_its_boot_loader_files_fails_at_the_timeout_not_a_hang(tmp_path: Path) -> None:
    # GRUB's files (grub.cfg with its serial console among them) left out: the restored disk says
    # nothing on the serial console, so only the enforced timeout ends the drill.
    timeout = 90  # a passing bios drill takes ~85 s for all its phases together
    set_dir = make_set(tmp_path / "set", exclude=("/boot/grub/*",))
    config = write_config(tmp_path / "drill.toml", tmp_path / "scratch", timeout=timeout)
    proc, seconds = drill(config, set_dir, "--firmware", "bios")
    print(f"\nfailing drill (timeout {timeout} s): {seconds:.0f} s\n{proc.stderr[-1500:]}")
    assert proc.returncode == 1, proc.stderr[-4000:]
    (report,) = set_dir.glob("drill-*.json")
    data = json.loads(report.read_text())
    assert data["result"] == "FAIL" and data["failed_phase"] == data["phases"][-1]["name"]
    assert f"FAIL in {data['failed_phase']}" in proc.stderr and data["error"]
    assert all(p["seconds"] <= timeout + 5 for p in data["phases"])
    assert seconds < 3 * timeout + 120
    if data["failed_phase"] == "first boot":
        assert (
            data["error"]
            == f"no 'MKREC-SOURCE-SYSTEM-UP drill' on the console within {timeout} s ([drill] timeout)"
        )
    assert not (tmp_path / "scratch").exists()


@pytest.mark.vm
def test_a_missing_volume_is_named_before_any_vm_starts(good_set: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for iso in good_set.glob("*.iso"):
        if not iso.name.endswith("-vol2.iso"):
            os.link(iso, partial / iso.name)
    config = write_config(tmp_path / "drill.toml", tmp_path / "scratch", timeout=600)
    proc, seconds = drill(config, partial)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("mkrec: error: CDrec-20261201-0600: volume 2"), lines
    assert "-vol2.iso) is missing" in lines[0] and "Traceback" not in proc.stderr
    assert seconds < 30 and not (tmp_path / "scratch").exists() and not list(partial.glob("drill-*"))
    assert shutil.which("qemu-system-x86_64")
