"""A restore over the network, end to end under QEMU (TCG): the rescue CD (volume 1 only) boots with a
blank disk and QEMU's user-mode network; `start-restore` reads the set from nginx on the host
(http://10.0.2.2:PORT/, baked into the disc as [rescue] source) and restores; the restored disk boots.
MKREC_NET_COMPARE=1 also restores from the local ISO volumes, for the timing in the notes."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import pytest
from netservers import free_port, nginx
from qemu import Guest, drive_args, qemu_argv
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
USER_NET = ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
# QEMU's user network: the guest is 10.0.2.15, the host's loopback answers at 10.0.2.2. (Static: the
# rescue system's own DHCP bring-up is another change.)
NET_UP = "ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2"


def back_up(system: SourceSystem, workdir: Path, source: str) -> list[Path]:
    raw = [system.esp_dev] if system.esp_dev else []
    config = config_from_dict(
        {
            "build": {"mode": "cd", "output": str(workdir / "out")},
            "media": {"size": "100M"},
            "source": {"root": str(system.root), "disks": [system.disk], "raw": raw},
            "rescue": {"console": "ttyS0,115200", "timeout": 1, "modules": ["virtio_net"], "source": source},
        }
    )
    build(Context(config, staging=workdir / "isofs", hostname="net", started=datetime(2026, 12, 1, 9, 45)))
    return sorted((workdir / "out").rglob("*.iso"), key=lambda p: int(p.stem.rsplit("vol", 1)[1]))


def restore_in_rescue(argv: list[str], log: Path, command: str, network: bool) -> float:
    """Boot the rescue CD, run the restore command; its time in seconds."""
    guest = Guest(argv, log)
    try:
        guest.expect(RESCUE_READY, timeout=300)
        if network:
            code, out = guest.command(NET_UP, timeout=60)
            assert code == 0, out
        t0 = time.monotonic()
        code, out = guest.command(command, timeout=RESTORE_TIMEOUT)
        took = time.monotonic() - t0
        assert code == 0, out[-3000:]
        assert "mkrec: error" not in out
        guest.send("poweroff -f")
        assert guest.wait_poweroff(120)
    finally:
        guest.kill()
    return took


@pytest.mark.vm
def test_start_restore_over_http_from_the_rescue_cd_and_boot_the_result(
    tmp_path: Path, loop_disks: LoopDisks
) -> None:
    system = build_source_system(loop_disks, tmp_path, "gpt", marker="net-gpt")
    port = free_port()
    url = f"http://10.0.2.2:{port}/net/20261201/"
    with nginx(tmp_path / "out", tmp_path / "nginx", port=port) as web:
        volumes = back_up(system, tmp_path, url)
        assert len(volumes) >= 2, volumes
        target = tmp_path / "target.img"
        sh("truncate", "-s", "256M", target)
        argv = qemu_argv(drive_args([target], volumes[:1], boot_cd=True), tmp_path, memory="1536") + USER_NET
        took = restore_in_rescue(argv, tmp_path / "restore-http.log", "start-restore --yes", network=True)
        fetched = sum(1 for method, *_ in web.requests() if method == "GET")
    console = (tmp_path / "restore-http.log").read_text(errors="replace")
    assert url in console or "Backup set CDrec-20261201-0945" in console
    size = sum(v.stat().st_size for v in volumes) / 2**20
    print(f"restore over HTTP of a {size:.0f} MiB set ({len(volumes)} volumes): {took:.0f} s, {fetched} GETs")

    if os.environ.get("MKREC_NET_COMPARE"):
        local = tmp_path / "local.img"
        sh("truncate", "-s", "256M", local)
        argv = qemu_argv(drive_args([local], volumes, boot_cd=True), tmp_path, memory="1536")
        took_local = restore_in_rescue(argv, tmp_path / "restore-local.log", LOCAL_RESTORE, network=False)
        print(f"restore of the same set from the local ISO volumes: {took_local:.0f} s")

    guest = Guest(qemu_argv(drive_args([target]), tmp_path), tmp_path / "boot.log")
    try:
        guest.expect(f"{MARKER} net-gpt", timeout=BOOT_TIMEOUT)
    finally:
        guest.kill()
