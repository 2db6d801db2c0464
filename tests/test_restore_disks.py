"""start-restore and clone-disk on real loop devices: a source system the test builds (GPT: BIOS boot,
ESP as vfat unmounted so imaged raw, ext4 root, ext4 data; and an MBR variant), captured with the
layout code, backed up into a directory set, then restored and compared file by file."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import zstandard
from sourcesys import SourceSystem, build_source_system
from support import LoopDisks, sh

from mkrec.layout.capture import capture

pytestmark = pytest.mark.root
PIECE = 4 * 1024 * 1024  # small pieces: every stream is pasted back from several
LOGS = {"var/log/mkrec-restore.log", "var/log/mkrec-restore.journal", "lost+found"}


# ---- building, capturing and backing up the source ----


def _corpus(root: Path) -> None:
    """What a restore must carry: modes, owners, mtimes, links, xattrs, ACLs, sparse files."""
    d = root / "data" / "corpus"
    d.mkdir()
    (d / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (d / "text.txt").write_text("hello\n" * 10000)
    os.link(d / "text.txt", d / "hardlink.txt")
    (d / "link").symlink_to("text.txt")
    (d / "dangling").symlink_to("/nowhere")
    secret = d / "secret"
    secret.write_text("0600 root\n")
    secret.chmod(0o600)
    owned = d / "owned"
    owned.write_text("by 1234:5678\n")
    os.chown(owned, 1234, 5678)
    os.utime(owned, (1_000_000_000, 1_000_000_000))
    (d / "setuid").write_text("x")
    (d / "setuid").chmod(0o4755)
    with open(d / "sparse", "wb") as fh:
        fh.seek(8 * 1024 * 1024)
        fh.write(b"end")
    sh("setfattr", "-n", "user.mkrec", "-v", "kept", d / "text.txt")
    sh("setfacl", "-m", "u:1234:rw", d / "secret")
    (d / "odd name ü").write_text("odd\n")
    (root / "etc" / "deep" / "er").mkdir(parents=True)
    (root / "etc" / "deep" / "er" / "f").write_text("deep\n")


def _write_stream(src: subprocess.Popen[bytes] | Path, out_dir: Path, name: str) -> None:
    """tar (or a device) -> zstd frames -> pieces <name>.NNN, the set's format."""
    cctx = zstandard.ZstdCompressor(level=3)
    data = bytearray()
    if isinstance(src, Path):
        with open(src, "rb") as fh:
            while chunk := fh.read(1 << 20):
                data += cctx.compress(chunk)
    else:
        assert src.stdout is not None
        while chunk := src.stdout.read(1 << 20):
            data += cctx.compress(chunk)  # independent frames, as the backup writes them
        assert src.wait() == 0
    for i in range(0, max(len(data), 1), PIECE):
        (out_dir / f"{name}.{i // PIECE:03d}").write_bytes(data[i : i + PIECE])


def backup(src: SourceSystem, set_dir: Path) -> None:
    """Capture with the layout code, then one stream per filesystem (the ESP as an image)."""
    capture([src.disk], set_dir / "etc" / "recovery", src.root, "srchost", datetime(2026, 1, 2, 3, 4))
    out = set_dir / "backup"
    out.mkdir(parents=True)
    for dev, mnt in ((src.root_dev, src.root), (src.data_dev, src.root / "data")):
        tar = subprocess.Popen(
            ["tar", "-c", "-f", "-", "-C", str(mnt), "--one-file-system", "--numeric-owner", "--xattrs",
             "--xattrs-include=*", "--acls", "--sparse", "."],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        _write_stream(tar, out, f"{Path(dev).name}.ext4.tar.zst")
    if src.esp_dev:
        _write_stream(Path(src.esp_dev), out, f"{Path(src.esp_dev).name}.vfat.img.zst")


@pytest.fixture(scope="module")
def gpt_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SourceSystem, Path]]:
    work = tmp_path_factory.mktemp("gpt-src")
    disks = LoopDisks(work)
    try:
        src = build_source_system(disks, work, "gpt", "gpt-marker")
        _corpus(src.root)
        sh("sync")
        backup(src, work / "set")
        yield src, work / "set"
    finally:
        disks.cleanup()


