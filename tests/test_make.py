"""`make test` is the preflight, run through the Makefile as the README says."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mkrec.tools import PACKAGE

REPO = Path(__file__).resolve().parent.parent


def make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    return subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True, env=env)


@pytest.mark.root
def test_make_test_prints_the_table_and_passes_here() -> None:
    proc = make("test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("PASS  config")
    assert any(line.startswith("PASS  tools") for line in lines)
    assert lines[-1].startswith("preflight: ") and lines[-1].endswith(" 0 failed")


@pytest.mark.root
def test_make_test_with_a_broken_key_fails_on_the_config_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[compression]\nlevel = 99\n")
    proc = make("test", f"CONFIG={bad}")
    assert proc.returncode != 0
    assert f"FAIL  config           {bad}: [compression] level: 99 is out of range" in proc.stdout


@pytest.mark.root
def test_make_deps_is_a_quick_no_op_when_everything_is_there() -> None:
    proc = make("deps")
    assert proc.returncode == 0 and "installing" not in proc.stdout


def test_make_deps_reads_the_packages_from_the_tool_table_with_the_system_python() -> None:
    """Before the venv exists, `make deps` asks mkrec.tools for the Debian packages: the system's
    python3 and the standard library only (-S: no site packages)."""
    proc = subprocess.run(
        ["/usr/bin/python3", "-S", "-m", "mkrec.tools", "packages"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    packages = proc.stdout.split()
    assert packages[:2] == ["python3", "python3-venv"]  # the venv is made from them
    assert set(PACKAGE.values()) <= set(packages) and len(packages) == len(set(packages))
