"""A fleet's restore, end to end under QEMU (TCG), with no medium at all: the blank machine boots the
set's netboot tree by PXE (SeaBIOS's iPXE ROM, pxelinux.0 from QEMU's built-in TFTP server); the
rescue system brings the NIC up by DHCP (the BOOTIF= pxelinux adds) and its unattended default entry
restores from the set on nginx on the host (http://10.0.2.2:PORT/, baked in as [rescue] source), then
powers off; the restored disk boots. MKREC_NET_COMPARE=1 also restores from the local ISO volumes
(rescue CD, volumes in CD drives), for the timing in the notes."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import pytest
from netservers import free_port, nginx
from qemu import Guest, drive_args, qemu_argv, restored_disk_boots
from sourcesys import MARKER, SourceSystem, build_source_system
from support import LoopDisks, sh

from mkrec.build import build
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.rescue.rdbase import MARKER as RESCUE_READY

RESTORE_TIMEOUT = 900
# The engine without the wrapper (which adds the baked network source): it finds the volumes on the CD drives.
LOCAL_RESTORE = "python3 -m mkrec restore start --yes"
BOOT_TIMEOUT = 240


def back_up(system: SourceSystem, workdir: Path, source: str) -> list[Path]:
    raw = [system.esp_dev] if system.esp_dev else []
    config = config_from_dict(
        {
            "build": {"mode": "cd", "output": str(workdir / "out")},
            "media": {"size": "100M"},
            "source": {"root": str(system.root), "disks": [system.disk], "raw": raw},
            "rescue": {"console": "ttyS0,115200", "timeout": 1, "autorun": "start-restore", "source": source},
            "restore": {"after": "poweroff"},
        }
    )
    build(Context(config, staging=workdir / "isofs", hostname="net", started=datetime(2026, 12, 1, 9, 45)))
    return sorted((workdir / "out").rglob("*.iso"), key=lambda p: int(p.stem.rsplit("vol", 1)[1]))


def restore_in_rescue(argv: list[str], log: Path, command: str) -> float:
    """Boot the rescue CD, run the restore command; its time in seconds."""
    guest = Guest(argv, log)
    try:
        guest.expect(RESCUE_READY, timeout=300)
        t0 = time.monotonic()
        code, out = guest.command(command, timeout=RESTORE_TIMEOUT)
        took = time.monotonic() - t0
        assert code == 0, out[-3000:]
        guest.send("poweroff -f")
        assert guest.wait_poweroff(120)
    finally:
        guest.kill()
    return took


@pytest.mark.vm
def test_pxe_boot_restores_unattended_over_http_and_the_result_boots(
    tmp_path: Path, loop_disks: LoopDisks
) -> None:
    system = build_source_system(loop_disks, tmp_path, "gpt", marker="net-gpt")
    port = free_port()
    url = f"http://10.0.2.2:{port}/net/20261201/"
    with nginx(tmp_path / "out", tmp_path / "nginx", port=port) as web:
        volumes = back_up(system, tmp_path, url)
        assert len(volumes) >= 2, volumes
        netboot = volumes[0].parent / "netboot"
        target = tmp_path / "target.img"
        sh("truncate", "-s", "256M", target)
        pxe = ["-netdev", f"user,id=n0,tftp={netboot},bootfile=pxelinux.0", "-device", "e1000,netdev=n0"]
        argv = qemu_argv([*drive_args([target])[:-2], "-boot", "n"], tmp_path, memory="1536", net=pxe)
        guest = Guest(argv, tmp_path / "restore-http.log")
        try:
            guest.expect(r"network on eth0: 10\.0\.2\.15", timeout=300)
            t0 = time.monotonic()
            guest.expect(r"Restore finished", timeout=RESTORE_TIMEOUT)
            took = time.monotonic() - t0
            assert guest.wait_poweroff(120), "the rescue system did not power off after the restore"
        finally:
            guest.kill()
        fetched = sum(1 for method, *_ in web.requests() if method == "GET")
    console = guest.text()
    assert "mkrec: error" not in console
    assert "Backup set CDrec-20261201-0945" in console
    assert fetched > len(volumes), "the set was read from the web server"
    size = sum(v.stat().st_size for v in volumes) / 2**20
    print(f"PXE + unattended restore over HTTP of a {size:.0f} MiB set: {took:.0f} s, {fetched} GETs")

    if os.environ.get("MKREC_NET_COMPARE"):
        local = tmp_path / "local.img"
        sh("truncate", "-s", "256M", local)
        argv = qemu_argv(drive_args([local], volumes, boot_cd=True), tmp_path, memory="1536")
        took_local = restore_in_rescue(argv, tmp_path / "restore-local.log", LOCAL_RESTORE)
        print(f"restore of the same set from the local ISO volumes: {took_local:.0f} s")

    restored_disk_boots(target, tmp_path, f"{MARKER} net-gpt", BOOT_TIMEOUT)
