"""The boot loader reinstalled by the restored system's own tools, inside its chroot: what every restore
of a real Debian does. The source system has its own grub-install (with the i386-pc modules) or extlinux
(own_tools), is captured, backed up (mode path) and restored with `mkrec restore start --yes --map ...`
onto a blank loop disk; the restore's log must show the tool run through chroot, and the restored disk
boots under SeaBIOS to its marker.

- grub, dos: grub-install in the chroot finds the disk through the bind-mounted /dev and /sys (and the
  system's udevadm) and writes a new core.img after the MBR;
- extlinux, gpt: extlinux --install /boot/extlinux in the chroot writes the new filesystem's boot
  sector; the MBR gets the saved gptmbr.bin."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sourcesys import build_source_system
from support import LoopDisks, sh
from test_restore_disks import backup, restore
from test_restore_extlinux import boot_restored, head

from mkrec.restore.apply.runlog import LOG_ON_DISK


@pytest.mark.vm
@pytest.mark.parametrize(("boot", "label"), [("grub", "dos"), ("extlinux", "gpt")])
def test_boot_loader_reinstalled_in_the_restored_systems_chroot_boots(
    boot: str, label: str, tmp_path: Path, loop_disks: LoopDisks
) -> None:
    marker = f"own-{boot}-{label}"
    src = build_source_system(loop_disks, tmp_path, label, marker, boot=boot, own_tools=True)
    saved = backup(src, tmp_path)
    image = tmp_path / "target.img"
    sh("truncate", "-s", "256M", image)
    target = loop_disks.attach(image)
    root = tmp_path / "target"
    t0 = time.monotonic()
    out = restore("start", saved, target, root)
    print(f"{boot} {label}, own tools: restore {time.monotonic() - t0:.1f} s")
    # The restore unmounted its target: its log is read from the restored root filesystem.
    log = (loop_disks.mount(f"{target}p1", root, "-o", "ro") / LOG_ON_DISK).read_text()
    if boot == "grub":
        assert f"run: chroot {root} grub-install --target=i386-pc --recheck {target}\n" in log, log[-3000:]
        assert "--boot-directory" not in log, "the rescue system's grub-install ran too"
        assert b"GRUB" in head(target), "the chroot's grub-install wrote its boot code to the MBR"
    else:
        assert f"run: chroot {root} extlinux --install /boot/extlinux\n" in log, log[-3000:]
        assert f"run: extlinux --install {root}" not in log, "the rescue system's extlinux ran too"
        assert "syslinux boot code from the saved MBR" in out, out[-2000:]
        assert head(f"{target}p1")[3:11] == b"SYSLINUX", "extlinux --install wrote the boot sector"
    seconds = boot_restored(loop_disks, target, image, tmp_path, marker)
    print(f"{boot} {label}, own tools: restored disk booted to its marker in {seconds:.1f} s")
