"""The cpio writer read back by the real cpio(1), and what the initrd and the root RAM disk hold."""

from __future__ import annotations

import json
import stat
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.kernel import Kernel, find_kernel
from mkrec.rescue import measured_rescue_size
from mkrec.rescue.cpio import Archive, write_newc, write_zstd
from mkrec.rescue.initrd import build_initrd
from mkrec.rescue.rdbase import MARKER, build_rdbase
from mkrec.rescue.volume import checksum_texts


def cpio_list(data: bytes) -> list[str]:
    out = subprocess.run(["cpio", "-itv", "--quiet"], input=data, capture_output=True, check=True)
    return out.stdout.decode().splitlines()


def test_newc_archive_read_back_by_cpio(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("hello from the host\n")
    src.chmod(0o640)
    archive = Archive()
    archive.add_file("usr/share/doc/hello.txt", src)
    archive.add_bytes("/etc/motd", "welcome\n", mode=0o600)
    archive.add_symlink("bin/sh", "/bin/busybox")
    archive.add_dir("tmp", mode=0o1777)
    out = tmp_path / "a.cpio"
    with open(out, "wb") as fh:
        size = write_newc(archive, fh)
    assert size == out.stat().st_size and size % 4 == 0
    listing = cpio_list(out.read_bytes())
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing]
    assert names == [
        "bin",
        "bin/sh",
        "etc",
        "etc/motd",
        "tmp",
        "usr",
        "usr/share",
        "usr/share/doc",
        "usr/share/doc/hello.txt",
    ]
    assert any(line.startswith("lrwxrwxrwx") and "bin/sh -> /bin/busybox" in line for line in listing)
    assert any(line.startswith("drwxrwxrwt") and line.endswith(" tmp") for line in listing)
    assert all(" root " in line for line in listing), "owned by root whoever builds it"
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=out.read_bytes(), cwd=dest, check=True)
    assert (dest / "usr/share/doc/hello.txt").read_text() == "hello from the host\n"
    assert stat.S_IMODE((dest / "usr/share/doc/hello.txt").stat().st_mode) == 0o640
    assert (dest / "usr/share/doc/hello.txt").stat().st_mtime == int(src.stat().st_mtime)
    assert (dest / "etc/motd").read_text() == "welcome\n"


def test_zstd_output_is_a_zstd_frame_the_zstd_tool_reads(tmp_path: Path) -> None:
    archive = Archive()
    archive.add_bytes("init", "#!/bin/sh\n" * 1000, mode=0o755)
    raw, packed = write_zstd(archive, tmp_path / "i.img", level=3)
    assert packed < raw
    data = subprocess.run(["zstd", "-dc", str(tmp_path / "i.img")], capture_output=True, check=True).stdout
    assert len(data) == raw and cpio_list(data)[0].endswith(" init")


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    return find_kernel()


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    config = config_from_dict({"rescue": {"modules": ["loop"], "console": "ttyS0,115200"}})
    ctx = Context(config, staging=tmp_path / "isofs", hostname="pc1", started=datetime(2026, 11, 23, 7, 12))
    ctx.recovery_dir.mkdir(parents=True)
    (ctx.recovery_dir / "hostname").write_text("pc1\n")
    (ctx.recovery_dir / "layout.toml").write_text(
        '[[disk]]\nname = "sda"\nsize = 21474836480\nlabel = "gpt"\n[[disk.partition]]\nnumber = 1\n'
    )
    return ctx


def test_initrd_contents(ctx: Context, kernel: Kernel) -> None:
    archive = build_initrd(ctx, kernel)
    init = archive.entries[next(p for p in archive.entries if str(p) == "init")]
    assert init.mode == stat.S_IFREG | 0o755 and b"exec /sbin/init" in init.data
    assert "bin/busybox" in archive and "bin/sh" in archive and "sbin/init" in archive
    assert not any(str(p).startswith("usr/") for p in archive.entries), "busybox stays out of /usr"
    moddir = f"lib/modules/{kernel.version}"
    listed = (
        next(e for p, e in archive.entries.items() if str(p) == "etc/mkrec/modules").data.decode().split()
    )
    assert all(f"{moddir}/{m}" in archive for m in listed)
    names = [Path(m).name for m in listed]
    for needed in ("virtio_blk.ko", "sr_mod.ko", "usb-storage.ko", "isofs.ko", "loop.ko"):
        assert needed in names, needed
    assert names.index("virtio.ko") < names.index("virtio_blk.ko")
    assert f"{moddir}/modules.dep" in archive
    assert archive.raw_size() < 64 * 1024**2


