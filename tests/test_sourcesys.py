"""The end-to-end tests' source system really boots: the marker proves the fixture, so a failing
restore test can be blamed on the restore."""

from __future__ import annotations

from pathlib import Path

import pytest
from qemu import Guest, drive_args, qemu_argv
from sourcesys import MARKER, build_source_system
from support import LoopDisks, sh


@pytest.mark.vm
def test_source_system_boots_under_bios(tmp_path: Path, loop_disks: LoopDisks) -> None:
    system = build_source_system(loop_disks, tmp_path, "gpt", marker="fixture-ok")
    assert (system.root / "data" / "hello.txt").exists()
    for done in (system.root / "data", system.root):  # QEMU gets the image with nothing mounted
        sh("umount", done)
        loop_disks.mounts.remove(done)
    guest = Guest(qemu_argv(drive_args([system.image]), tmp_path), tmp_path / "serial.log")
    try:
        guest.expect(f"{MARKER} fixture-ok", timeout=180)
    finally:
        guest.kill()
