"""The backup on real things: an ext4 loop disk with a generated corpus (random and compressible
data, small files, symlinks, hard links, sparse files, xattrs, ACLs, device nodes, odd names),
backed up to 64M volumes as ISO files, a directory and a tape file; then verified, listed and
extracted with the real CLI, after losing a volume, damaging one, and filling the disk."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pycdlib
import pytest
from support import LoopDisks, sh

from mkrec.backup.extract import extract
from mkrec.backup.run import backup
from mkrec.backup.setreader import open_set
from mkrec.cli import main
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.iso import BootPayload, BootSpec
from mkrec.log import setup_logging

pytestmark = pytest.mark.root
MiB = 1024 * 1024
STARTED = datetime(2026, 3, 14, 15, 9)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    # main() points the mkrec logger at the stream capsys gave it; later tests must not log there
    yield
    setup_logging(False)


# ---- the corpus ----


def make_corpus(root: Path) -> None:
    rng = random.Random(42)
    big = root / "data"
    big.mkdir()
    for i, size in enumerate((70, 55, 45, 30)):  # incompressible: ~200 MiB, four-plus 64M volumes
        (big / f"random{i}.bin").write_bytes(rng.randbytes(size * MiB))
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    (big / "text.log").write_bytes(line * (20 * MiB // len(line)))  # compressible
    small = root / "small"
    for i in range(1500):
        d = small / f"d{i % 37:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.txt").write_bytes(rng.randbytes(rng.randrange(0, 6000)))
    odd = root / "odd names"
    odd.mkdir()
    for name in ("with space", "new\nline", "ünïcödé ✓", "x" * 200, "-starts-with-dash", "tab\there"):
        (odd / name).write_text(f"content of {name!r}\n")
    (odd / ("dir" * 60)).mkdir()
    (odd / ("dir" * 60) / ("y" * 200)).write_text("deep and long\n")
    links = root / "links"
    links.mkdir()
    os.symlink("../data/text.log", links / "relative")
    os.symlink("/etc/hostname", links / "absolute")
    os.symlink("does-not-exist", links / "dangling")
    os.symlink("t" * 200, links / "long-target")
    (links / "hard1").write_bytes(rng.randbytes(300_000))
    os.link(links / "hard1", links / "hard2")
    os.link(links / "hard1", small / "d00" / "hard3")
    with open(root / "sparse.img", "wb") as fh:
        fh.truncate(200 * MiB)
        for off in (0, 50 * MiB, 199 * MiB):
            fh.seek(off)
            fh.write(rng.randbytes(64 * 1024))
    special = root / "special"
    special.mkdir()
    os.mknod(special / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(special / "loop200", 0o660 | stat.S_IFBLK, os.makedev(7, 200))
    os.mkfifo(special / "fifo")
    owned = root / "owned"
    owned.mkdir()
    (owned / "setuid").write_text("#!/bin/sh\n")
    os.chmod(owned / "setuid", 0o4755)
    (owned / "secret").write_text("shadow-like\n")
    os.chmod(owned / "secret", 0o600)
    os.chown(owned / "secret", 1234, 5678)
    os.chown(owned, 4321, 8765)
    sh("setfattr", "-n", "user.x", "-v", "hello", owned / "secret")
    sh("setfattr", "-n", "user.big", "-v", "0x" + "ab" * 2000, big / "text.log")
    sh("setfattr", "-n", "user.dir", "-v", "on a directory", owned)
    sh("setfacl", "-m", "u:1234:rwx,g:99:r", owned / "setuid")
    sh("setfacl", "-d", "-m", "u:777:rx", owned)
    os.utime(big / "text.log", ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    os.utime(owned / "secret", (86400 * 365, 86400 * 365))


def snapshot(root: Path) -> dict[str, tuple]:
    """What must come back: per path type, mode, owner, mtime, size, content, link, device,
    xattrs (ACLs included), hard-link group; and whether a sparse file stayed sparse."""
    out: dict[str, tuple] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel == "lost+found":
                continue
            st = p.lstat()
            names = os.listxattr(p, follow_symlinks=False)
            xattrs = tuple(sorted((k, os.getxattr(p, k, follow_symlinks=False)) for k in names))
            content = link = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(p.read_bytes()).hexdigest()
                inodes.setdefault(st.st_ino, []).append(rel)
            if stat.S_ISLNK(st.st_mode):
                link = os.readlink(p)
            mtime = None if stat.S_ISLNK(st.st_mode) else st.st_mtime_ns
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else None
            sparse = (
                stat.S_ISREG(st.st_mode) and st.st_size > 10 * MiB and st.st_blocks * 512 < st.st_size // 4
            )
            out[rel] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                mtime,
                size,
                content,
                link,
                st.st_rdev,
                xattrs,
                sparse,
            )
    for group in inodes.values():
        for rel in group:
            out[rel] = (*out[rel], tuple(sorted(group)))
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("backup-src")
    disks = LoopDisks(work)
    try:
        mnt = disks.ext4("512M", work / "mnt")
        make_corpus(mnt)
        yield mnt
    finally:
        disks.cleanup()


@pytest.fixture(scope="module")
def expected(source: Path) -> dict[str, tuple]:
    snap = snapshot(source)
    assert snap["sparse.img"][9], "the source sparse file must be sparse"
    # ACLs are compared as the xattrs the kernel shows them as
    assert "system.posix_acl_access" in dict(snap["owned/setuid"][8])
    assert "system.posix_acl_default" in dict(snap["owned"][8])
    return snap


def fake_rescue(tmp: Path) -> BootPayload:
    """A small but real payload: files as the rescue system puts them on volume 1."""
    files = {"boot/vmlinuz": MiB, "boot/initrd.img": 3 * MiB}
    entries = []
    for rel, size in files.items():
        p = tmp / "rescue" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(random.Random(rel).randbytes(size))
        entries.append((p, "/" + rel))
    # the real isolinux.bin (isohybrid checks its signature); random bytes boot nothing anyway
    isolinux = tmp / "rescue" / "isolinux" / "isolinux.bin"
    isolinux.parent.mkdir()
    shutil.copyfile("/usr/lib/ISOLINUX/isolinux.bin", isolinux)
    entries.append((isolinux, "/isolinux/isolinux.bin"))
    return BootPayload(tuple(entries), BootSpec("/isolinux/isolinux.bin", None))


def context(tmp: Path, root: Path, mode: str, output: Path, **extra: dict) -> Context:
    data = {
        "build": {"mode": mode, "output": str(output)},
        "media": {"size": "64M"},
        "source": {"root": str(root)},
        "path": {"dir": str(tmp / "pathset")},
        "tape": {"device": str(tmp / "tape"), "capacity": "64M", "block_size": 10240},
    }
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values}
    return Context(config_from_dict(data), hostname="testhost", started=STARTED, staging=tmp / "isofs")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def flip_byte_in_piece(volume_file: Path, kind: str) -> str:
    """Damage one byte inside the first piece of a volume; returns the piece's name."""
    bset = open_set(volume_file)
    ov = next(iter(bset.volumes.values()))
    piece = next(p for p in ov.manifest.streams[-1].pieces if p.volume == ov.number)
    name = "backup/" + piece.name
    if kind == "iso":
        iso = pycdlib.PyCdlib()
        iso.open(str(volume_file))
        offset = iso.get_record(rr_path="/" + name).fp_offset + 1000
        iso.close()
        target = volume_file
    elif kind == "tape":
        offset = ov.volume.members[name].offset_data + 1000  # type: ignore[attr-defined]
        target = volume_file
    else:
        offset, target = 1000, volume_file / name
    bset.close()
    with open(target, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x5A]))
    return name


