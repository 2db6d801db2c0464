"""Benchmark: mkrec's backup against `tar | zstd -T0 -3 > file` on the same corpus.

    .venv/bin/python bench/backup/run.py [--corpus mixed|small-files] [--work DIR] [--runs 3]

Builds (or reuses) an ext4 image in the work dir holding a corpus, mounts it, and runs, in turn,
the baselines and mkrec's backup to DVD-sized ISO volumes (in a child process, RSS sampled every
0.2 s), round after round; prints each round's ratios, the medians and mkrec's memory.

Two baselines: plain `tar -cf - | zstd`, and `tar` with the options mkrec's tar uses (POSIX format,
xattrs, ACLs, SELinux labels, sparse files, numeric owners: the same archive), which is what a
person would have to run to get what mkrec keeps. The goal is measured against the second.

Corpora: `mixed` (2 GB: system libraries, small text files, random data) and `small-files`
(1.5 GB: a copy of /usr/lib and /usr/share/doc next to mixed data — tens of thousands of files,
where the per-file work counts). Needs root (loop device, mount).
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


CORPORA = {  # name: (GB, share of system files, share of small text files; random data after)
    "mixed": (2.0, 0.45, 0.10),
    "small-files": (1.5, 0.70, 0.10),
}


def copy_system(dest: Path, budget: int) -> None:
    """System libraries and documentation, directory by directory, up to `budget` bytes."""
    dest.mkdir(exist_ok=True)
    subprocess.run(["cp", "-a", "/usr/share/doc", dest / "doc"], check=False, capture_output=True)
    for sub in sorted(Path("/usr/lib").iterdir()):
        if du(dest) > budget:
            break
        if sub.is_dir() and not sub.is_symlink():
            subprocess.run(["cp", "-a", sub, dest / sub.name], check=False, capture_output=True)


def build_corpus(mnt: Path, corpus: str) -> None:
    size_gb, system_share, small_share = CORPORA[corpus]
    target = int(size_gb * 1024**3)
    copy_system(mnt / "system", int(target * system_share))
    rng = random.Random(7)
    words = [rng.randbytes(rng.randrange(3, 9)).hex().encode() for _ in range(2000)]
    small = mnt / "small"
    n = 0
    while du(mnt) < target * (system_share + small_share):
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


def mount_corpus(work: Path, corpus: str) -> tuple[Path, str]:
    work.mkdir(parents=True, exist_ok=True)
    size_gb = CORPORA[corpus][0]
    image = work / f"{corpus}.img"
    mnt = work / f"mnt-{corpus}"
    fresh = not image.exists()
    if fresh:
        sh("truncate", "-s", f"{int(size_gb * 2 + 2)}G", image)
        sh("mkfs.ext4", "-q", "-F", image)
    mnt.mkdir(exist_ok=True)
    if os.path.ismount(mnt):  # left by a run that was killed: mounting again would stack a second copy
        stale = sh("findmnt", "-n", "-o", "SOURCE", mnt).strip()
        sh("umount", mnt)
        subprocess.run(["losetup", "-d", stale], check=False)
    dev = sh("losetup", "-f", "--show", image).strip()
    sh("mount", dev, mnt)
    if not (mnt / ".corpus-complete").exists():
        print(f"building the {corpus} corpus ({size_gb} GB) in {mnt} ...", flush=True)
        build_corpus(mnt, corpus)
    return mnt, dev


def children_cpu() -> float:
    """CPU seconds (user + system) of every waited-for child so far, grandchildren (mkrec's tar) included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# What mkrec's tar adds to a plain `tar -cf -` (mkrec.backup.sources.tar_argv): the same archive.
SAME_OPTIONS = ["--format=posix", "--one-file-system", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                "--acls", "--selinux", "--sparse"]  # fmt: skip


def baseline(mnt: Path, out: Path, options: list[str]) -> float:
    start = time.monotonic()
    tar = subprocess.Popen(["tar", "-cf", "-", *options, "-C", str(mnt), "."], stdout=subprocess.PIPE)
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


def timed_baseline(mnt: Path, out: Path, options: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and output bytes of one baseline run."""
    cpu = children_cpu()
    wall = baseline(mnt, out, options)
    size = out.stat().st_size
    out.unlink()
    return wall, children_cpu() - cpu, size


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/mkrec-bench-backup"))
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="mixed")
    parser.add_argument("--runs", type=int, default=3, help="rounds of the three, in turn")
    args = parser.parse_args()
    mnt, dev = mount_corpus(args.work, args.corpus)
    out = args.work / "out"
    try:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        corpus = du(mnt)
        files = int(sh("find", mnt, "-xdev", "-printf", "x").count("x"))
        print(f"corpus {args.corpus}: {corpus / 1e9:.2f} GB, {files} entries in {mnt}", flush=True)
        # Warm the page cache. Through a pipe: GNU tar does not read file data when writing to /dev/null.
        subprocess.run(f"tar -cf - -C '{mnt}' . | cat > /dev/null", shell=True, check=True)
        plain, same, mkrecs, rss, same_ratios, plain_ratios, cpu_ratios = [], [], [], [], [], [], []
        for run in range(1, args.runs + 1):
            t_plain, _cpu_plain, _ = timed_baseline(mnt, out / "plain.tar.zst", [])
            t_same, cpu_same, same_size = timed_baseline(mnt, out / "same.tar.zst", SAME_OPTIONS)
            shutil.rmtree(out / "sets", ignore_errors=True)
            cpu = children_cpu()
            t_mkrec, samples = run_mkrec(mnt, out / "sets")
            cpu_mkrec = children_cpu() - cpu
            isos = sorted((out / "sets").rglob("*.iso"))
            iso_size = sum(p.stat().st_size for p in isos)
            plain.append(t_plain)
            same.append(t_same)
            mkrecs.append(t_mkrec)
            same_ratios.append(t_mkrec / t_same)
            plain_ratios.append(t_mkrec / t_plain)
            cpu_ratios.append(cpu_mkrec / cpu_same)
            rss += samples[len(samples) // 5 :] or samples
            print(f"round {run}: tar|zstd {t_plain:5.1f} s   same-options tar|zstd {t_same:5.1f} s "
                  f"(cpu {cpu_same:4.1f} s, {same_size / 1e9:.2f} GB)   mkrec {t_mkrec:5.1f} s "
                  f"({corpus / t_mkrec / 1e6:5.1f} MB/s, cpu {cpu_mkrec:4.1f} s, {len(isos)} ISO, "
                  f"{iso_size / 1e9:.2f} GB)   ratio {t_mkrec / t_same:.2f} "
                  f"(plain {t_mkrec / t_plain:.2f})")  # fmt: skip
        med = statistics.median
        print(f"tar | zstd -T0 -3, plain:        median {med(plain):6.1f} s")
        print(f"tar | zstd -T0 -3, same options: median {med(same):6.1f} s")
        print(f"mkrec, cd, dvd volumes:          median {med(mkrecs):6.1f} s")
        print(f"ratio mkrec / same-options baseline, median of {args.runs}: {med(same_ratios):.2f}   "
              f"(min {min(same_ratios):.2f}, max {max(same_ratios):.2f}; goal <= 1.10)")  # fmt: skip
        print(f"ratio mkrec / plain tar | zstd, median: {med(plain_ratios):.2f}")
        print(f"CPU ratio against the same-options baseline (user + system, tar included), median: "
              f"{med(cpu_ratios):.2f}   ({os.cpu_count()} CPUs: when all are busy, wall time follows "
              "CPU time)")  # fmt: skip
        print(
            f"mkrec RSS: peak {max(rss) / MiB:.0f} MiB, median {med(rss) / MiB:.0f} MiB, "
            f"min {min(rss) / MiB:.0f} MiB after each run's first fifth  (goal: flat, < 512 MiB)"
        )
    finally:
        subprocess.run(["umount", mnt], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
