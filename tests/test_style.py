"""Style stays checked: ruff (lint + format) and mypy over the package and the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def check(*argv: str) -> None:
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_lint() -> None:
    check(str(BIN / "ruff"), "check", "mkrec", "tests", "bench")


def test_ruff_format() -> None:
    check(str(BIN / "ruff"), "format", "--check", "mkrec", "tests", "bench")


def test_mypy() -> None:
    check(str(BIN / "mypy"))