def overlapping(set_path: Path, volume: int) -> set[str]:
    """Paths whose member bytes overlap the given volume's part of the stream (by the manifest),
    plus hard links to them: exactly what losing that volume must cost."""
    bset = open_set(set_path)
    entries, _ = bset.catalog()
    stream = next(iter(bset.streams.values()))
    ranges = [(p.uoffset, p.uoffset + p.usize) for p in stream.pieces if p.volume == volume]
    lost = {e.path for e in entries if any(e.offset < hi and e.end > lo for lo, hi in ranges)}
    lost |= {e.path for e in entries if e.type == "hardlink" and e.link in lost}
    bset.close()
    return {("/" + p) for p in lost}


def check_tree(dest: Path, expected: dict[str, tuple], skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    got = snapshot(dest)
    want = {k: v for k, v in expected.items() if "/" + k not in skip}
    # directories above lost files still come back; their content is compared file by file
    missing = sorted(set(want) - set(got))
    assert not missing, f"not restored: {missing[:10]}"
    for rel, attrs in want.items():
        if attrs[0] & stat.S_IFDIR == stat.S_IFDIR and skip:
            assert got[rel][:3] == attrs[:3], rel
            continue
        if len(attrs) == 11 and skip:
            # hard-link group: only the members that were not lost
            group = tuple(p for p in attrs[10] if "/" + p not in skip)
            attrs = (*attrs[:10], group)
        assert got[rel] == attrs, rel


# ---- mode cd: ISO volumes ----


def test_cd_volumes_verify_extract_lose_damage(
    source: Path, expected: dict[str, tuple], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = context(tmp_path, source, "cd", tmp_path / "out")
    setdir = backup(ctx, fake_rescue(tmp_path))
    assert setdir == tmp_path / "out" / "testhost" / "20260314"
    isos = sorted(setdir.glob("*.iso"), key=lambda p: int(p.stem.rsplit("vol", 1)[1]))
    assert len(isos) >= 4, isos
    assert [p.name for p in isos] == [f"CDrec-20260314-1509-vol{n}.iso" for n in range(1, len(isos) + 1)]
    # nothing half-done left behind; volumes.txt names the ISO files for readers over HTTP or SSH
    assert sorted(os.listdir(setdir)) == sorted([*(p.name for p in isos), "volumes.txt"])
    assert (setdir / "volumes.txt").read_text().split() == [p.name for p in isos]
    assert stat.S_IMODE(setdir.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in isos} == {0o600}
    assert all(p.stat().st_size <= 64 * MiB for p in isos)
    for n, iso_file in enumerate(isos, 1):
        iso = pycdlib.PyCdlib()
        iso.open(str(iso_file))
        assert iso.pvd.volume_identifier.rstrip() == f"CDREC_{n}".encode()
        assert (iso.pvd.set_size, iso.pvd.seqnum) == (len(isos), n)
        names = {name for _d, _s, files in iso.walk(rr_path="/") for name in files}
        assert {"README.txt", "SHA256SUMS", "Checksums.sfv", "manifest.json"} <= names
        assert ("vmlinuz" in names) == (n == 1)  # the rescue payload is on volume 1 only
        iso.close()
        listing = subprocess.run(["isoinfo", "-R", "-l", "-i", iso_file], capture_output=True, text=True)
        assert listing.returncode == 0 and "manifest.json" in listing.stdout
        xls = subprocess.run(
            ["xorriso", "-indev", iso_file, "-ls", "/backup"], capture_output=True, text=True
        )
        assert xls.returncode == 0 and ".tar.zst.0" in xls.stdout, xls.stderr
        info = subprocess.run(["isoinfo", "-d", "-i", iso_file], capture_output=True, text=True).stdout
        assert f"Volume set size is: {len(isos)}" in info
        assert ("Eltorito" in info) == (n == 1), info  # volume 1 boots
    last = json.loads(_iso_file(isos[-1], "/backup/manifest.json"))
    assert last["volumes"] == len(isos) and last["full_catalog"] == "catalog.all.jsonl.zst"
    assert json.loads(_iso_file(isos[0], "/backup/manifest.json"))["volumes"] is None

    code, out = cli(capsys, "verify", str(setdir))
    assert code == 0 and f"OK: CDrec-20260314-1509: {len(isos)} of {len(isos)} volumes" in out, out
    code, out = cli(capsys, "ls", str(setdir), "/odd names")
    assert code == 0 and "/odd names/new\\nline" in out and "/odd names/ünïcödé ✓" in out
    assert "/data/random0.bin" not in out
    code, out = cli(capsys, "ls", str(setdir))
    assert "l" + "rwxrwxrwx 0/0" in out and "-> ../data/text.log" in out

    dest = tmp_path / "restored"
    code, out = cli(capsys, "extract", str(setdir), "/", "-C", str(dest))
    assert code == 0, out
    check_tree(dest, expected)

    # One small file: only the frames holding it are read.
    bset = open_set(setdir)
    reads: list[tuple[int, str]] = []
    real = bset.read_piece
    bset.read_piece = lambda v, p, o, s: reads.append((v, p)) or real(v, p, o, s)  # type: ignore[method-assign]
    one = extract(bset, ["/owned/secret"], tmp_path / "one")
    bset.close()
    assert one.restored == ["/owned", "/owned/secret"] and not one.lost
    assert len(reads) <= 2, reads
    assert (tmp_path / "one" / "owned" / "secret").read_text() == "shadow-like\n"

    # Damage one byte in volume 3: verify names the volume and the piece.
    damaged = flip_byte_in_piece(isos[2], "iso")
    code, out = cli(capsys, "verify", str(setdir))
    assert code == 1
    assert f"BAD: volume 3 ({isos[2]}): {damaged}: SHA-256 mismatch" in out, out
    flip_byte_in_piece(isos[2], "iso")  # flip it back

    # Lose volume 2: everything else comes back, and the lost files are named.
    lost = overlapping(setdir, 2)
    assert lost and len(lost) < len(expected) / 2
    isos[1].unlink()
    code, out = cli(capsys, "verify", str(setdir))
    assert code == 1 and "BAD: volume 2 is missing" in out
    dest2 = tmp_path / "restored2"
    code, out = cli(capsys, "extract", str(setdir), "/", "-C", str(dest2))
    assert code == 1
    named = {line.removeprefix("lost: ") for line in out.splitlines() if line.startswith("lost: ")}
    assert named == lost
    check_tree(dest2, expected, skip=lost)


def _iso_file(iso_file: Path, path: str) -> str:
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_file))
    with iso.open_file_from_iso(rr_path=path) as fh:
        text = fh.read().decode()
    iso.close()
    return text