# ---- looking at the result ----


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a restore must keep, per path (hard links as shared inode groups)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel in LOGS or rel.startswith("lost+found"):
                continue
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            content: object = None
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            link: object = st.st_ino if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) else ""
            mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else st.st_mtime_ns // 10**9
            if rel.startswith("boot/grub") and rel != "boot/grub/grub.cfg":
                mtime = None  # the boot loader reinstall rewrites GRUB's modules (same content)
                if rel.endswith("core.img"):
                    content = None  # ... and makes a new core.img for the disk it is on now
            # xfs also shows an ACL as trusted.SGI_ACL_*: the same ACL, not another attribute
            names = [
                a for a in os.listxattr(path, follow_symlinks=False) if not a.startswith("trusted.SGI_ACL")
            ]
            xattrs = tuple(sorted((a, os.getxattr(path, a, follow_symlinks=False)) for a in names))
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, content, link, xattrs)
    # hard links: each linked file names the first path of its group (inode numbers differ)
    groups: dict[object, list[str]] = {}
    for rel, entry in out.items():
        if entry[6] != "":
            groups.setdefault(entry[6], []).append(rel)
    for members in groups.values():
        for rel in members:
            out[rel] = (*out[rel][:6], min(members), out[rel][7])
    return out


def fs_ids(node: str) -> tuple[str, str, str]:
    out = sh("blkid", "-c", "/dev/null", "-o", "export", node)
    v = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return v.get("TYPE", ""), v.get("UUID", ""), v.get("LABEL", "")


def table_ids(disk: str) -> list[str]:
    """The dump without the device's own name and size: what must be identical."""
    return [
        line.split(":", 1)[1].strip() if line.startswith("/dev/") else line
        for line in sh("sfdisk", "--dump", disk).splitlines()
        if not line.startswith(("device:", "last-lba:"))
    ]


