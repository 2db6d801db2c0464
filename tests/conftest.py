"""Shared test set-up: capability markers that skip with a reason, and real loop disks."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import LoopDisks, kernel_for_guests


def _root_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (loop devices, mkfs, mount)"
    if not Path("/dev/loop-control").exists():
        return "needs loop devices (/dev/loop-control is missing)"
    return None


def _vm_missing() -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return "needs qemu-system-x86_64 (apt-get install qemu-system-x86)"
    if kernel_for_guests() is None:
        return "needs a /boot/vmlinuz-* with its /lib/modules (apt-get install linux-image-amd64)"
    return _root_missing()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and (reason := _root_missing()):
        pytest.skip(reason)
    if item.get_closest_marker("vm") and (reason := _vm_missing()):
        pytest.skip(reason)


@pytest.fixture
def loop_disks(tmp_path: Path) -> Iterator[LoopDisks]:
    """Factory for real loop-device disks backed by sparse files; everything is detached afterwards."""
    disks = LoopDisks(tmp_path)
    try:
        yield disks
    finally:
        disks.cleanup()