# ---- modes path and tape ----


@pytest.mark.parametrize("mode", ["path", "tape"])
def test_path_and_tape(
    mode: str,
    source: Path,
    expected: dict[str, tuple],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = context(tmp_path, source, mode, tmp_path / "out")
    if mode == "path":  # one volume: smaller pieces, so that losing one piece can be shown
        monkeypatch.setattr("mkrec.backup.cutstream.PIECE_MAX", 40 * MiB)
    where = backup(ctx, fake_rescue(tmp_path))
    if mode == "path":
        assert where == tmp_path / "pathset" / "testhost" / "20260314"
        assert stat.S_IMODE(where.stat().st_mode) == 0o700
        assert sorted(os.listdir(where)) == ["Checksums.sfv", "README.txt", "SHA256SUMS", "backup"]
        assert len(list((where / "backup").glob("*.tar.zst.*"))) >= 4
        subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=where, check=True)
        volumes = [where]
    else:
        assert where == tmp_path / "tape"
        volumes = [where, *sorted(tmp_path.glob("tape.*"), key=lambda p: int(p.suffix[1:]))]
        assert len(volumes) >= 4 and all(v.stat().st_size <= 64 * MiB for v in volumes)
        assert all(v.stat().st_size % 10240 == 0 for v in volumes)  # blocked for the drive
        listing = subprocess.run(["tar", "-tf", where], capture_output=True, text=True, check=True).stdout
        assert listing.splitlines()[:2] == ["README.txt", "backup/manifest.json"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in volumes if p.is_file()} <= {0o600}

    code, out = cli(capsys, "verify", str(where))
    assert code == 0, out
    dest = tmp_path / "restored"
    code, out = cli(capsys, "extract", str(where), "/", "-C", str(dest))
    assert code == 0, out
    check_tree(dest, expected)

    # Damage one byte: verify names it.
    victim = volumes[2] if mode == "tape" else where
    damaged = flip_byte_in_piece(victim, "tape" if mode == "tape" else "dir")
    code, out = cli(capsys, "verify", str(where))
    label = "volume 3" if mode == "tape" else "volume 1"
    assert code == 1 and f"BAD: {label} ({victim}): {damaged}: SHA-256 mismatch" in out, out
    flip_byte_in_piece(victim, "tape" if mode == "tape" else "dir")

    if mode == "tape":
        lost = overlapping(where, 2)
        volumes[1].unlink()
    else:
        # one volume: lose its second piece instead
        bset = open_set(where)
        stream = next(iter(bset.streams.values()))
        piece = stream.pieces[1]
        entries, _ = bset.catalog()
        bset.close()
        hi = piece.uoffset + piece.usize
        lost = {"/" + e.path for e in entries if e.offset < hi and e.end > piece.uoffset}
        (where / "backup" / piece.name).unlink()
    dest2 = tmp_path / "restored2"
    code, out = cli(capsys, "extract", str(where), "/", "-C", str(dest2))
    assert code == 1
    named = {line.removeprefix("lost: ") for line in out.splitlines() if line.startswith("lost: ")}
    assert lost and named == lost
    check_tree(dest2, expected, skip=lost)