def sha(path: str, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        left = length
        while chunk := fh.read(1 << 20 if left is None else min(1 << 20, left)):
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
                if not left:
                    break
    return h.hexdigest()


def mkrec(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mkrec", "--log", "/dev/null", "restore", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"mkrec restore {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def restore(action: str, set_dir: Path, src_disk: str, target: str, root: Path, *extra: str) -> str:
    proc = mkrec(action, "--source", str(set_dir), "--map", f"{Path(src_disk).name}={target}",
                 "--target", str(root), "--yes", *extra)  # fmt: skip
    return proc.stdout + proc.stderr


def mounted_tree(
    disks: LoopDisks, target: str, root: Path, src: SourceSystem
) -> dict[str, tuple[object, ...]]:
    n_root, n_data = src.root_dev[-1], src.data_dev[-1]
    disks.mount(f"{target}p{n_root}", root)
    disks.mount(f"{target}p{n_data}", root / "data")
    return tree(root)


def check_same_system(
    src: SourceSystem, target: str, disks: LoopDisks, where: Path, same_table: bool
) -> None:
    if same_table:
        assert table_ids(target) == table_ids(src.disk)
    for dev in (src.root_dev, src.data_dev, src.esp_dev):
        if dev:
            assert fs_ids(target + dev.removeprefix(src.disk)) == fs_ids(dev)
    if src.esp_dev:
        n = int(src.esp_dev.rsplit("p", 1)[1])
        size = int(sh("blockdev", "--getsize64", src.esp_dev))
        assert sha(f"{target}p{n}") == sha(src.esp_dev, size), "the ESP must come back byte for byte"
    assert mounted_tree(disks, target, where, src) == tree(src.root)
    log = (where / "var" / "log" / "mkrec-restore.log").read_text()
    assert "Unpack /data" in log
    assert b"GRUB" in Path(target).read_bytes()[:512], "GRUB's boot code in the MBR"


# ---- the tests ----


def test_start_restore_same_size_disk(gpt_source: tuple[SourceSystem, Path], loop_disks: LoopDisks,
                                      tmp_path: Path) -> None:  # fmt: skip
    src, set_dir = gpt_source
    target = loop_disks.create("256M")
    t0 = time.monotonic()
    out = restore("start", set_dir, src.disk, target, tmp_path / "target")
    print(f"start-restore same size: {time.monotonic() - t0:.1f} s")
    assert f"ERASE {target}" in out
    loop_disks.rescan(target)
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=True)


def test_start_restore_larger_disk(gpt_source: tuple[SourceSystem, Path], loop_disks: LoopDisks,
                                   tmp_path: Path) -> None:  # fmt: skip
    src, set_dir = gpt_source
    target = loop_disks.create("400M")
    restore("start", set_dir, src.disk, target, tmp_path / "target")
    loop_disks.rescan(target)
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=True)


def test_too_small_target_is_refused_before_any_write(
    gpt_source: tuple[SourceSystem, Path], loop_disks: LoopDisks, tmp_path: Path
) -> None:
    src, set_dir = gpt_source
    target = loop_disks.create("200M")
    with open(target, "r+b") as fh:
        fh.write(os.urandom(1 << 20))
    before = sha(target)
    proc = mkrec("start", "--source", str(set_dir), "--map", f"{Path(src.disk).name}={target}",
                 "--target", str(tmp_path / "t"), "--yes", check=False)  # fmt: skip
    assert proc.returncode == 1
    assert f"{target} (200.0 MiB) is smaller than saved disk" in proc.stderr
    assert "nothing was written" in proc.stderr
    assert sha(target) == before


def test_the_disk_holding_the_backup_is_refused(
    gpt_source: tuple[SourceSystem, Path], tmp_path: Path
) -> None:
    src, set_dir = gpt_source
    # the source disk has filesystems mounted: it is never a target
    proc = mkrec("start", "--source", str(set_dir), "--map", f"{Path(src.disk).name}={src.disk}",
                 "--target", str(tmp_path / "t"), "--yes", check=False)  # fmt: skip
    assert proc.returncode == 1 and f"refusing to write {src.disk}" in proc.stderr


def test_killed_restore_resumes_to_the_same_tree(gpt_source: tuple[SourceSystem, Path], loop_disks: LoopDisks,
                                                 tmp_path: Path) -> None:  # fmt: skip
    src, set_dir = gpt_source
    target = loop_disks.create("256M")
    root = tmp_path / "target"
    argv = [sys.executable, "-m", "mkrec", "--log", "/dev/null", "restore", "start", "--source", str(set_dir),
            "--map", f"{Path(src.disk).name}={target}", "--target", str(root), "--yes"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = root / "var" / "log" / "mkrec-restore.journal"
    deadline = time.monotonic() + 120
    # kill it once the root is unpacked and /data is under way: a power loss in the middle
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and '"unpack:/"' in journal.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the restore finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a power loss: nothing stays mounted and /tmp is empty
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):
        if f" {root}" in line:
            subprocess.run(["umount", line.split()[1]], check=True)
    for j in Path("/tmp").glob("mkrec-restore-*.journal"):
        if f'"table:{target}"' in j.read_text():
            j.unlink()
    out = restore("start", set_dir, src.disk, target, root)
    assert "finished in an earlier run, skipped" in out
    assert "Unpack /: finished in an earlier run" in out or "Unpack /" in out
    loop_disks.rescan(target)
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=True)


def test_clone_to_a_larger_disk(gpt_source: tuple[SourceSystem, Path], loop_disks: LoopDisks,
                                tmp_path: Path) -> None:  # fmt: skip
    src, set_dir = gpt_source
    target = loop_disks.create(str(int(256 * 1.4)) + "M")
    out = restore("clone", set_dir, src.disk, target, tmp_path / "target")
    assert "before" in out and "after" in out
    loop_disks.rescan(target)
    n_root = int(src.root_dev.rsplit("p", 1)[1])
    old = int(sh("blockdev", "--getsize64", src.root_dev))
    new = int(sh("blockdev", "--getsize64", f"{target}p{n_root}"))
    assert new > old * 1.3
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=False)


def test_clone_to_a_smaller_disk_that_fits(gpt_source: tuple[SourceSystem, Path], loop_disks: LoopDisks,
                                          tmp_path: Path) -> None:  # fmt: skip
    src, set_dir = gpt_source
    target = loop_disks.create("230M")
    restore("clone", set_dir, src.disk, target, tmp_path / "target")
    loop_disks.rescan(target)
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=False)


# ---- restore-fs ----


