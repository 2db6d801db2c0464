"""Encrypted sets on real things: an ext4 loop disk holding a unique marker file, backed up as ISO
volumes and as a set directory with [security] encrypt = "age"; every byte of every volume searched
for the marker's name and content (found in a plain control set, so the search can fail); then
verify without the key, verify --deep, ls and extract with the identity, a wrong identity, a
damaged frame and a lost volume; and start-restore / restore fs of an encrypted set onto loop
disks with --identity."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest
from sourcesys import build_source_system
from support import LoopDisks, sh, stream_bytes
from test_backup_root import check_tree, cli, context, fake_rescue, flip_byte_in_piece, snapshot
from test_restore_disks import _corpus, backup, check_same_system, mkrec, one_partition_disk, tree

from mkrec.backup.run import backup as run_backup
from mkrec.backup.setreader import open_set

pytestmark = pytest.mark.root
MiB = 1024 * 1024


@dataclass(frozen=True)
class Keys:
    public: str
    identity: Path  # an age identity file, as age-keygen writes it
    passphrase: Path  # [security] passphrase_file; also usable as --identity
    wrong: Path


def make_keys(where: Path) -> Keys:
    where.mkdir(parents=True, exist_ok=True)
    ident, other = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    (where / "key.txt").write_text(f"# public key: {ident.to_public()}\n{ident}\n")
    (where / "wrong.txt").write_text(f"{other}\n")
    (where / "pass").write_text("a passphrase typed on the rescue console\n")
    for name in ("key.txt", "wrong.txt", "pass"):
        (where / name).chmod(0o600)
    return Keys(str(ident.to_public()), where / "key.txt", where / "pass", where / "wrong.txt")


def security(keys: Keys) -> dict[str, object]:
    return {"encrypt": "age", "recipients": [keys.public], "passphrase_file": str(keys.passphrase)}


@dataclass(frozen=True)
class Marker:
    name: str  # a unique file name (ASCII: the plain catalog shows it as is)
    needles: list[bytes]  # slices of its random content: zstd stores incompressible data as is


@dataclass(frozen=True)
class Sets:
    keys: Keys
    marker: Marker
    expected: dict[str, tuple]
    plain: Path  # ISO volumes, not encrypted: the control
    iso: Path  # ISO volumes, encrypted
    directory: Path  # mode path, encrypted
    tape: Path  # mode tape (a file standing in for the drive), encrypted


def add_marker(root: Path) -> Marker:
    name = f"marker-{secrets.token_hex(8)}.bin"
    content = os.urandom(2 * MiB)
    (root / "srv").mkdir(exist_ok=True)
    (root / "srv" / name).write_bytes(content)
    offsets = (300_000, 1_000_000, 1_700_000)
    return Marker(name, [content[o : o + 48] for o in offsets])


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sets]:
    work = tmp_path_factory.mktemp("crypt-src")
    disks = LoopDisks(work)
    try:
        root = disks.ext4("160M", work / "mnt")
        (root / "data").mkdir()
        (root / "data" / "random.bin").write_bytes(os.urandom(28 * MiB))  # three 16M volumes and more
        (root / "data" / "text.log").write_bytes(b"compressible line of text\n" * 200_000)
        (root / "etc").mkdir()
        (root / "etc" / "shadow").write_text("root:$6$hash:19000:0:99999:7:::\n")
        (root / "etc" / "shadow").chmod(0o600)
        marker = add_marker(root)
        keys = make_keys(work / "keys")
        made = {}
        for name, mode, sec in (
            ("plain", "cd", {}),
            ("iso", "cd", security(keys)),
            ("dir", "path", security(keys)),
            ("tape", "tape", security(keys)),
        ):
            ctx = context(work / name, root, mode, work / name / "out", media={"size": "16M"}, security=sec)
            made[name] = run_backup(ctx, fake_rescue(work / name))
        yield Sets(keys, marker, snapshot(root), made["plain"], made["iso"], made["dir"], made["tape"])
    finally:
        disks.cleanup()


def files_of(where: Path) -> list[Path]:
    """Every file of a set: a directory's, or a tape file and its continuation tapes."""
    if where.is_file():
        return [where, *sorted(where.parent.glob(f"{where.name}.[0-9]*"))]
    return [p for p in sorted(where.rglob("*")) if p.is_file()]


