"""The commands the backup builds: tar (exact argv, excludes anchored per file system), the
file systems found under [source] root, tar's exit codes, burning with retries (pytest-subprocess:
no drive here), the tape block writer and the set-size patch in ISO descriptors."""

from __future__ import annotations

import io
import json
import logging
import subprocess
from datetime import datetime
from pathlib import Path

import pycdlib
import pytest
from pytest_subprocess import FakeProcess

from mkrec.backup import sources as sources_module
from mkrec.backup.burn import burn, burn_argv
from mkrec.backup.isosink import patch_set_size
from mkrec.backup.run import _check_tar
from mkrec.backup.sources import Source, sources, tar_argv
from mkrec.backup.tapesink import BlockWriter
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.errors import CommandError, MkrecError
from mkrec.iso import VolumeInfo, write_iso
from mkrec.layout.model import Filesystem, Layout

FINDMNT = ["findmnt", "-J", "-l", "-o", "TARGET,SOURCE,FSTYPE"]


def test_tar_argv_root_and_home() -> None:
    excludes = ("/proc/*", "/home/*/.cache", "*.swp")
    root = Source("/dev/sda2", "ext4", "/", Path("/mnt/sys"), "tar")
    assert tar_argv(root, excludes, [Path("/mnt/sys/var/lib/mkrec")]) == [
        "tar", "--create", "--file=-", "--format=posix", "--one-file-system", "--numeric-owner",
        "--xattrs", "--xattrs-include=*", "--acls", "--selinux", "--sparse", "--warning=no-file-ignored",
        "--directory=/mnt/sys",
        "--anchored", "--exclude=./proc/*", "--exclude=./home/*/.cache", "--exclude=./var/lib/mkrec",
        "--no-anchored", "--exclude=*.swp",
        ".",
    ]  # fmt: skip
    home = Source("/dev/sda3", "xfs", "/home", Path("/mnt/sys/home"), "tar")
    argv = tar_argv(home, excludes, [Path("/var/lib/mkrec")])
    tail = ["--anchored", "--exclude=./*/.cache", "--no-anchored", "--exclude=*.swp", "."]
    assert argv[argv.index("--directory=/mnt/sys/home") + 1 :] == tail


def test_sources_from_findmnt(fp: FakeProcess, tmp_path: Path) -> None:
    mounts = {
        "filesystems": [
            {"target": "/", "source": "/dev/vda1", "fstype": "ext4"},
            {"target": "/mnt/sys", "source": "/dev/sdb2", "fstype": "ext4"},
            {"target": "/mnt/sys/boot/efi", "source": "/dev/sdb1", "fstype": "vfat"},
            {"target": "/mnt/sys/win", "source": "/dev/sdb4", "fstype": "ntfs"},
            {"target": "/mnt/sys/proc", "source": "proc", "fstype": "proc"},
            {"target": "/mnt/sys/srv", "source": "/dev/sdb2[/srv]", "fstype": "ext4"},
            {"target": "/mnt/sys/backup", "source": "/dev/sdc1", "fstype": "ext4"},
            {"target": "/mnt/system2", "source": "/dev/sdd1", "fstype": "ext4"},
            {"target": "/mnt/sys/dos", "source": "/dev/sdb5", "fstype": "fuseblk"},
        ]
    }
    fp.register(FINDMNT, stdout=json.dumps(mounts))
    # blkid names what findmnt cannot: a FUSE mount (ntfs-3g), and the unmounted raw partitions
    fp.register(["blkid", "-c", "/dev/null", "-o", "value", "-s", "TYPE", "/dev/sdb5"], stdout="ntfs\n")
    fp.register(["blkid", "-c", "/dev/null", "-o", "value", "-s", "TYPE", "/dev/sdb9"], returncode=2)
    fp.register(["blkid", "-c", "/dev/null", "-o", "value", "-s", "TYPE", "/dev/sdb7"], stdout="ext4\n")
    cfg = config_from_dict({"source": {"root": "/mnt/sys", "raw": ["/dev/sdb9", "/dev/sdb7"]}})
    found = sources(Context(cfg, started=datetime(2026, 1, 1)), [Path("/mnt/sys/backup")])
    assert [(s.device, s.mountpoint, s.kind, s.stream) for s in found] == [
        ("/dev/sdb2", "/", "tar", "sdb2.ext4.tar.zst"),
        ("/dev/sdb1", "/boot/efi", "tar", "sdb1.vfat.tar.zst"),
        ("/dev/sdb5", "/dos", "image", "sdb5.ntfs.img.zst"),
        ("/dev/sdb4", "/win", "image", "sdb4.ntfs.img.zst"),
        ("/dev/sdb9", "", "image", "sdb9.raw.img.zst"),
        ("/dev/sdb7", "", "image", "sdb7.ext4.img.zst"),
    ]


