"""Used-blocks images on real loop devices: an ext4 partition listed in [source] raw is imaged with
partclone, an NTFS volume (mounted read-only through ntfs-3g, so found as a file system tar cannot
carry) with ntfsclone; both are backed up into a real set (mode path), checked with verify / ls /
extract, and restored with `mkrec restore fs` onto partitions of the same and of a larger size,
then checked (e2fsck, the saved UUID, the file system grown to fill the larger partition) and
compared file by file on the host."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import support
from support import LoopDisks, Tree, file_tree, fs_ids, sh, stream_sha256

from mkrec.backup import run_backup
from mkrec.backup.manifest import ImageFormat, StreamRecord
from mkrec.backup.setreader import open_set
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.layout.capture import capture

pytestmark = pytest.mark.root
MiB = 1024 * 1024
STARTED = datetime(2026, 2, 3, 4, 5)


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (apt-get install partclone ntfs-3g)")


def partition_disk(disks: LoopDisks, disk_size: str, part_mib: int | None = None) -> tuple[str, str]:
    """A GPT disk with one Linux partition (part_mib MiB, or the whole disk)."""
    disk = disks.create(disk_size)
    size = f"size={part_mib}MiB, " if part_mib else ""
    sh("sfdisk", "-q", disk, input=f"label: gpt\n{size}type=linux\n")
    disks.rescan(disk)
    return disk, f"{disk}p1"


def size_of(node: str) -> int:
    return int(sh("blockdev", "--getsize64", node))


def ext4_bytes(node: str) -> int:
    """The ext4 file system's own size: its block count times its block size (dumpe2fs -h)."""
    fields = dict(line.split(":", 1) for line in sh("dumpe2fs", "-h", node).splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def ntfs_bytes(node: str) -> int:
    """The NTFS volume's own size: total sectors times bytes per sector, from its boot sector."""
    with open(node, "rb") as fh:
        boot = fh.read(512)
    (sector,) = struct.unpack_from("<H", boot, 0x0B)
    (sectors,) = struct.unpack_from("<q", boot, 0x28)
    return sectors * sector


def tree(root: Path) -> Tree:
    return file_tree(root, skip=("lost+found", "System Volume Information"))


def mkrec(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return support.mkrec("--log", "/dev/null", *args, check=check)


def write_files(root: Path, rng: random.Random, symlinks: bool = True) -> None:
    (root / "data").mkdir()
    (root / "data" / "random.bin").write_bytes(rng.randbytes(12 * MiB))
    (root / "data" / "text.txt").write_text("the used blocks only\n" * 100_000)
    for i in range(200):
        d = root / "small" / f"d{i % 13}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03d}").write_bytes(rng.randbytes(rng.randrange(0, 9000)))
    (root / "odd name ü").write_text("odd\n")
    os.utime(root / "data" / "text.txt", (1_000_000_000, 1_000_000_000))
    if symlinks:
        (root / "data" / "link").symlink_to("text.txt")
        os.link(root / "data" / "text.txt", root / "data" / "hard")


def backup_set(root: Path, work: Path, raw: list[str]) -> tuple[Path, float]:
    """The real backup, mode path, of what is mounted under root plus the raw partitions."""
    data = {
        "build": {"mode": "path", "output": str(work / "out")},
        "source": {"root": str(root), "raw": raw},
        "path": {"dir": str(work / "pathset")},
    }
    ctx = Context(config_from_dict(data), hostname="imghost", started=STARTED, staging=work / "isofs")
    t0 = time.monotonic()
    path = run_backup(ctx, None)
    return path, time.monotonic() - t0


def the_stream(set_dir: Path) -> StreamRecord:
    bset = open_set(set_dir)
    try:
        (stream,) = bset.streams.values()
        return stream
    finally:
        bset.close()


def restore_fs(saved: Saved, target: str, work: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    t0 = time.monotonic()
    proc = mkrec("restore", "fs", "--source", str(saved.set_dir), "--layout", str(saved.recovery),
                 "--map", f"{Path(saved.part).name}={target}", "--target", str(work / "no-system"), "--yes",
                 check=check)  # fmt: skip
    took = time.monotonic() - t0
    print(f"restore fs of {saved.part} onto {target} ({size_of(target) // MiB} MiB): {took:.1f} s")
    return proc


@dataclass(frozen=True)
class Saved:
    part: str
    set_dir: Path
    recovery: Path
    tree: dict[str, tuple[object, ...]]
    ids: tuple[str, str, str]


# ---- ext4 in [source] raw: partclone ----


@pytest.fixture(scope="module")
def ext4_saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    need("partclone.ext4", "partclone.restore")
    work = tmp_path_factory.mktemp("img-ext4")
    disks = LoopDisks(work)
    try:
        disk, part = partition_disk(disks, "200M", 160)
        # Free space full of random bytes: an every-block image could not shrink it by compressing
        with open(part, "wb") as fh:
            for _ in range(160):
                fh.write(os.urandom(MiB))
        sh("mkfs.ext4", "-q", "-E", "nodiscard", "-L", "imaged", part)  # keeps the random free space
        mnt = disks.mount(part, work / "src")
        write_files(mnt, random.Random(7))
        sh("setfattr", "-n", "user.kept", "-v", "yes", mnt / "data" / "text.txt")
        os.chown(mnt / "data" / "random.bin", 1234, 5678)
        os.chmod(mnt / "small" / "d1", 0o700)
        expected = tree(mnt)
        sh("umount", mnt)
        disks.mounts.remove(mnt)
        root = work / "root"  # nothing is mounted under it: only the raw partition is backed up
        root.mkdir()
        capture([disk], work / "recovery", root, "imghost", STARTED)
        set_dir, took = backup_set(root, work, [part])
        print(f"backup of a {size_of(part) // MiB} MiB ext4 with partclone: {took:.1f} s")
        yield Saved(part, set_dir, work / "recovery", expected, fs_ids(part))
    finally:
        disks.cleanup()


def test_partclone_stream_holds_only_the_used_blocks(ext4_saved: Saved) -> None:
    stream = the_stream(ext4_saved.set_dir)
    part_size = size_of(ext4_saved.part)
    assert (stream.kind, stream.image, stream.fstype) == ("image", ImageFormat.PARTCLONE, "ext4")
    assert stream.fs_size == part_size  # the file system fills its partition
    assert stream.size is not None and stream.compressed_size is not None
    print(f"partition {part_size / MiB:.0f} MiB (free blocks random): stream {stream.size / MiB:.1f} MiB, "
          f"compressed {stream.compressed_size / MiB:.1f} MiB")  # fmt: skip
    # ~15 MiB of files in 160 MiB: the image is the used blocks, not the partition
    assert 14 * MiB < stream.size < part_size // 5
    assert stream.compressed_size < part_size // 4  # every block would compress to ~the partition
    bset = open_set(ext4_saved.set_dir)
    entries, missing = bset.catalog()
    bset.close()
    assert not missing and len(entries) == 1
    used = entries[0].size
    assert (entries[0].type, entries[0].path) == ("image", ".")
    assert 14 * MiB < used <= stream.size, "the catalog counts the bytes in use, as partclone reported them"


@pytest.mark.parametrize(("disk_size", "part_mib"), [("200M", 160), ("300M", 256)], ids=["same", "larger"])
def test_partclone_image_restores_fsck_clean_with_the_same_tree(
    ext4_saved: Saved, loop_disks: LoopDisks, tmp_path: Path, disk_size: str, part_mib: int
) -> None:
    _disk, target = partition_disk(loop_disks, disk_size, part_mib)
    out = restore_fs(ext4_saved, target, tmp_path)
    assert f"ERASE {target}" in out.stdout and "write the partclone image" in out.stdout
    grown = f"{target}: ext4 grown by 96.0 MiB to fill it"
    assert (grown in out.stdout + out.stderr) == (part_mib > 160), out.stdout + out.stderr
    fs_size, part_size = ext4_bytes(target), size_of(target)
    print(f"ext4 after the restore: {fs_size / MiB:.1f} MiB in a {part_size / MiB:.1f} MiB partition")
    assert part_size - MiB < fs_size <= part_size, "the file system fills the partition"
    fsck = subprocess.run(["e2fsck", "-f", "-n", target], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert fs_ids(target) == ext4_saved.ids, "type, UUID and label come back with the image"
    mnt = loop_disks.mount(target, tmp_path / "check", "-o", "ro")
    assert tree(mnt) == ext4_saved.tree


def test_a_too_small_partition_is_refused_before_writing(
    ext4_saved: Saved, loop_disks: LoopDisks, tmp_path: Path
) -> None:
    _disk, target = partition_disk(loop_disks, "200M", 150)
    marker = os.urandom(MiB)
    with open(target, "r+b") as fh:
        fh.write(marker)
    proc = restore_fs(ext4_saved, target, tmp_path, check=False)
    assert proc.returncode == 1
    assert f"{target} (150.0 MiB) is too small for the image" in proc.stderr
    assert "nothing was written" in proc.stderr
    with open(target, "rb") as fh:
        assert fh.read(MiB) == marker


def test_verify_ls_and_extract_of_an_image(ext4_saved: Saved, tmp_path: Path) -> None:
    set_dir = str(ext4_saved.set_dir)
    assert mkrec("verify", set_dir).stdout.startswith("OK: CDrec-20260203-0405: 1 of 1 volumes")
    stream = the_stream(ext4_saved.set_dir)
    (line,) = mkrec("ls", set_dir).stdout.splitlines()
    assert line.startswith("irw------- 0/0 ")
    assert line.endswith(f"{ext4_saved.part} (partclone image of ext4, {line.split()[2]} bytes in use)")
    proc = mkrec("extract", set_dir, ext4_saved.part, "-C", str(tmp_path / "x"))
    image = tmp_path / "x" / f"{Path(ext4_saved.part).name}.ext4.partclone.img"
    assert f"to put it on a partition: partclone.restore --source {image} --output /dev/TARGET" in proc.stderr
    whole = stream_sha256(ext4_saved.set_dir, stream.name)
    assert hashlib.sha256(image.read_bytes()).hexdigest() == whole, "the whole image, byte for byte"


# ---- NTFS, mounted read-only: ntfsclone ----


@pytest.fixture(scope="module")
def ntfs_saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    need("ntfsclone", "mkntfs", "ntfs-3g")
    if not Path("/dev/fuse").exists():
        pytest.skip("needs /dev/fuse for ntfs-3g")
    work = tmp_path_factory.mktemp("img-ntfs")
    disks = LoopDisks(work)
    try:
        disk, part = partition_disk(disks, "160M", 128)
        sh("mkntfs", "-Q", "-q", "-F", "-L", "winvol", part)
        rw = work / "rw"
        rw.mkdir()
        sh("ntfs-3g", part, rw)
        disks.mounts.append(rw)
        write_files(rw, random.Random(11), symlinks=False)
        sh("umount", rw)
        disks.mounts.remove(rw)
        root = work / "root"
        (root / "win").mkdir(parents=True)
        sh("ntfs-3g", "-o", "ro", part, root / "win")  # found under root as fuseblk: imaged
        disks.mounts.append(root / "win")
        expected = tree(root / "win")
        capture([disk], work / "recovery", root, "imghost", STARTED)
        set_dir, took = backup_set(root, work, [])
        print(f"backup of a {size_of(part) // MiB} MiB NTFS with ntfsclone: {took:.1f} s")
        sh("umount", root / "win")
        disks.mounts.remove(root / "win")
        yield Saved(part, set_dir, work / "recovery", expected, fs_ids(part))
    finally:
        disks.cleanup()


def test_ntfsclone_image_of_a_mounted_ntfs(ntfs_saved: Saved) -> None:
    stream = the_stream(ntfs_saved.set_dir)
    part_size = size_of(ntfs_saved.part)
    assert (stream.kind, stream.image, stream.fstype, stream.mountpoint) == (
        "image", ImageFormat.NTFSCLONE, "ntfs", "/win",
    )  # fmt: skip
    assert stream.name == f"{Path(ntfs_saved.part).name}.ntfs.img.zst"
    assert stream.fs_size is not None and part_size - 4096 < stream.fs_size <= part_size
    assert stream.size is not None and stream.compressed_size is not None
    print(f"NTFS partition {part_size / MiB:.0f} MiB: ntfsclone stream {stream.size / MiB:.1f} MiB, "
          f"compressed {stream.compressed_size / MiB:.1f} MiB")  # fmt: skip
    assert stream.size < part_size // 3


@pytest.mark.parametrize(("disk_size", "part_mib"), [("160M", 128), ("300M", 256)], ids=["same", "larger"])
def test_ntfsclone_image_restores_with_the_same_tree(
    ntfs_saved: Saved, loop_disks: LoopDisks, tmp_path: Path, disk_size: str, part_mib: int
) -> None:
    _disk, target = partition_disk(loop_disks, disk_size, part_mib)
    out = restore_fs(ntfs_saved, target, tmp_path)
    assert "write the ntfsclone image" in out.stdout
    grown = f"{target}: ntfs grown by 128.0 MiB to fill it"
    assert (grown in out.stdout + out.stderr) == (part_mib > 128), out.stdout + out.stderr
    fs_size, part_size = ntfs_bytes(target), size_of(target)
    print(f"NTFS after the restore: {fs_size / MiB:.1f} MiB in a {part_size / MiB:.1f} MiB partition")
    assert part_size - MiB < fs_size <= part_size, "the volume fills the partition"
    sh("ntfsfix", "--no-action", target)  # boot sectors, $MFT and its mirror consistent
    assert fs_ids(target) == ntfs_saved.ids
    mnt = tmp_path / "check"
    mnt.mkdir()
    sh("ntfs-3g", "-o", "ro", target, mnt)
    loop_disks.mounts.append(mnt)
    assert tree(mnt) == ntfs_saved.tree