# ---- disk full, and the previous set of the day stays intact ----


@pytest.mark.parametrize("mode", ["cd", "path", "tape"])
def test_disk_full_keeps_previous_set(source: Path, tmp_path: Path, mode: str) -> None:
    disks = LoopDisks(tmp_path)
    try:
        small_dev = disks.create("64M", "small.img")
        sh("mkfs.ext4", "-q", "-F", small_dev)
        small = disks.mount(small_dev, tmp_path / "small-src")
        (small / "etc").mkdir()
        (small / "etc" / "hostname").write_text("previous\n")
        out_dev = disks.create("160M", "out.img")
        sh("mkfs.ext4", "-q", "-F", "-m", "0", out_dev)
        out = disks.mount(out_dev, tmp_path / "out")
        ctx_small = context(out, small, mode, out)
        first = backup(ctx_small, None)
        before = {p: p.read_bytes() for p in sorted(first.rglob("*")) if p.is_file()}
        if mode == "tape":
            before.update({p: p.read_bytes() for p in out.glob("tape*")})
        with pytest.raises(MkrecError) as err:
            backup(context(out, source, mode, out), None)
        # one line naming the problem (ISO writer, piece writer, or tape writer: each says it)
        assert "no space left on device" in err.value.message.lower()
        assert "\n" not in err.value.message
        after = {p: p.read_bytes() for p in sorted(first.rglob("*")) if p.is_file()}
        if mode == "tape":
            after.update({p: p.read_bytes() for p in out.glob("tape*")})
        assert after == before
        leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".partial")]
        assert not leftovers
        code = main(["verify", str(first)])
        assert code == 0
    finally:
        disks.cleanup()
