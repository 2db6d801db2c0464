"""The fault suite's damaged sets: one byte flipped in each kind of file a volume holds, a truncated
volume, a volume of another set, volumes renamed out of order, the last volume missing. Each through
the real command line: one line naming the volume and the file, a non-zero exit, no traceback, and
what is intact still comes back."""

from __future__ import annotations

import random
import shutil
import struct
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pycdlib
import pytest
from support import LoopDisks
from test_backup_root import cli, fake_rescue, flip_byte_in_piece

from mkrec.backup.extract import absolute
from mkrec.backup.run import backup
from mkrec.backup.setreader import open_set
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.log import setup_logging

pytestmark = pytest.mark.root
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    yield
    setup_logging(False)


def make_tree(root: Path) -> None:
    """Incompressible data over several volumes, and small files to find in the catalog."""
    rng = random.Random(7)
    (root / "big").mkdir(parents=True)
    for i in range(5):
        (root / "big" / f"blob{i}.bin").write_bytes(rng.randbytes(12 * MiB))
    (root / "small").mkdir()
    for i in range(50):
        (root / "small" / f"note{i:02d}.txt").write_text(f"note {i}\n" * 40)


def build_set(work: Path, started: datetime, root: Path) -> Path:
    ctx = Context(
        config_from_dict(
            {
                "build": {"mode": "cd", "output": str(work / "out")},
                "media": {"size": "24M"},
                "source": {"root": str(root)},
            }
        ),
        hostname="pc1",
        started=started,
        staging=work / "isofs",
    )
    return backup(ctx, fake_rescue(work))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tree on a real ext4 loop disk: the backup saves mounted file systems."""
    work = tmp_path_factory.mktemp("faultsrc")
    disks = LoopDisks(work)
    try:
        mnt = disks.ext4("128M", work / "mnt")
        make_tree(mnt)
        yield mnt
    finally:
        disks.cleanup()


@pytest.fixture(scope="module")
def pristine(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_set(tmp_path_factory.mktemp("faultset"), datetime(2026, 12, 1, 6, 0), source)


@pytest.fixture
def damaged(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the set to damage."""
    copy = tmp_path / "set"
    shutil.copytree(pristine, copy)
    return copy


@pytest.fixture(scope="module")
def first_blob(pristine: Path) -> str:
    """The blob tar saved first, so it lies on volume 1. Not always blob0: ext4 lists a directory in
    the order of its name hash, whose seed mkfs draws at random."""
    bset = open_set(pristine)
    try:
        entries, _ = bset.catalog()
    finally:
        bset.close()
    blobs = [e for e in entries if "/big/blob" in absolute(bset, e)]
    return absolute(bset, min(blobs, key=lambda e: e.offset))


def volumes(set_dir: Path) -> list[Path]:
    return sorted(set_dir.glob("*.iso"), key=lambda p: int(p.stem.rsplit("vol", 1)[1]))


def flip_file_byte(iso_file: Path, rr_path: str, at: int = 10) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_file))
    offset = iso.get_record(rr_path=rr_path).fp_offset + at
    iso.close()
    flip_at(iso_file, offset)