def found(setdir: Path, needle: bytes) -> list[str]:
    """Files of the set (ISO images read raw) holding the bytes anywhere."""
    return [str(p) for p in files_of(setdir) if needle in p.read_bytes()]


def test_no_plaintext_on_any_volume(sets: Sets) -> None:
    name = sets.marker.name.encode()
    # the control: a plain set shows the name (catalog) and the content (random data: raw zstd
    # blocks); short text may be entropy-coded by zstd, so the shadow line is looked for in the stream
    assert found(sets.plain, name)
    assert sum(bool(found(sets.plain, n)) for n in sets.marker.needles) >= 2
    plain_bset = open_set(sets.plain)
    streams = list(plain_bset.streams)
    plain_bset.close()
    assert any(b"root:$6$hash" in b"".join(stream_bytes(sets.plain, s)) for s in streams)
    for setdir in (sets.iso, sets.directory, sets.tape):
        assert files_of(setdir)
        assert not found(setdir, name), f"the marker's name is readable in {setdir}"
        for needle in sets.marker.needles:
            assert not found(setdir, needle), f"the marker's content is readable in {setdir}"
        assert not found(setdir, b"root:$6$hash")
        assert not found(setdir, b"compressible line of text")
        for secret in (sets.keys.identity, sets.keys.passphrase):
            text = secret.read_text().strip().splitlines()[-1].encode()
            assert not found(setdir, text), "key material on a volume"