def test_layout_filesystems_that_are_not_mounted_are_imaged(
    fp: FakeProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mounts = {
        "filesystems": [
            {"target": "/mnt/sys", "source": "/dev/sda2", "fstype": "ext4"},
            {"target": "/mnt/elsewhere", "source": "/dev/sda6", "fstype": "ext4"},
        ]
    }
    fp.register(FINDMNT, stdout=json.dumps(mounts))
    fp.register(["blkid", "-c", "/dev/null", "-o", "value", "-s", "TYPE", "/dev/sda7"], stdout="ext4\n")
    nodes = {"/dev/sda1": 1, "/dev/sda2": 2, "/dev/mapper/vg0-scratch": 3, "/dev/vg0/scratch": 3,
             "/dev/sda6": 6, "/dev/sda7": 7, "/dev/mapper/cryptdata": 9}  # fmt: skip
    monkeypatch.setattr(sources_module, "block_id", nodes.get)
    elsewhere = {"/dev/sda6": [("/mnt/elsewhere", False)]}
    monkeypatch.setattr(sources_module, "mounted_on", lambda node: elsewhere.get(node, []))
    layout = Layout(
        hostname="h",
        captured="2026-01-01T00:00:00",
        filesystems=(
            Filesystem("sda2", "ext4", mountpoint="/"),  # mounted: tar, as before
            Filesystem("sda1", "vfat"),  # the ESP, not mounted
            Filesystem("vg0/scratch", "xfs"),  # an LV: its /dev/mapper name keeps VGs apart
            Filesystem("cryptdata", "ext4"),  # an opened LUKS mapping
            Filesystem("sda6", "ext4"),  # mounted, but outside [source] root: may be changing
            Filesystem("sda7", "ext4"),  # already in [source] raw
            Filesystem("sdz1", "ext4"),  # gone since the capture
        ),
    )
    cfg = config_from_dict({"source": {"root": "/mnt/sys", "raw": ["/dev/sda7"]}})
    with caplog.at_level(logging.INFO, logger="mkrec"):
        found = sources(Context(cfg, started=datetime(2026, 1, 1)), [], layout)
    assert [(s.device, s.mountpoint, s.kind, s.stream) for s in found] == [
        ("/dev/sda2", "/", "tar", "sda2.ext4.tar.zst"),
        ("/dev/sda7", "", "image", "sda7.ext4.img.zst"),
        ("/dev/sda1", "", "image", "sda1.vfat.img.zst"),
        ("/dev/mapper/vg0-scratch", "", "image", "vg0-scratch.xfs.img.zst"),
        ("/dev/mapper/cryptdata", "", "image", "cryptdata.ext4.img.zst"),
    ]
    assert "/dev/sda1 (vfat) is not mounted: it is imaged" in caplog.text
    assert "/dev/sda6 is mounted at /mnt/elsewhere, outside [source] root: not backed up" in caplog.text
    assert "sdz1 (ext4) is in the layout but has no device node here: not backed up" in caplog.text


def test_tar_exit_codes(caplog: pytest.LogCaptureFixture) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    _check_tar(proc, 1, ["tar: ./var/log/syslog: file changed as we read it"])
    assert "warning: tar: ./var/log/syslog: file changed as we read it" in caplog.text
    with pytest.raises(CommandError) as err:
        _check_tar(proc, 2, ["tar: ./etc: Cannot open: Permission denied", "tar: Exiting with failure"])
    assert err.value.message == "true failed (exit 2): tar: Exiting with failure"


def test_burn_retries_then_succeeds(fp: FakeProcess, tmp_path: Path) -> None:
    iso = tmp_path / "CDrec-20260101-1200-vol2.iso"
    argv = burn_argv(iso)
    assert argv == ["xorriso", "-as", "cdrecord", "-v", "dev=/dev/sr0", "blank=as_needed", "-eject", str(iso)]
    fp.register(argv, returncode=1, stderr="libburn : SORRY : No disc in drive\n")
    fp.register(argv, returncode=0)
    prompts: list[str] = []
    burn(iso, 2, prompts.append)
    assert prompts == [
        "Insert a blank disc for volume 2 into /dev/sr0 and press Enter",
        "Insert another blank disc for volume 2 into /dev/sr0 and press Enter",
    ]
    assert fp.call_count(argv) == 2


def test_burn_gives_up_with_a_hint(fp: FakeProcess, tmp_path: Path) -> None:
    iso = tmp_path / "v.iso"
    for _ in range(3):
        fp.register(burn_argv(iso), returncode=5, stderr="write error\n")
    with pytest.raises(MkrecError) as err:
        burn(iso, 1, lambda _prompt: None)
    assert err.value.message == "could not burn volume 1 (v.iso) after 3 attempts"
    assert err.value.hint is not None and str(tmp_path) in err.value.hint


def test_block_writer_writes_whole_blocks() -> None:
    out = io.BytesIO()
    sizes: list[int] = []
    real = out.write
    out.write = lambda b: sizes.append(len(b)) or real(b)  # type: ignore[method-assign,assignment]
    w = BlockWriter(out, 1024)
    for chunk in (b"a" * 100, b"b" * 2000, b"c" * 30):
        w.write(chunk)
    w.close()
    assert all(s % 1024 == 0 for s in sizes) and len(out.getvalue()) == 3072
    assert out.getvalue()[:2130] == b"a" * 100 + b"b" * 2000 + b"c" * 30


def test_patch_set_size(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    iso_file = write_iso(tmp_path / "v.iso", [(f, "/f")], VolumeInfo("CDREC_2", "S", set_size=2, seqnum=2))
    patch_set_size(iso_file, 7)
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_file))
    assert (iso.pvd.set_size, iso.pvd.seqnum) == (7, 2)
    assert iso.joliet_vd is not None and iso.joliet_vd.set_size == 7
    iso.close()
