"""The guest side of test_restore_efi_guest.py, run inside a virtme-ng guest (it has vfat) as
`python tests/efi_guest.py OUT`: mount the source image the host built, with its ESP at /boot/efi;
capture it; back it up (mode path: the ESP as a tar stream); lose it; restore onto a blank disk image
with `mkrec restore start --yes --map ...`; leave the restored image, the restore's log and the facts the
host checks in OUT. Kept apart from the test and light on imports: under TCG every module a guest
imports costs about a quarter of a second, and pytest alone is some 280 of them."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from support import LoopDisks, sh

from mkrec.backup import run_backup
from mkrec.cli import main
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.layout.capture import capture

MARK = "efi-mounted"
SOURCE = "source-gpt-grub-efi.img"  # what build_source_system names it
DONE = "GUEST-DONE"
STARTED = datetime(2026, 3, 4, 5, 6)


def listing(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file())


def since_boot() -> tuple[float, float]:
    """(seconds from the guest's boot to now, to when this process started): where a guest run's
    time goes (booting, Python importing, the work)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    return float(Path("/proc/uptime").read_text().split()[0]), ticks / os.sysconf("SC_CLK_TCK")


def back_up(root: Path, work: Path) -> Path:
    """The real backup, mode path, of every filesystem mounted under root; returns the set directory."""
    data = {
        "build": {"mode": "path", "output": str(work / "out")},
        "source": {"root": str(root)},
        "path": {"dir": str(work / "pathset")},
    }
    return run_backup(
        Context(config_from_dict(data), hostname="efihost", started=STARTED, staging=work / "isofs"), None
    )


def in_guest(out: Path) -> None:
    """The work is in the guest's RAM (the shared directory is 9p mounted sync: slow for writing disk
    images); the restored image and the log are copied to out at the end."""
    now, started = since_boot()
    times = {"boot": round(started, 1), "imports": round(now - started, 1)}
    for module in ("loop", "vfat"):
        sh("modprobe", module)
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mkrec-efi-", dir="/run"))
    disks = LoopDisks(work)
    disk = disks.attach(out / SOURCE)
    disks.rescan(disk)
    root = disks.mount(f"{disk}p3", work / "source")
    disks.mount(f"{disk}p4", root / "data")
    disks.mount(f"{disk}p2", root / "boot" / "efi", "-t", "vfat")
    times["mount"], t0 = round(time.monotonic() - t0, 1), time.monotonic()
    recovery = work / "recovery"
    capture([disk], recovery, root, "efihost", STARTED)
    times["capture"], t0 = round(time.monotonic() - t0, 1), time.monotonic()
    set_dir = back_up(root, work)
    facts: dict[str, object] = {
        "saved_disk": Path(disk).name,
        "esp_before": listing(root / "boot" / "efi"),
        "fstab_before": (root / "etc" / "fstab").read_text(),
    }
    times["backup"] = round(time.monotonic() - t0, 1)
    disks.cleanup()  # the machine is lost: nothing of the source stays
    disks.devices.clear()
    disks.mounts.clear()

    image = work / "target.img"
    sh("truncate", "-s", "256M", image)
    target = disks.attach(image)
    restored = work / "target"
    t0 = time.monotonic()
    argv = ["--debug", "--log", str(work / "restore.log"), "restore", "start", "--source", str(set_dir),
            "--layout", str(recovery), "--map", f"{facts['saved_disk']}={target}", "--target", str(restored),
            "--yes"]  # fmt: skip
    facts |= {"restore_rc": main(argv), "target": target, "root": str(restored)}
    times["restore"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    if facts["restore_rc"] == 0:
        disks.rescan(target)
        esp = disks.mount(f"{target}p2", work / "check-esp", "-o", "ro")
        facts["esp_after"] = listing(esp)
        check = disks.mount(f"{target}p3", work / "check-root", "-o", "ro")
        facts["fstab_after"] = (check / "etc" / "fstab").read_text()
    disks.cleanup()
    sh("cp", "--sparse=always", image, work / "restore.log", out)
    times["check+copy out"] = round(time.monotonic() - t0, 1)
    (out / "facts.json").write_text(json.dumps(facts | {"times": times}, indent=1))
    print(DONE, flush=True)


if __name__ == "__main__":
    in_guest(Path(sys.argv[1]))