def test_encrypted_set_verify_ls_extract(
    sets: Sets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setdir, keys = sets.iso, sets.keys
    isos = sorted(setdir.glob("*.iso"))
    assert len(isos) >= 3, isos
    code, out = cli(capsys, "verify", str(setdir))  # no key needed for the checksums
    assert code == 0 and f"{len(isos)} of {len(isos)} volumes" in out, out
    code, out = cli(capsys, "verify", "--deep", "--identity", str(keys.identity), str(setdir))
    assert code == 0 and "frames opened" in out, out
    code, out = cli(capsys, "verify", "--deep", "--identity", str(keys.wrong), str(setdir))
    assert code == 1
    assert out.strip().splitlines()[0] == (
        f"mkrec: error: --identity {keys.wrong} does not open backup set {open_name(setdir)}"
    ), out
    code, out = cli(capsys, "ls", str(setdir))
    assert code == 1 and "is encrypted: give --identity FILE" in out, out
    code, out = cli(capsys, "drill", str(setdir))
    assert code == 1 and "is encrypted: it cannot be drilled yet" in out, out
    code, out = cli(capsys, "ls", "--identity", str(keys.identity), str(setdir), "/srv")
    assert code == 0 and f"/srv/{sets.marker.name}" in out, out
    code, out = cli(capsys, "ls", "--identity", str(keys.passphrase), str(setdir), "/etc")
    assert code == 0 and "/etc/shadow" in out, out

    dest = tmp_path / "all"
    code, out = cli(capsys, "extract", "--identity", str(keys.identity), str(setdir), "/", "-C", str(dest))
    assert code == 0, out
    check_tree(dest, sets.expected)
    code, out = cli(capsys, "extract", "--identity", str(keys.identity), str(sets.directory), "/srv", "-C",
                    str(tmp_path / "one"))  # fmt: skip
    assert code == 0, out
    assert (tmp_path / "one" / "srv" / sets.marker.name).read_bytes()[300_000:300_048] == sets.marker.needles[
        0
    ]


def open_name(setdir: Path) -> str:
    bset = open_set(setdir)
    name = bset.set_name
    bset.close()
    return name


def test_damaged_frame_and_lost_volume(
    sets: Sets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    sh("cp", "-a", sets.directory, copy)
    damaged = flip_byte_in_piece(copy, "dir")
    code, out = cli(capsys, "verify", str(copy))
    assert code == 1 and f"{damaged}: SHA-256 mismatch" in out, out
    code, out = cli(capsys, "verify", "--deep", "--identity", str(sets.keys.identity), str(copy))
    # flip_byte_in_piece hits the piece's byte 1000: the first frame, unless that one compressed to
    # less (a text file first in the tar, as ext4's hashed directory order may put it)
    bset = open_set(copy)
    piece = damaged.removeprefix("backup/")
    frames = [f for s in bset.streams for f in bset.frames(s) if f.piece == piece]
    bset.close()
    hit = next(f for f in frames if f.poffset <= 1000 < f.poffset + f.csize)
    assert code == 1 and f"frame at offset {hit.uoffset}: fails authentication" in out, out

    isos = tmp_path / "isos"
    sh("cp", "-a", sets.iso, isos)
    volumes = sorted(isos.glob("*.iso"), key=lambda p: int(p.stem.rsplit("vol", 1)[1]))
    volumes[1].unlink()
    dest = tmp_path / "rest"
    code, out = cli(capsys, "extract", "--identity", str(sets.keys.identity), str(isos), "/", "-C", str(dest))
    assert code == 1 and "lost: /data/random.bin" in out, out
    assert (dest / "etc" / "shadow").read_text().startswith("root:$6$hash")
    assert (dest / "srv" / sets.marker.name).stat().st_size == 2 * MiB


# ---- restoring disks from an encrypted set ----


def test_start_restore_and_restore_fs_with_identity(loop_disks: LoopDisks, tmp_path: Path) -> None:
    work = tmp_path / "src"
    work.mkdir()
    src_disks = LoopDisks(work)
    try:
        src = build_source_system(src_disks, work, "gpt", "crypt-marker")
        _corpus(src.root)
        marker = add_marker(src.root / "data")
        sh("sync")
        keys = make_keys(tmp_path / "keys")
        saved = backup(src, work, iso=True, security=security(keys))
        assert not found(saved.iso_set, marker.name.encode())
        assert not found(saved.iso_set, marker.needles[1])
        name = Path(src.disk).name
        target = loop_disks.create("256M")
        base = ["--source", str(saved.iso_set), "--map", f"{name}={target}", "--yes"]
        proc = mkrec("start", *base, "--target", str(tmp_path / "t1"), check=False)
        assert proc.returncode == 1 and "is encrypted: give --identity FILE" in proc.stderr
        assert "ERASE" not in proc.stdout, "nothing planned or written without the key"
        proc = mkrec(
            "start", *base, "--target", str(tmp_path / "t1"), "--identity", str(keys.wrong), check=False
        )
        assert proc.returncode == 1 and f"--identity {keys.wrong} does not open" in proc.stderr
        mkrec("start", *base, "--target", str(tmp_path / "t1"), "--identity", str(keys.identity))
        loop_disks.rescan(target)
        check_same_system(src, target, loop_disks, tmp_path / "check", same_table=True)
        for dirpath in (tmp_path / "check" / "data", tmp_path / "check"):
            sh("umount", dirpath)

        _disk, node = one_partition_disk(loop_disks, "256M")
        (tmp_path / "sys" / "etc").mkdir(parents=True)
        (tmp_path / "sys" / "etc" / "fstab").write_text((src.root / "etc" / "fstab").read_text())
        mkrec("fs", "--source", str(saved.path_set), "--layout", str(saved.layout), "--map",
              f"{Path(src.data_dev).name}={node}", "--target", str(tmp_path / "sys"), "--yes",
              "--identity", str(keys.passphrase))  # fmt: skip
        loop_disks.mount(node, tmp_path / "fs")
        assert tree(tmp_path / "fs") == tree(src.root / "data")
    finally:
        src_disks.cleanup()
