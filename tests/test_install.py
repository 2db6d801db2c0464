"""`make install DESTDIR=…` into a temporary root: the installed mkrec runs from its own venv (not
from this checkout), its units pass systemd-analyze verify, the manual page and the completion are
there, a second install keeps /etc/mkrec/Config.toml, and `make uninstall` leaves only that."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import LoopDisks, sh

REPO = Path(__file__).resolve().parent.parent
VENV = "/opt/mkrec"


def make(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["make", "-C", str(REPO), *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("destdir")
    make("install", f"DESTDIR={root}")
    yield root


def installed(dest: Path, *argv: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The installed mkrec, through its venv's interpreter (its shebang names /opt/mkrec)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    argv_ = [str(dest / VENV[1:] / "bin/python"), str(dest / VENV[1:] / "bin/mkrec"), *argv]
    proc = subprocess.run(argv_, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_files_are_where_the_system_looks(dest: Path) -> None:
    venv = dest / VENV[1:]
    assert os.readlink(dest / "usr/local/sbin/mkrec") == f"{VENV}/bin/mkrec"
    assert (venv / "bin/mkrec").read_text().startswith(f"#!{VENV}/bin/python")
    assert str(dest) not in (venv / "pyvenv.cfg").read_text()
    assert (venv / "share/mkrec/templates/init.sh.j2").is_file()
    config = dest / "etc/mkrec/Config.toml"
    assert config.read_text() == (REPO / "Config.toml").read_text()
    assert config.stat().st_mode & 0o777 == 0o600
    man = (dest / "usr/local/share/man/man8/mkrec.8").read_text()
    assert man.startswith('.TH MKREC "8"') or '.TH MKREC "8"' in man
    assert "mkrec status" in man and ".SH FILES" in man
    completion = dest / "usr/local/share/bash-completion/completions/mkrec"
    out = subprocess.run(
        ["bash", "-c", f"source {completion}; complete -p mkrec"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().endswith(" mkrec") and "status" in completion.read_text()
    cron = (dest / "usr/local/share/doc/mkrec/mkrec.cron").read_text()
    assert "root  nice -n 10 ionice -c 3 /usr/local/sbin/mkrec --config /etc/mkrec/Config.toml build" in cron


def test_the_installed_mkrec_runs_from_its_own_venv(dest: Path, tmp_path: Path) -> None:
    config = dest / "etc/mkrec/Config.toml"
    out = installed(dest, "--config", str(config), "summary", cwd=tmp_path).stdout
    assert "[report]" in out and "keep" in out
    where = installed(dest, "--version", cwd=tmp_path).stdout
    assert where.startswith("mkrec ")
    venv = dest / VENV[1:]
    code = "import mkrec.context as c; print(c.__file__, c.DATA_ROOT)"
    probe = subprocess.run(
        [str(venv / "bin/python"), "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout.split()
    assert probe[0].startswith(str(venv / "lib")) and probe[1] == str(venv / "share/mkrec")
    preflight = installed(dest, "--config", str(config), "preflight", "--json", cwd=tmp_path, check=False)
    assert preflight.returncode in (0, 1) and json.loads(preflight.stdout)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (package systemd)")
def test_units_pass_systemd_analyze_verify(dest: Path, tmp_path: Path) -> None:
    """ExecStart must be executable and man:mkrec(8) must resolve: point both into DESTDIR."""
    units = dest / "usr/local/lib/systemd/system"
    service = (units / "mkrec-backup.service").read_text()
    timer = (units / "mkrec-backup.timer").read_text()
    assert "ExecStart=/usr/local/sbin/mkrec --config /etc/mkrec/Config.toml build" in service
    assert "OnCalendar=weekly" in timer and "Persistent=true" in timer and "RandomizedDelaySec=" in timer
    (tmp_path / "mkrec-backup.service").write_text(
        service.replace("/usr/local/sbin/mkrec", str(dest / VENV[1:] / "bin/mkrec"))
    )
    (tmp_path / "mkrec-backup.timer").write_text(timer)
    env = {**os.environ, "MANPATH": str(dest / "usr/local/share/man")}

    def verify() -> subprocess.CompletedProcess[str]:
        argv = [
            "systemd-analyze",
            "verify",
            str(tmp_path / "mkrec-backup.service"),
            str(tmp_path / "mkrec-backup.timer"),
        ]
        return subprocess.run(argv, capture_output=True, text=True, env=env)

    good = verify()
    assert good.returncode == 0 and not good.stderr, good.stderr
    (tmp_path / "mkrec-backup.timer").write_text(timer.replace("OnCalendar=weekly", "OnCalendar=someday"))
    assert verify().returncode != 0  # the check can fail


@pytest.mark.root
def test_the_installed_mkrec_builds_a_path_set_and_reports_status(
    dest: Path, tmp_path: Path, loop_disks: LoopDisks
) -> None:
    part = _partitioned(loop_disks, "64M")
    sh("mkfs.ext4", "-q", "-F", part)
    root = loop_disks.mount(part, tmp_path / "root")
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("installed\n")
    hook_out = tmp_path / "hook.json"
    hook = tmp_path / "hook"
    hook.write_text(f"#!/bin/sh\ncat > {hook_out}\n")
    hook.chmod(0o755)
    (tmp_path / "sets").mkdir()
    config = tmp_path / "Config.toml"
    config.write_text(
        f'[build]\nmode = "path"\noutput = "{tmp_path}/out"\nkeep = 1\n'
        f'[source]\nroot = "{root}"\n[path]\ndir = "{tmp_path}/sets"\n[report]\ncommand = "{hook}"\n'
    )
    installed(dest, "--config", str(config), "build", cwd=tmp_path)
    summary = json.loads(hook_out.read_text())
    assert summary["result"] == "ok" and summary["verified"] and len(summary["sets"]) == 2
    status = installed(dest, "--config", str(config), "status", cwd=tmp_path, check=False)
    print(status.stdout)
    assert status.returncode == 0, status.stdout
    listing = installed(dest, "sets", f"{tmp_path}/sets", "--json", cwd=tmp_path).stdout
    assert [s["verify_ok"] for s in json.loads(listing)] == [True]

    second = _partitioned(loop_disks, "32M")
    sh("mkfs.ext4", "-q", "-F", second)
    loop_disks.mount(second, root / "srv")
    status = installed(dest, "--config", str(config), "status", cwd=tmp_path, check=False)
    print(status.stdout)
    assert status.returncode == 2
    assert f"STALE layout    disk {Path(second).name.removesuffix('p1')} added (32.0 MiB)" in status.stdout


def _partitioned(loop_disks: LoopDisks, size: str) -> str:
    dev = loop_disks.create(size)
    sh("sfdisk", "-q", dev, input="label: gpt\n,\n")
    loop_disks.rescan(dev)
    return dev + "p1"


def test_reinstall_keeps_the_config_and_uninstall_keeps_only_it(dest: Path, tmp_path: Path) -> None:
    config = dest / "etc/mkrec/Config.toml"
    config.write_text("[build]\nkeep = 3\n")
    make("install", f"DESTDIR={dest}")
    assert config.read_text() == "[build]\nkeep = 3\n"
    assert "keep         = 3" in installed(dest, "--config", str(config), "summary", cwd=tmp_path).stdout
    make("uninstall", f"DESTDIR={dest}")
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() or p.is_symlink())
    assert left == ["etc/mkrec/Config.toml"]
