"""An encrypted set restored the way an admin would on the worst day: the rescue CD boots, the
unattended start-restore asks for the set's passphrase on the (serial) console, the admin types it,
the disk comes back. The passphrase is not echoed, and a wrong one is asked again."""

from __future__ import annotations

from pathlib import Path

import pytest
from qemu import Guest, drive_args, qemu_argv
from sourcesys import build_source_system
from support import LoopDisks, sh
from test_e2e_vm import RESTORE_TIMEOUT, back_up

PASSPHRASE = "typed on the rescue console 4711"


@pytest.mark.vm
def test_encrypted_set_restores_with_the_passphrase_typed_on_the_console(
    tmp_path: Path, loop_disks: LoopDisks
) -> None:
    system = build_source_system(loop_disks, tmp_path, "dos", marker="crypt-vm")
    secret = tmp_path / "mkrec.pass"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    volumes = back_up(
        system, tmp_path, media="100M", security={"encrypt": "age", "passphrase_file": str(secret)}
    )
    for volume in volumes:
        assert PASSPHRASE.encode() not in volume.read_bytes()

    target = tmp_path / "target.img"
    sh("truncate", "-s", "256M", target)
    guest = Guest(
        qemu_argv(drive_args([target], volumes, boot_cd=True), tmp_path, memory="1536"), tmp_path / "vm.log"
    )
    try:
        asked = guest.expect(r"Passphrase of backup set CDrec-\d{8}-\d{4}: ", timeout=300)
        guest.send("not the passphrase")
        again = guest.expect(r"That does not open the set\.", timeout=120, since=asked.end())
        guest.expect(r"Passphrase of backup set", timeout=60, since=again.end())
        guest.send(PASSPHRASE)
        guest.expect(r"Restore finished", timeout=RESTORE_TIMEOUT)
        assert guest.wait_poweroff(120), "the rescue system did not power off after the restore"
    finally:
        guest.kill()
    console = guest.text()
    assert "mkrec: error" not in console
    assert PASSPHRASE not in console and "not the passphrase" not in console, "a passphrase was echoed"

    restored = loop_disks.attach(target)
    loop_disks.rescan(restored)
    mnt = loop_disks.mount(f"{restored}p1", tmp_path / "restored")
    assert (mnt / "etc" / "marker").read_text() == "crypt-vm\n"
    assert PASSPHRASE not in (mnt / "var" / "log" / "mkrec-restore.log").read_text()
    loop_disks.mount(f"{restored}p2", mnt / "data")
    assert (mnt / "data" / "hello.txt").read_text() == "data partition content\n"