def one_partition_disk(disks: LoopDisks, size: str) -> tuple[str, str]:
    disk = disks.create(size)
    sh("sfdisk", "-q", disk, input="label: gpt\ntype=linux\n")
    disks.rescan(disk)
    return disk, f"{disk}p1"


def test_restore_fs_ext4_as_xfs_updates_fstab(gpt_source: tuple[SourceSystem, Path], loop_disks: LoopDisks,
                                              tmp_path: Path) -> None:  # fmt: skip
    src, set_dir = gpt_source
    _disk, node = one_partition_disk(loop_disks, "330M")  # mkfs.xfs wants 300 MiB
    other, other_node = one_partition_disk(loop_disks, "64M")
    sh("mkfs.ext4", "-q", "-L", "untouched", other_node)
    other_before = sha(other)
    system = tmp_path / "system"  # a restored system, mounted: its fstab must follow
    (system / "etc").mkdir(parents=True)
    (system / "etc" / "fstab").write_text((src.root / "etc" / "fstab").read_text())
    proc = mkrec("fs", "--source", str(set_dir), "--map", f"{Path(src.data_dev).name}={node}",
                 "--as-type", "xfs", "--target", str(system), "--yes")  # fmt: skip
    assert "make xfs" in proc.stdout
    fstype, uuid, label = fs_ids(node)
    assert (fstype, label) == ("xfs", "data")
    assert uuid != fs_ids(src.data_dev)[1], "the source disk still has the saved UUID: a new one is made"
    data_line = next(line for line in (system / "etc" / "fstab").read_text().splitlines() if " /data " in line
                     or "\t/data\t" in line)  # fmt: skip
    assert data_line.split()[:3] == [f"UUID={uuid}", "/data", "xfs"]
    loop_disks.mount(node, tmp_path / "check")
    assert tree(tmp_path / "check") == tree(src.root / "data")
    assert sha(other) == other_before, "nothing else is touched"


def test_restore_fs_ext3_as_ext4(loop_disks: LoopDisks, tmp_path: Path) -> None:
    disk, part = one_partition_disk(loop_disks, "96M")
    sh("mkfs.ext3", "-q", "-L", "old3", part)
    root = loop_disks.mount(part, tmp_path / "src3")
    (root / "etc").mkdir()
    (root / "data").mkdir()
    _corpus(root)
    sh("sync")
    set_dir = tmp_path / "set"
    capture([disk], set_dir / "etc" / "recovery", root, "h3", datetime(2026, 1, 2, 3, 4))
    (set_dir / "backup").mkdir()
    argv = ["tar", "-c", "-f", "-", "-C", str(root), "--numeric-owner", "--xattrs", "--xattrs-include=*",
            "--acls", "--sparse", "."]  # fmt: skip
    tar = subprocess.Popen(argv, stdout=subprocess.PIPE)
    _write_stream(tar, set_dir / "backup", f"{Path(part).name}.ext3.tar.zst")
    _target_disk, node = one_partition_disk(loop_disks, "96M")
    mkrec("fs", "--source", str(set_dir), "--map", f"{Path(part).name}={node}", "--as-type", "ext4",
          "--target", str(tmp_path / "nosystem"), "--yes")  # fmt: skip
    fstype, _uuid, label = fs_ids(node)
    assert (fstype, label) == ("ext4", "old3")
    loop_disks.mount(node, tmp_path / "check")
    assert tree(tmp_path / "check") == tree(root)


def test_restore_fs_refuses_a_mounted_target(gpt_source: tuple[SourceSystem, Path], tmp_path: Path) -> None:
    src, set_dir = gpt_source
    proc = mkrec("fs", "--source", str(set_dir), "--map", f"{Path(src.data_dev).name}={src.data_dev}",
                 "--target", str(tmp_path), "--yes", check=False)  # fmt: skip
    assert proc.returncode == 1 and f"refusing to write {src.data_dev}" in proc.stderr


def test_start_restore_mbr_disk(loop_disks: LoopDisks, tmp_path: Path) -> None:
    src = build_source_system(loop_disks, tmp_path, "dos", "mbr-marker")
    _corpus(src.root)
    sh("sync")
    backup(src, tmp_path / "set")
    target = loop_disks.create("300M")
    restore("start", tmp_path / "set", src.disk, target, tmp_path / "target")
    loop_disks.rescan(target)
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=True)
