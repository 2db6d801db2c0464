"""What encryption costs: the same loop-device file system backed up (mode path) plain and with
[security] encrypt = "age", alternating, several rounds; wall time and set size of each.

Run as root from the repository: .venv/bin/python bench/encryption.py [ROUNDS] [MiB-of-data]"""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pyrage

from mkrec.backup.encryption import TAG_SIZE
from mkrec.backup.frames import FRAME_SIZE
from mkrec.backup.run import backup
from mkrec.config import config_from_dict
from mkrec.context import Context

MiB = 1024 * 1024


def sh(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def corpus(root: Path, mib: int) -> None:
    """Half incompressible, a quarter text, a quarter small files: a system's mix, roughly."""
    rng = random.Random(1)
    (root / "data").mkdir()
    (root / "data" / "random.bin").write_bytes(rng.randbytes(mib // 2 * MiB))
    line = b"Dec  1 10:00:00 host kernel: [ 1.234567] some log line with numbers 0123456789\n"
    (root / "data" / "text.log").write_bytes(line * (mib // 4 * MiB // len(line)))
    small = root / "small"
    left = mib // 4 * MiB
    i = 0
    while left > 0:
        d = small / f"d{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randrange(0, 16000)
        (d / f"f{i:05d}").write_bytes(rng.randbytes(size // 2) + bytes(size - size // 2))
        left -= size
        i += 1


def cpu_seconds() -> float:
    """User + system time of this process and its children (tar): less shaken by other load than
    the wall clock."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_once(work: Path, root: Path, security: dict[str, object], tag: str) -> tuple[float, float, int]:
    out = work / tag
    shutil.rmtree(out, ignore_errors=True)
    data = {
        "build": {"mode": "path", "output": str(out / "out")},
        "source": {"root": str(root)},
        "path": {"dir": str(out / "set")},
        "security": security,
    }
    ctx = Context(
        config_from_dict(data), hostname="bench", started=datetime(2026, 12, 1), staging=out / "stage"
    )
    t0, c0 = time.monotonic(), cpu_seconds()
    where = backup(ctx, None)
    took, cpu = time.monotonic() - t0, cpu_seconds() - c0
    size = sum(p.stat().st_size for p in where.rglob("*") if p.is_file())
    return took, cpu, size


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    work = Path(tempfile.mkdtemp(prefix="mkrec-bench-", dir="/var/tmp"))
    image, mnt = work / "src.img", work / "mnt"
    sh("truncate", "-s", f"{mib * 2}M", image)
    dev = sh("losetup", "-f", "--show", image).strip()
    try:
        sh("mkfs.ext4", "-q", "-F", dev)
        mnt.mkdir()
        sh("mount", dev, mnt)
        corpus(mnt, mib)
        sh("sync")
        ident = pyrage.x25519.Identity.generate()
        age = {"encrypt": "age", "recipients": [str(ident.to_public())]}
        results: dict[str, list[tuple[float, float, int]]] = {"plain": [], "age": []}
        for _ in range(rounds):
            for tag, sec in (("plain", {}), ("age", age)):
                results[tag].append(run_once(work, mnt, sec, tag))
        used = int(sh("df", "--output=used", "-B1", mnt).split()[-1])
        print(
            f"{mib} MiB of data ({used / MiB:.0f} MiB used on ext4), {rounds} rounds, {os.cpu_count()} cores"
        )
        for tag, runs in results.items():
            wall, cpu = sorted(r[0] for r in runs), sorted(r[1] for r in runs)
            mid = len(runs) // 2
            print(f"{tag:>6}: wall median {wall[mid]:.2f} s (min {wall[0]:.2f}, max {wall[-1]:.2f}), "
                  f"CPU median {cpu[mid]:.2f} s, set {runs[-1][2]} bytes")  # fmt: skip
        plain, enc = (
            results["plain"][-1][2],
            results["age"][-1][2],
        )  # the first read of a file changes its atime
        frames = -(-used // FRAME_SIZE)
        # tar's pax headers carry atime, so even two plain sets differ by a few hundred bytes
        print(f"size: {enc - plain:+d} bytes; encryption adds {TAG_SIZE} bytes to each of ~{frames} frames "
              f"= {TAG_SIZE * frames} bytes, plus the wrapped key in the manifest")  # fmt: skip
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
        subprocess.run(["losetup", "-d", dev], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
