"""Mode restic end to end under QEMU (TCG): `mkrec build --mode restic` backs a bootable source
system up into a REST repository (`rclone serve restic` on 127.0.0.1) and writes the rescue disc;
the disc boots with a blank disk and QEMU's user network, its rescue system gets an address by
DHCP, start-restore reads the repository at 10.0.2.2 (the host's loopback as the guest sees it)
with the password file the disc carries (embed_credentials), and the restored disk boots alone."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from qemu import Guest, drive_args, qemu_argv, restored_disk_boots
from resticrepos import rest_repo
from sourcesys import MARKER, build_source_system
from support import LoopDisks, sh
from test_e2e_vm import BOOT_TIMEOUT, RESTORE_TIMEOUT, facts

from mkrec.build import build
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.rescue.rdbase import MARKER as RESCUE_READY


def with_user_network(argv: list[str]) -> list[str]:
    """QEMU's user network on a virtio card instead of none: the guest reaches the host's loopback at
    10.0.2.2 and nothing else."""
    out = [a for i, a in enumerate(argv) if not (a == "-net" or (i > 0 and argv[i - 1] == "-net"))]
    return [out[0], "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0", *out[1:]]


@pytest.mark.vm
def test_rescue_disc_restores_from_a_rest_repository_over_the_network(
    tmp_path: Path, loop_disks: LoopDisks
) -> None:
    system = build_source_system(loop_disks, tmp_path, "gpt", marker="e2e-restic")
    assert system.esp_dev is not None
    source_facts = facts(system.disk)
    with rest_repo(tmp_path) as repo:
        repo.restic("init")
        port = repo.location.rsplit(":", 1)[1].strip("/")
        config = config_from_dict(
            {
                "build": {"mode": "restic", "output": str(tmp_path / "out")},
                "source": {"root": str(system.root), "disks": [system.disk], "raw": [system.esp_dev]},
                "rescue": {"console": "ttyS0,115200", "timeout": 1},
                "restic": {
                    "repository": repo.location,
                    "password_file": str(repo.password_file),
                    "embed_credentials": True,
                },
            }
        )
        build(
            Context(config, staging=tmp_path / "isofs", hostname="e2e", started=datetime(2026, 11, 23, 7, 12))
        )
        (disc,) = (tmp_path / "out").rglob("*.iso")
        target = tmp_path / "target.img"
        sh("truncate", "-s", "256M", target)
        argv = with_user_network(
            qemu_argv(drive_args([target], [disc], boot_cd=True), tmp_path, memory="1536")
        )
        guest = Guest(argv, tmp_path / "restore.log")
        try:
            guest.expect(RESCUE_READY, timeout=300)
            assert "mkrec: network on eth0: 10.0.2.15/24" in guest.text()  # [rescue] network auto: dhcp
            source = f"restic:rest:http://10.0.2.2:{port}/"
            code, out = guest.command(
                f"start-restore --yes --source {source} --restic-password-file {repo.password_file} "
                f"--map {Path(system.disk).name}=/dev/vda",
                timeout=RESTORE_TIMEOUT,
            )
            assert code == 0, out[-3000:]
            guest.send("poweroff -f")
            assert guest.wait_poweroff(120)
        finally:
            guest.kill()
    assert "restic set CDrec-20261123-0712 of e2e" in guest.text()

    restored = loop_disks.attach(target)
    loop_disks.rescan(restored)
    assert facts(restored) == {k: v.replace(system.disk, restored) for k, v in source_facts.items()}
    loop_disks.detach(restored)
    restored_disk_boots(target, tmp_path, f"{MARKER} e2e-restic", BOOT_TIMEOUT)
