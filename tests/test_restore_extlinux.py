"""extlinux end to end on the host's restore path: a source system booting with extlinux (ldlinux.sys in
/boot/extlinux of an ext4 root, syslinux's boot code in the MBR) is captured, backed up (mode path) and
restored with `mkrec restore start --yes --map ...` onto a blank loop disk; the host checks the boot
code and the new filesystem's boot sector, then the restored disk boots under SeaBIOS to its marker.

- dos: the saved MBR holds syslinux's mbr.bin: it is written back, and only its first 440 bytes;
- gpt: the saved MBR holds no boot code (lost, or another tool's): the restore brings syslinux's own
  gptmbr.bin, which boots the partition carrying LegacyBIOSBootable in the restored table."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from qemu import Guest, drive_args, qemu_argv
from sourcesys import MARKER, SYSLINUX_MBR, build_source_system
from support import LoopDisks, sh
from test_restore_disks import backup, restore, table_ids

from mkrec.layout.model import BootKind
from mkrec.layout.textfmt import read_layout

BOOT_TIMEOUT = 240  # ~16 s on an idle machine under TCG


def head(path: str | Path, length: int = 512) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(length)


def boot_restored(loop_disks: LoopDisks, target: str, image: Path, work: Path, marker: str) -> float:
    """Unmount what the restore left mounted from the target, detach it and boot its image under
    SeaBIOS to the source system's marker; the seconds the boot took."""
    for mounted in Path("/proc/mounts").read_text().splitlines()[::-1]:
        if mounted.startswith(f"{target}p"):
            sh("umount", mounted.split()[1])
    loop_disks.detach(target)
    t0 = time.monotonic()
    guest = Guest(qemu_argv(drive_args([image]), work), work / "boot.log")
    try:
        guest.expect(f"{MARKER} {marker}", timeout=BOOT_TIMEOUT)
    finally:
        guest.kill()
    return time.monotonic() - t0


@pytest.mark.vm
@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_extlinux_system_restored_onto_a_blank_disk_boots(
    label: str, tmp_path: Path, loop_disks: LoopDisks
) -> None:
    marker = f"extlinux-{label}"
    src = build_source_system(loop_disks, tmp_path, label, marker, boot="extlinux")
    if label == "gpt":
        with open(src.disk, "r+b") as fh:
            fh.write(bytes(440))
    saved = backup(src, tmp_path)
    (boot,) = read_layout(saved.layout / "layout.toml").boot
    assert (boot.kind, boot.disk, boot.directory) == (
        BootKind.EXTLINUX,
        Path(src.disk).name,
        f"{src.root}/boot/extlinux",
    )
    source_mbr = head(src.disk)
    assert (saved.layout / f"mbr-{Path(src.disk).name}.bin").read_bytes() == source_mbr

    image = tmp_path / "target.img"
    sh("truncate", "-s", "256M", image)
    target = loop_disks.attach(image)
    t0 = time.monotonic()
    out = restore("start", saved, target, tmp_path / "target")
    print(f"extlinux {label}: restore {time.monotonic() - t0:.1f} s")
    loop_disks.rescan(target)
    assert table_ids(target) == table_ids(src.disk)
    mbr = head(target)
    if label == "dos":
        assert "syslinux boot code from the saved MBR" in out, out[-2000:]
        assert mbr[:440] == source_mbr[:440]
    else:
        gptmbr = SYSLINUX_MBR / "gptmbr.bin"
        assert f"syslinux boot code from {gptmbr} in the MBR" in out, out[-2000:]
        assert mbr[:440] == gptmbr.read_bytes()
    assert mbr[440:] == source_mbr[440:], "disk signature, partition table and 55AA stay as sfdisk wrote them"
    # extlinux --install ran on the new filesystem (mkfs leaves its first sector zero)
    assert head(f"{target}p1")[3:11] == b"SYSLINUX"
    seconds = boot_restored(loop_disks, target, image, tmp_path, marker)
    print(f"extlinux {label}: restored disk booted to its marker in {seconds:.1f} s")
