"""Style stays checked: ruff (lint + format) and mypy over the package and the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SOURCES = [d for d in ("mkrec", "tests", "bench") if (REPO / d).is_dir()]


def check(*argv: str) -> None:
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_lint() -> None:
    check(str(BIN / "ruff"), "check", *SOURCES)


def test_ruff_format() -> None:
    check(str(BIN / "ruff"), "format", "--check", *SOURCES)


def test_mypy() -> None:
    check(str(BIN / "mypy"))
