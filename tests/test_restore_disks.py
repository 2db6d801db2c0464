"""start-restore and clone-disk on real loop devices: a source system the test builds (GPT: BIOS boot,
ESP as vfat unmounted so imaged raw, ext4 root, ext4 data; and an MBR variant), captured with the
layout code, backed up into a directory set, then restored and compared file by file."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import support
from sourcesys import SourceSystem, build_source_system
from support import LoopDisks, Tree, file_tree, fs_ids, sh, stream_sha256

from mkrec.backup import cutstream, run_backup
from mkrec.backup.setreader import open_set
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.iso import BootPayload, BootSpec
from mkrec.layout.capture import capture
from mkrec.layout.model import Layout
from mkrec.restore.decide.source import open_restore_set

pytestmark = pytest.mark.root
PIECE = 4 * 1024 * 1024
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


STARTED = datetime(2026, 1, 2, 3, 4)


def real_backup(root: Path, work: Path, mode: str, layout: Layout | None = None,
                started: datetime = STARTED, payload: BootPayload | None = None,
                security: dict[str, object] | None = None) -> Path:  # fmt: skip
    """The real backup (mkrec.backup.run.backup) of every filesystem mounted under root, and, as in
    `mkrec build`, images of the file systems in `layout` that are not mounted. Mode path writes a set
    directory, mode cd 16 MiB ISO volumes; `security`: the [security] section. Returns the set's
    directory."""
    data = {
        "build": {"mode": mode, "output": str(work / "out")},
        "media": {"size": "16M"},
        "source": {"root": str(root)},
        "path": {"dir": str(work / "pathset")},
        "security": security or {},
    }
    ctx = Context(config_from_dict(data), hostname="srchost", started=started, staging=work / "isofs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cutstream, "PIECE_MAX", PIECE)  # small pieces: every stream is pasted back from several
        return run_backup(ctx, payload, layout)


def layout_payload(recovery: Path, work: Path) -> BootPayload:
    """What volume 1 carries besides the backup: a (stand-in) boot image and etc/recovery, which the
    restore reads its layout from when no --layout is given."""
    boot = work / "isolinux.bin"
    boot.write_bytes(bytes(24 * 1024))
    entries = [(boot, "/isolinux/isolinux.bin")]
    entries += [(f, f"/etc/recovery/{f.name}") for f in sorted(recovery.iterdir()) if f.is_file()]
    return BootPayload(tuple(entries), BootSpec("/isolinux/isolinux.bin", None, hybrid=False))


@dataclass(frozen=True)
class Saved:
    src: SourceSystem
    path_set: Path  # mode path: one directory
    iso_set: Path  # mode cd: a directory of ISO volumes, the layout on volume 1
    layout: Path  # the captured etc/recovery


def backup(
    src: SourceSystem, work: Path, iso: bool = False, security: dict[str, object] | None = None
) -> Saved:
    """Capture with the layout code, then the real backup: the unmounted ESP is imaged because the
    layout has it (nothing names it in [source] raw)."""
    recovery = work / "recovery"
    layout = capture([src.disk], recovery, src.root, "srchost", STARTED)
    path_set = real_backup(src.root, work, "path", layout, security=security)
    payload = layout_payload(recovery, work)
    iso_set = (
        real_backup(src.root, work, "cd", layout, payload=payload, security=security) if iso else path_set
    )
    return Saved(src, path_set, iso_set, recovery)


@pytest.fixture(scope="module")
def gpt_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    work = tmp_path_factory.mktemp("gpt-src")
    disks = LoopDisks(work)
    try:
        src = build_source_system(disks, work, "gpt", "gpt-marker")
        _corpus(src.root)
        sh("sync")
        yield backup(src, work, iso=True)
    finally:
        disks.cleanup()


# ---- looking at the result ----


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


def source_args(saved: Saved, iso: bool = False) -> list[str]:
    """The ISO set carries its layout on volume 1; the path set is given the captured one."""
    if iso:
        return ["--source", str(saved.iso_set)]
    return ["--source", str(saved.path_set), "--layout", str(saved.layout)]


def restore(action: str, saved: Saved, target: str, root: Path, *extra: str, iso: bool = False) -> str:
    proc = mkrec(action, *source_args(saved, iso), "--map", f"{Path(saved.src.disk).name}={target}",
                 "--target", str(root), "--yes", *extra)  # fmt: skip
    return proc.stdout + proc.stderr


def tree(root: Path) -> Tree:
    """Everything a restore must keep, except what the boot loader reinstall rewrites."""
    out = file_tree(root, skip=tuple(LOGS))
    for rel, entry in out.items():
        if rel.startswith("boot/grub") and rel != "boot/grub/grub.cfg":
            # the reinstall rewrites GRUB's modules (same content) and makes a new core.img for
            # the disk it is on now
            content = None if rel.endswith("core.img") else entry[5]
            out[rel] = (*entry[:4], None, content, *entry[6:])
    return out


def mkrec(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return support.mkrec("--log", "/dev/null", "restore", *args, check=check)


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


def test_start_restore_same_size_disk_from_iso_volumes(gpt_source: Saved, loop_disks: LoopDisks,
                                                       tmp_path: Path) -> None:  # fmt: skip
    src = gpt_source.src
    isos = sorted(gpt_source.iso_set.glob("CDrec-*-vol*.iso"))
    assert len(isos) >= 3, isos
    bset = open_set(gpt_source.iso_set)
    spread = {p.volume for s in bset.streams.values() for p in s.pieces}
    bset.close()
    assert len(spread) >= 3, "the streams must be read across three volumes or more"
    target = loop_disks.create("256M")
    t0 = time.monotonic()
    out = restore("start", gpt_source, target, tmp_path / "target", iso=True)
    print(f"start-restore same size from {len(isos)} ISO volumes: {time.monotonic() - t0:.1f} s")
    assert f"ERASE {target}" in out
    assert "Backup set CDrec-20260102-0304" in out
    loop_disks.rescan(target)
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=True)


def test_start_restore_larger_disk(gpt_source: Saved, loop_disks: LoopDisks, tmp_path: Path) -> None:
    src = gpt_source.src
    target = loop_disks.create("400M")
    restore("start", gpt_source, target, tmp_path / "target")
    loop_disks.rescan(target)
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=True)


def test_too_small_target_is_refused_before_any_write(
    gpt_source: Saved, loop_disks: LoopDisks, tmp_path: Path
) -> None:
    src = gpt_source.src
    target = loop_disks.create("200M")
    with open(target, "r+b") as fh:
        fh.write(os.urandom(1 << 20))
    before = sha(target)
    proc = mkrec("start", *source_args(gpt_source), "--map", f"{Path(src.disk).name}={target}",
                 "--target", str(tmp_path / "t"), "--yes", check=False)  # fmt: skip
    assert proc.returncode == 1
    assert f"{target} (200.0 MiB) is smaller than saved disk" in proc.stderr
    assert "nothing was written" in proc.stderr
    assert sha(target) == before


def test_the_disk_holding_the_backup_is_refused(gpt_source: Saved, tmp_path: Path) -> None:
    src = gpt_source.src
    # the source disk has filesystems mounted: it is never a target
    proc = mkrec("start", *source_args(gpt_source), "--map", f"{Path(src.disk).name}={src.disk}",
                 "--target", str(tmp_path / "t"), "--yes", check=False)  # fmt: skip
    assert proc.returncode == 1 and f"refusing to write {src.disk}" in proc.stderr


def test_killed_restore_resumes_to_the_same_tree(gpt_source: Saved, loop_disks: LoopDisks,
                                                 tmp_path: Path) -> None:  # fmt: skip
    src = gpt_source.src
    target = loop_disks.create("256M")
    root = tmp_path / "target"
    argv = [sys.executable, "-m", "mkrec", "--log", "/dev/null", "restore", "start", *source_args(gpt_source),
            "--map", f"{Path(src.disk).name}={target}", "--target", str(root), "--yes"]  # fmt: skip
    # Its own process group: a power loss stops tar and every other child too, not just Python.
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    journal = root / "var" / "log" / "mkrec-restore.journal"
    deadline = time.monotonic() + 120
    # kill it once the root is unpacked and /data is under way: a power loss in the middle
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and '"unpack:/"' in journal.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the restore finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # a power loss: nothing stays mounted and /tmp is empty
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):
        if f" {root}" in line:
            subprocess.run(["umount", line.split()[1]], check=True)
    for j in Path("/tmp").glob("mkrec-restore-*.journal"):
        if f'"table:{target}"' in j.read_text():
            j.unlink()
    out = restore("start", gpt_source, target, root)
    assert "finished in an earlier run, skipped" in out
    assert "Unpack /: finished in an earlier run" in out or "Unpack /" in out
    loop_disks.rescan(target)
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=True)


def test_clone_to_a_larger_disk(gpt_source: Saved, loop_disks: LoopDisks, tmp_path: Path) -> None:
    src = gpt_source.src
    target = loop_disks.create(str(int(256 * 1.4)) + "M")
    out = restore("clone", gpt_source, target, tmp_path / "target")
    assert "before" in out and "after" in out
    loop_disks.rescan(target)
    n_root = int(src.root_dev.rsplit("p", 1)[1])
    old = int(sh("blockdev", "--getsize64", src.root_dev))
    new = int(sh("blockdev", "--getsize64", f"{target}p{n_root}"))
    assert new > old * 1.3
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=False)


def test_clone_grows_an_unmounted_partition_that_was_imaged(loop_disks: LoopDisks, tmp_path: Path) -> None:
    """A file system on the disk that is not mounted is imaged because the layout has it; clone-disk
    onto a 2x disk scales its partition like the others, and the restore grows it to fill it."""
    src = build_source_system(loop_disks, tmp_path, "dos", "imaged-marker")
    _corpus(src.root)
    expected = tree(src.root)
    sh("umount", src.root / "data")
    saved = backup(src, tmp_path)
    bset = open_set(saved.path_set)
    (stream,) = [s for s in bset.streams.values() if s.kind == "image"]
    bset.close()
    assert stream.device == src.data_dev and stream.mountpoint == ""
    target = loop_disks.create("512M")
    out = restore("clone", saved, target, tmp_path / "target")
    loop_disks.rescan(target)
    node = target + src.data_dev.removeprefix(src.disk)
    old, new = (int(sh("blockdev", "--getsize64", d)) for d in (src.data_dev, node))
    assert new > 1.8 * old, (old, new)
    head = dict(line.split(":", 1) for line in sh("dumpe2fs", "-h", node).splitlines() if ":" in line)
    fs_bytes = int(head["Block count"]) * int(head["Block size"])
    assert new - fs_bytes < 1 << 20, "the ext4 image grew to fill its larger partition"
    assert "grown by" in out
    assert mounted_tree(loop_disks, target, tmp_path / "check", src) == expected


def test_clone_to_a_smaller_disk_that_fits(gpt_source: Saved, loop_disks: LoopDisks, tmp_path: Path) -> None:
    src = gpt_source.src
    target = loop_disks.create("230M")
    restore("clone", gpt_source, target, tmp_path / "target")
    loop_disks.rescan(target)
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=False)


def test_a_missing_volume_is_asked_for_and_another_sets_volume_refused(
    gpt_source: Saved, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = gpt_source.src
    other = real_backup(src.root / "data", tmp_path / "other", "cd", started=datetime(2026, 5, 6, 7, 8))
    foreign = next(other.glob("*.iso"))
    isos = sorted(gpt_source.iso_set.glob("*.iso"), key=lambda p: int(p.stem.rsplit("vol", 1)[1]))
    setdir = tmp_path / "set"
    setdir.mkdir()
    for iso in isos[:1] + isos[2:]:
        os.link(iso, setdir / iso.name)
    name, total = "CDrec-20260102-0304", len(isos)
    with open_restore_set(setdir) as unattended:
        stream = next(n for n, s in unattended.streams.items() if any(p.volume == 2 for p in s.pieces))
        with pytest.raises(MkrecError, match=f"^volume 2 of {total} of {name} is missing"):
            for _ in unattended.chunks(stream):
                pass

    prompts: list[str] = []

    def person(prompt: str) -> str:
        prompts.append(prompt)
        if len(prompts) == 1:
            os.link(foreign, setdir / "zz-wrong-disc.iso")  # first the wrong disc ...
        else:
            (setdir / "zz-wrong-disc.iso").unlink()  # ... then the right one
            os.link(isos[1], setdir / isos[1].name)
        return ""

    digest = hashlib.sha256()
    with open_restore_set(setdir, person) as asking:
        for chunk in asking.chunks(stream):
            digest.update(chunk)
    assert digest.hexdigest() == stream_sha256(setdir, stream)
    assert prompts == [f"Please insert volume 2 of {total} of {name}, then press Enter (q: stop): "] * 2
    said = capsys.readouterr().out
    assert "zz-wrong-disc.iso is volume 1 of CDrec-20260506-0708" in said
    assert f"another backup set than {name}" in said


# ---- restore-fs ----


def one_partition_disk(disks: LoopDisks, size: str) -> tuple[str, str]:
    disk = disks.create(size)
    sh("sfdisk", "-q", disk, input="label: gpt\ntype=linux\n")
    disks.rescan(disk)
    return disk, f"{disk}p1"


def test_restore_fs_ext4_as_xfs_updates_fstab(gpt_source: Saved, loop_disks: LoopDisks,
                                              tmp_path: Path) -> None:  # fmt: skip
    src = gpt_source.src
    _disk, node = one_partition_disk(loop_disks, "330M")  # mkfs.xfs wants 300 MiB
    other, other_node = one_partition_disk(loop_disks, "64M")
    sh("mkfs.ext4", "-q", "-L", "untouched", other_node)
    other_before = sha(other)
    system = tmp_path / "system"  # a restored system, mounted: its fstab must follow
    (system / "etc").mkdir(parents=True)
    (system / "etc" / "fstab").write_text((src.root / "etc" / "fstab").read_text())
    proc = mkrec("fs", *source_args(gpt_source, iso=True), "--map", f"{Path(src.data_dev).name}={node}",
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
    capture([disk], tmp_path / "recovery", root, "h3", STARTED)
    set_dir = real_backup(root, tmp_path, "path")
    _target_disk, node = one_partition_disk(loop_disks, "96M")
    mkrec("fs", "--source", str(set_dir), "--layout", str(tmp_path / "recovery"),
          "--map", f"{Path(part).name}={node}", "--as-type", "ext4",
          "--target", str(tmp_path / "nosystem"), "--yes")  # fmt: skip
    fstype, _uuid, label = fs_ids(node)
    assert (fstype, label) == ("ext4", "old3")
    loop_disks.mount(node, tmp_path / "check")
    assert tree(tmp_path / "check") == tree(root)


def damage_middle_frame(set_dir: Path) -> list[str]:
    """Flip a byte in the middle frame of the set's one tar stream; returns the paths (below the
    stream's mount point) of every member whose bytes touch that frame, from the catalog."""
    bset = open_set(set_dir)
    try:
        (name,) = bset.streams
        frames = bset.frames(name)
        f = frames[len(frames) // 2]
        with open(set_dir / "backup" / f.piece, "r+b") as fh:
            fh.seek(f.poffset + f.csize // 2)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0xFF]))
        entries, _ = bset.catalog()
        return sorted(e.path for e in entries if e.offset < f.uoffset + f.usize and e.end > f.uoffset)
    finally:
        bset.close()


def test_a_damaged_frame_costs_only_its_files(loop_disks: LoopDisks, tmp_path: Path) -> None:
    """restore-fs meets a damaged piece: the files it holds are named, everything else is restored,
    the run fails (exit 1) with the list in the log."""
    disk, part = one_partition_disk(loop_disks, "96M")
    sh("mkfs.ext4", "-q", "-L", "notes", part)
    root = loop_disks.mount(part, tmp_path / "src")
    rng = random.Random(5)
    for i in range(240):  # incompressible, ~24 MiB: six frames, each holding ~40 files
        (root / f"d{i % 7}").mkdir(exist_ok=True)
        (root / f"d{i % 7}" / f"f{i:03d}.bin").write_bytes(rng.randbytes(100_000))
    sh("sync")
    capture([disk], tmp_path / "recovery", root, "h", STARTED)
    set_dir = real_backup(root, tmp_path, "path")
    lost = damage_middle_frame(set_dir)
    assert 20 < len(lost) < 80, lost
    _target, node = one_partition_disk(loop_disks, "96M")
    proc = mkrec("fs", "--source", str(set_dir), "--layout", str(tmp_path / "recovery"),
                 "--map", f"{Path(part).name}={node}", "--target", str(tmp_path / "nosystem"), "--yes",
                 check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert f"mkrec: error: {len(lost)} file(s) could not be restored" in out, out
    named = sorted(line.split("lost: /", 1)[1] for line in out.splitlines() if "lost: /" in line)
    assert named == lost
    restored = tree(loop_disks.mount(node, tmp_path / "check"))
    saved = tree(root)
    assert {p for p in saved if p not in restored} == {p for p in lost if p.endswith(".bin")}
    # a directory left out is made by tar all the same (its files come later), without its own
    # mode and times: it is named as lost
    assert [p for p in restored if p not in lost and restored[p] != saved[p]] == []


def test_a_read_only_target_is_refused_untouched(
    gpt_source: Saved, loop_disks: LoopDisks, tmp_path: Path
) -> None:
    image = tmp_path / "ro.img"
    sh("truncate", "-s", "384M", image)
    dev = sh("losetup", "-f", "-r", "--show", image).strip()  # write-protected, as a locked SD card
    loop_disks.devices.append(dev)
    src = gpt_source.src
    proc = mkrec("clone", *source_args(gpt_source), "--map", f"{Path(src.disk).name}={dev}", "--yes",
                 check=False)  # fmt: skip
    assert proc.returncode == 1 and f"refusing to write {dev}: it is read-only" in proc.stderr, proc.stderr
    proc = mkrec("fs", *source_args(gpt_source), "--map", f"{Path(src.data_dev).name}={dev}",
                 "--target", str(tmp_path / "nosystem"), "--yes", check=False)  # fmt: skip
    assert proc.returncode == 1 and f"refusing to write {dev}: it is read-only" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert image.stat().st_blocks == 0, "not a byte written: the image is still all hole"


def test_restore_fs_refuses_a_mounted_target(gpt_source: Saved, tmp_path: Path) -> None:
    src = gpt_source.src
    proc = mkrec("fs", *source_args(gpt_source), "--map", f"{Path(src.data_dev).name}={src.data_dev}",
                 "--target", str(tmp_path), "--yes", check=False)  # fmt: skip
    assert proc.returncode == 1 and f"refusing to write {src.data_dev}" in proc.stderr


def test_start_restore_mbr_disk(loop_disks: LoopDisks, tmp_path: Path) -> None:
    src = build_source_system(loop_disks, tmp_path, "dos", "mbr-marker")
    _corpus(src.root)
    sh("sync")
    saved = backup(src, tmp_path)
    target = loop_disks.create("300M")
    restore("start", saved, target, tmp_path / "target")
    loop_disks.rescan(target)
    check_same_system(src, target, loop_disks, tmp_path / "check", same_table=True)


# ---- compare ----


def test_compare_a_live_tree_against_the_backup(loop_disks: LoopDisks, tmp_path: Path) -> None:
    disk, part = one_partition_disk(loop_disks, "64M")
    sh("mkfs.ext4", "-q", "-L", "live", part)
    root = loop_disks.mount(part, tmp_path / "live")
    (root / "data").mkdir()
    (root / "etc").mkdir()
    _corpus(root)
    sh("sync")
    capture([disk], tmp_path / "recovery", root, "live", STARTED)
    set_dir = real_backup(root, tmp_path, "path")
    (root / "data" / "corpus" / "text.txt").write_text("changed\n")
    (root / "data" / "corpus" / "new file").write_text("added\n")
    (root / "etc" / "deep" / "er" / "f").unlink()
    os.chmod(root / "data" / "corpus" / "secret", 0o644)
    out = tmp_path / "changed.txt"
    proc = mkrec("compare", "--source", str(set_dir), "--layout", str(tmp_path / "recovery"),
                 "--target", str(root), "--output", str(out))  # fmt: skip
    assert out.read_text().splitlines() == [
        "changed /data/corpus/hardlink.txt",  # one inode with text.txt: both names changed
        "added /data/corpus/new file",
        "changed /data/corpus/secret",
        "changed /data/corpus/text.txt",
        "missing /etc/deep/er/f",
    ]
    assert f"3 changed, 1 added, 1 missing (list in {out})" in proc.stdout


def test_clone_on_a_terminal_edits_the_table_and_skips_a_step(
    gpt_source: Saved, loop_disks: LoopDisks, tmp_path: Path
) -> None:
    """clone-disk as a person runs it: the proposed table is a file to edit before it is applied,
    the plan must be confirmed with "yes", and each step can be skipped."""
    from support import Terminal

    src = gpt_source.src
    target = loop_disks.create("300M")
    root = tmp_path / "target"
    argv = [sys.executable, "-m", "mkrec", "--log", "/dev/null", "restore", "clone", *source_args(gpt_source),
            "--map", f"{Path(src.disk).name}={target}", "--target", str(root)]  # fmt: skip
    term = Terminal(argv)
    table_file = Path(term.expect(r"The new table for \S+ is in (\S+); edit it").group(1))
    table_file.write_text(table_file.read_text().replace('name="data"', 'name="edited-by-hand"'))
    term.send("")
    term.expect("Type yes to erase the disks above and restore: ")
    term.send("yes")
    skipped = []
    while True:
        step = term.expect(r"Run step '([^']*)'\? \[Y/n/skip\] |Restore finished", timeout=300)
        if step.group(0).startswith("Restore finished"):
            break
        skip = step.group(1) == "Unpack /data"
        skipped += [step.group(1)] if skip else []
        term.send("skip" if skip else "")
    assert term.wait() == 0, term.output[-3000:]
    assert skipped == ["Unpack /data"], skipped
    assert "Unpack /data: skipped on request" in term.output

    loop_disks.rescan(target)
    n_data = src.data_dev.rsplit("p", 1)[1]
    assert sh("blkid", "-s", "PARTLABEL", "-o", "value", f"{target}p{n_data}").strip() == "edited-by-hand"
    mnt = loop_disks.mount(f"{target}p{n_data}", tmp_path / "data")
    assert not (mnt / "hello.txt").exists()  # made, but its data skipped on request
    assert fs_ids(f"{target}p{n_data}") == fs_ids(src.data_dev)


def mounted_xfs_and_btrfs_source(loop_disks: LoopDisks, tmp: Path, second: str) -> tuple[str, Path, Path]:
    """A GPT disk: ext4 root, and an xfs or btrfs data partition; both mounted, as on a running machine."""
    disk = loop_disks.create("700M")
    sh("sfdisk", "-q", disk, input="label: gpt\n,200M,L\n,,L\n")
    loop_disks.rescan(disk)
    sh("mkfs.ext4", "-q", "-L", "root", f"{disk}p1")
    sh(f"mkfs.{second}", "-f", "-q", "-L", "data", f"{disk}p2")
    root = loop_disks.mount(f"{disk}p1", tmp / "src")
    data = loop_disks.mount(f"{disk}p2", root / "data")
    (data / "file").write_bytes(os.urandom(2 * 1024 * 1024))
    (root / "etc").mkdir()
    ids = fs_ids(disk + "p1")[1], fs_ids(disk + "p2")[1]
    (root / "etc" / "fstab").write_text(
        f"UUID={ids[0]} / ext4 defaults 0 1\nUUID={ids[1]} /data {second} defaults 0 2\n"
    )
    sh("sync")
    return disk, root, data


def test_clone_onto_a_new_disk_while_the_xfs_source_is_mounted(loop_disks: LoopDisks, tmp_path: Path) -> None:
    """Issue 15: moving a running system to a new disk. The copy has the source's xfs UUID, which the
    kernel refuses to mount twice ("duplicate UUID"): the restore's own mounts use nouuid."""
    disk, root, data = mounted_xfs_and_btrfs_source(loop_disks, tmp_path, "xfs")
    layout = capture([disk], tmp_path / "recovery", root, "srchost", STARTED)
    pathset = real_backup(root, tmp_path, "path", layout)
    target = loop_disks.create("700M")
    proc = mkrec("clone", "--source", str(pathset), "--layout", str(tmp_path / "recovery"),
                 "--map", f"{Path(disk).name}={target}", "--target", str(tmp_path / "target"),
                 "--yes")  # fmt: skip
    assert "Unpack /data" in proc.stdout + proc.stderr
    loop_disks.rescan(target)
    assert fs_ids(f"{target}p2")[:2] == fs_ids(f"{disk}p2")[:2]  # an xfs copy with the same UUID
    copy = loop_disks.mount(f"{target}p2", tmp_path / "check", "-o", "nouuid")
    assert (copy / "file").read_bytes() == (data / "file").read_bytes()


def test_clone_refuses_a_btrfs_copy_beside_its_source(loop_disks: LoopDisks, tmp_path: Path) -> None:
    """Two devices with one btrfs fsid on a machine are taken for one file system: refused, untouched."""
    disk, root, _data = mounted_xfs_and_btrfs_source(loop_disks, tmp_path, "btrfs")
    layout = capture([disk], tmp_path / "recovery", root, "srchost", STARTED)
    pathset = real_backup(root, tmp_path, "path", layout)
    target = loop_disks.create("700M")
    proc = mkrec("clone", "--source", str(pathset), "--layout", str(tmp_path / "recovery"),
                 "--map", f"{Path(disk).name}={target}", "--target", str(tmp_path / "target"), "--yes",
                 check=False)  # fmt: skip
    assert proc.returncode == 1
    uuid = fs_ids(f"{disk}p2")[1]
    assert f"btrfs {uuid} (/dev/" in proc.stderr and f"is already on {disk}p2 here" in proc.stderr, (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert Path(target).read_bytes()[: 1024 * 1024] == bytes(1024 * 1024), "nothing was written"