def flip_at(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def one_line_failure(code: int, out: str) -> None:
    assert code != 0, out
    assert "Traceback" not in out, out


def test_the_pristine_set_verifies(pristine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = len(volumes(pristine))
    assert n >= 3, "the set must span volumes for these faults to mean anything"
    code, out = cli(capsys, "verify", str(pristine))
    assert code == 0 and f"{n} of {n} volumes" in out, out


def test_a_flipped_byte_in_a_piece_is_named(damaged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vol2 = volumes(damaged)[1]
    piece = flip_byte_in_piece(vol2, "iso")
    code, out = cli(capsys, "verify", str(damaged))
    one_line_failure(code, out)
    assert f"BAD: volume 2 ({vol2}): {piece}: SHA-256 mismatch" in out, out


@pytest.mark.parametrize("rr_path", ["/backup/manifest.json", "/SHA256SUMS", "/backup/catalog.all.jsonl.zst"])
def test_a_flipped_byte_in_a_set_file_of_the_last_volume_is_named(
    damaged: Path, first_blob: str, capsys: pytest.CaptureFixture[str], rr_path: str
) -> None:
    last = volumes(damaged)[-1]
    flip_file_byte(last, rr_path)
    code, out = cli(capsys, "verify", str(damaged))
    one_line_failure(code, out)
    said = {
        "/backup/manifest.json": f"BAD: {last}: backup/manifest.json damaged",
        "/SHA256SUMS": f"BAD: volume 4 ({last}): SHA256SUMS: damaged (not text)",
        "/backup/catalog.all.jsonl.zst": f"BAD: volume 4 ({last}): backup/catalog.all.jsonl.zst: SHA-256",
    }
    assert said[rr_path] in out, out
    # What the other volumes hold still comes back: their own manifests and catalog parts say where.
    code, out = cli(capsys, "extract", str(damaged), first_blob, "-C", str(damaged.parent / "x"))
    assert code == 0 and (damaged.parent / "x" / first_blob[1:]).stat().st_size == 12 * MiB, out


def test_without_the_last_volume_a_file_not_found_may_be_on_it(
    damaged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flip_file_byte(volumes(damaged)[-1], "/backup/manifest.json")
    code, out = cli(capsys, "extract", str(damaged), "/small/later.txt", "-C", str(damaged.parent / "x"))
    one_line_failure(code, out)
    assert "nothing in the volumes of CDrec-20261201-0600 read matches /small/later.txt" in out, out
    assert "manifest.json damaged" in out and "the files may be on the last volume" in out, out


def test_a_damaged_iso_directory_record_is_found_by_the_checksums(
    damaged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A piece's directory record pointing one block off: its bytes are read from the wrong place."""
    vol2 = volumes(damaged)[1]
    piece = flip_byte_in_piece(vol2, "iso")
    flip_byte_in_piece(vol2, "iso")  # flipped back: only the name was wanted
    iso = pycdlib.PyCdlib()
    iso.open(str(vol2))
    extent = iso.get_record(rr_path="/" + piece).extent_location()
    directory = iso.get_record(rr_path="/backup")
    start, size = directory.extent_location() * 2048, directory.get_data_length()
    iso.close()
    with open(vol2, "r+b") as fh:
        fh.seek(start)
        records = fh.read(size)
        both = struct.pack("<I", extent) + struct.pack(">I", extent)  # ISO 9660 stores it both ways
        at = records.index(both)
        fh.seek(start + at)
        fh.write(struct.pack("<I", extent + 1) + struct.pack(">I", extent + 1))
    code, out = cli(capsys, "verify", str(damaged))
    one_line_failure(code, out)
    assert f"BAD: volume 2 ({vol2}): {piece}: SHA-256 mismatch" in out, out


def test_a_truncated_volume_is_named(damaged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vol2 = volumes(damaged)[1]
    with open(vol2, "r+b") as fh:
        fh.truncate(vol2.stat().st_size // 2)
    code, out = cli(capsys, "verify", str(damaged))
    one_line_failure(code, out)
    assert str(vol2) in out, out


def test_a_volume_of_another_set_is_refused_by_name(
    source: Path, damaged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = build_set(tmp_path / "other", datetime(2026, 12, 2, 6, 0), source)
    stranger = volumes(other)[1]
    vol2 = volumes(damaged)[1]
    vol2.unlink()
    shutil.copyfile(stranger, vol2)  # named like the missing volume 2
    code, out = cli(capsys, "verify", str(damaged))
    one_line_failure(code, out)
    assert "belongs to another backup set (CDrec-20261202-0600" in out, out


def test_volumes_renamed_out_of_order_are_read_by_their_number(
    damaged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vols = volumes(damaged)
    vols[1].rename(damaged / "tmp.iso")
    vols[2].rename(vols[1])
    (damaged / "tmp.iso").rename(vols[2])
    code, out = cli(capsys, "verify", str(damaged))
    assert code == 0 and f"{len(vols)} of {len(vols)} volumes" in out, out


def test_the_last_volume_missing_is_said_and_the_rest_extracts(
    damaged: Path, first_blob: str, capsys: pytest.CaptureFixture[str]
) -> None:
    vols = volumes(damaged)
    vols[-1].unlink()
    code, out = cli(capsys, "verify", str(damaged))
    one_line_failure(code, out)
    assert "the last volume is missing" in out, out
    code, out = cli(capsys, "extract", str(damaged), first_blob, "-C", str(damaged.parent / "x"))
    assert code == 0, out
    assert (damaged.parent / "x" / first_blob[1:]).stat().st_size == 12 * MiB