def test_rdbase_contents(ctx: Context, kernel: Kernel) -> None:
    archive = build_rdbase(ctx, kernel)

    def text(path: str) -> str:
        return next(e for p, e in archive.entries.items() if str(p) == path).data.decode()

    for path in (
        "usr/sbin/sfdisk", "usr/sbin/mkfs.ext4", "usr/sbin/mke2fs", "usr/sbin/lvm", "usr/sbin/vgchange",
        "usr/sbin/mdadm", "usr/sbin/cryptsetup", "usr/bin/tar", "usr/bin/zstd", "usr/sbin/grub-install",
        "usr/lib/grub/i386-pc/boot.img", "usr/lib/grub/x86_64-efi/linux.mod", "usr/bin/extlinux",
        "usr/lib/syslinux/mbr/mbr.bin", "usr/lib/syslinux/mbr/gptmbr.bin",
        "usr/sbin/partclone.restore", "usr/sbin/partclone.ext4", "usr/sbin/partclone.extfs",
        "usr/sbin/partclone.vfat", "usr/sbin/ntfsclone", "usr/sbin/ntfsresize",
        "usr/lib/x86_64-linux-gnu/libntfs-3g.so.89",
        "usr/lib/x86_64-linux-gnu/libfdisk.so.1", "usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/libgcc_s.so.1", "lib64/ld-linux-x86-64.so.2", "usr/bin/python3",
        "usr/share/terminfo/l/linux", "usr/share/terminfo/v/vt100", "etc/passwd", "etc/nsswitch.conf",
        "etc/recovery/hostname", "etc/recovery/config.json", "etc/mkrec/rd-base", "etc/inittab",
    ):  # fmt: skip
        assert path in archive, path
    site = "usr/lib/mkrec/python/lib/python3.11"  # the stdlib's directory: on sys.path with any site.py
    for pkg in ("mkrec/__init__.py", "mkrec/rescue/rdbase.py", "pycdlib/__init__.py", "jinja2/__init__.py"):
        assert f"{site}/{pkg}" in archive, pkg
    assert any(str(p).startswith(f"{site}/zstandard/") and str(p).endswith(".so") for p in archive.entries)
    stdlib = "usr/lib/mkrec/python/lib/python3.11"
    assert f"{stdlib}/os.py" in archive and f"{stdlib}/json/__init__.py" in archive
    for left_out in ("test", "idlelib", "tkinter", "ensurepip", "json/__pycache__"):
        assert f"{stdlib}/{left_out}" not in archive, left_out
    wrapper = text("usr/local/bin/start-restore")
    assert wrapper.endswith('exec python3 -m mkrec restore start "$@"\n')
    for name, sub in (("clone-disk", "clone"), ("restore-fs", "fs"), ("compare", "compare")):
        assert f"python3 -m mkrec restore {sub} " in text(f"usr/local/bin/{name}")
    config = json.loads(text("etc/recovery/config.json"))
    assert config["rescue"]["modules"] == ["loop"] and config["rescue"]["console"] == "ttyS0,115200"
    assert MARKER in text("etc/profile")
    motd = text("etc/motd")
    assert "pc1" in motd and "2026-11-23 07:12" in motd and "sda" in motd and "20.0 GiB" in motd
    assert "tty1::respawn" in text("etc/inittab"), "a serial console still leaves a shell on the screen"
    assert text("etc/passwd").startswith("root:x:0:0:")


def test_checksum_files_formats(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"123456789")
    sums, sfv = checksum_texts([(f, "/dir/f"), (f, "/boot.bin")], skip=frozenset({"/boot.bin"}))
    assert sums == "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225  dir/f\n"
    assert sfv == "; Generated by mkrec\ndir/f CBF43926\n"


def test_measured_rescue_size(tmp_path: Path) -> None:
    assert measured_rescue_size(tmp_path) is None
    (tmp_path / "rescue-size.json").write_text('{"unpacked": 1234}\n')
    assert measured_rescue_size(tmp_path) == 1234
