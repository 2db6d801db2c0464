"""Benchmark: mkrec's backup against `tar -cf - | zstd -T0 -3 > file` on the same >= 2 GB corpus.

    .venv/bin/python bench/backup/run.py [--work DIR] [--size-gb 2] [--runs 3]

Builds (or reuses) an ext4 image in the work dir holding a mixed corpus — a copy of system
libraries, many small files, incompressible random data — mounts it, runs the baseline and then
mkrec's backup to DVD-sized ISO volumes (in a child process, RSS sampled every 0.2 s), pair after
pair, and prints each pair's time ratio and throughput, the median ratio and mkrec's memory.
Needs root (loop device, mount).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def sh(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def du(path: Path) -> int:
    return int(sh("du", "-sb", path).split()[0])


def build_corpus(mnt: Path, size_gb: float) -> None:
    """System files (~45%), small files (~10%), random data (the rest)."""
    target = int(size_gb * 1024**3)
    system = mnt / "system"
    system.mkdir(exist_ok=True)
    for sub in sorted(Path("/usr/lib").iterdir()):
        if du(system) > target * 0.45:
            break
        if sub.is_dir() and not sub.is_symlink():
            subprocess.run(["cp", "-a", sub, system / sub.name], check=False, capture_output=True)
    rng = random.Random(7)
    words = [rng.randbytes(rng.randrange(3, 9)).hex().encode() for _ in range(2000)]
    small = mnt / "small"
    n = 0
    while du(mnt) < target * 0.55:
        d = small / f"{n // 500:04d}"
        d.mkdir(parents=True, exist_ok=True)
        for _ in range(500):
            text = b" ".join(rng.choice(words) for _ in range(rng.randrange(10, 1200)))
            (d / f"file{n:06d}.txt").write_bytes(text)
            n += 1
    data = mnt / "random"
    data.mkdir(exist_ok=True)
    i = 0
    while du(mnt) < target:
        (data / f"blob{i:03d}.bin").write_bytes(os.urandom(128 * MiB))
        i += 1
    (mnt / ".corpus-complete").write_text("ok\n")


def mount_corpus(work: Path, size_gb: float) -> tuple[Path, str]:
    work.mkdir(parents=True, exist_ok=True)
    image = work / "corpus.img"
    mnt = work / "mnt"
    fresh = not image.exists()
    if fresh:
        sh("truncate", "-s", f"{int(size_gb * 2 + 2)}G", image)
        sh("mkfs.ext4", "-q", "-F", image)
    dev = sh("losetup", "-f", "--show", image).strip()
    mnt.mkdir(exist_ok=True)
    sh("mount", dev, mnt)
    if not (mnt / ".corpus-complete").exists():
        print(f"building a {size_gb} GB corpus in {mnt} ...", flush=True)
        build_corpus(mnt, size_gb)
    return mnt, dev


def children_cpu() -> float:
    """CPU seconds (user + system) of every waited-for child so far, grandchildren (mkrec's tar) included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baseline(mnt: Path, out: Path) -> float:
    start = time.monotonic()
    tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(mnt), "."], stdout=subprocess.PIPE)
    with open(out, "wb") as fh:
        subprocess.run(["zstd", "-T0", "-3", "-q", "-c"], stdin=tar.stdout, stdout=fh, check=True)
    assert tar.stdout is not None
    tar.stdout.close()
    tar.wait()
    return time.monotonic() - start


CHILD = """
import sys
from datetime import datetime
from pathlib import Path
from mkrec.backup.run import backup
from mkrec.config import config_from_dict
from mkrec.context import Context
cfg = config_from_dict({"build": {"mode": "cd", "output": sys.argv[2]}, "media": {"size": "dvd"},
                        "source": {"root": sys.argv[1]}})
backup(Context(cfg, hostname="bench", staging=Path(sys.argv[2]) / "isofs"), None)
"""


def run_mkrec(mnt: Path, out: Path) -> tuple[float, list[int]]:
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    proc = psutil.Popen(
        [sys.executable, "-c", CHILD, str(mnt), str(out)], cwd=REPO, stderr=subprocess.DEVNULL
    )
    samples = []
    while proc.poll() is None:
        try:
            samples.append(proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"mkrec backup failed (exit {proc.returncode})")
    return time.monotonic() - start, samples


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/mkrec-bench-backup"))
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3, help="baseline/mkrec pairs, run alternately")
    args = parser.parse_args()
    mnt, dev = mount_corpus(args.work, args.size_gb)
    out = args.work / "out"
    try:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        corpus = du(mnt)
        print(f"corpus: {corpus / 1e9:.2f} GB in {mnt}", flush=True)
        # Warm the page cache. Through a pipe: GNU tar does not read file data when writing to /dev/null.
        subprocess.run(f"tar -cf - -C '{mnt}' . | cat > /dev/null", shell=True, check=True)
        ratios, bases, mkrecs, rss, cpu_ratios = [], [], [], [], []
        for run in range(1, args.runs + 1):
            cpu = children_cpu()
            t_base = baseline(mnt, out / "baseline.tar.zst")
            cpu_base = children_cpu() - cpu
            base_size = (out / "baseline.tar.zst").stat().st_size
            (out / "baseline.tar.zst").unlink()
            shutil.rmtree(out / "sets", ignore_errors=True)
            cpu = children_cpu()
            t_mkrec, samples = run_mkrec(mnt, out / "sets")
            cpu_mkrec = children_cpu() - cpu
            isos = sorted((out / "sets").rglob("*.iso"))
            iso_size = sum(p.stat().st_size for p in isos)
            bases.append(t_base)
            mkrecs.append(t_mkrec)
            ratios.append(t_mkrec / t_base)
            cpu_ratios.append(cpu_mkrec / cpu_base)
            rss += samples[len(samples) // 5 :] or samples
            base_rate, mkrec_rate = corpus / t_base / 1e6, corpus / t_mkrec / 1e6
            print(f"run {run}: baseline tar | zstd -T0 -3 {t_base:5.1f} s ({base_rate:5.1f} MB/s, "
                  f"cpu {cpu_base:4.1f} s, {base_size / 1e9:.2f} GB)   "
                  f"mkrec {t_mkrec:5.1f} s ({mkrec_rate:5.1f} MB/s, cpu {cpu_mkrec:4.1f} s, "
                  f"{len(isos)} ISO, {iso_size / 1e9:.2f} GB)   ratio {t_mkrec / t_base:.2f}")  # fmt: skip
        print(f"baseline  tar | zstd -T0 -3: median {statistics.median(bases):6.1f} s")
        print(f"mkrec     cd, dvd volumes:  median {statistics.median(mkrecs):6.1f} s")
        print(f"ratio (mkrec / baseline), median of {args.runs} pairs: {statistics.median(ratios):.2f}   "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}; goal <= 1.15)")  # fmt: skip
        print(f"CPU ratio (user + system, tar included), median: {statistics.median(cpu_ratios):.2f}   "
              f"({os.cpu_count()} CPUs: when all are busy, wall time follows CPU time)")  # fmt: skip
        print(
            f"mkrec RSS: peak {max(rss) / MiB:.0f} MiB, median {statistics.median(rss) / MiB:.0f} MiB, "
            f"min {min(rss) / MiB:.0f} MiB after each run's first fifth  (goal: flat, < 512 MiB)"
        )
    finally:
        subprocess.run(["umount", mnt], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
