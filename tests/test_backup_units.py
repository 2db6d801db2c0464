"""Backup units on real tar streams and io.BytesIO: the tar header scanner (GNU long names, pax,
sparse), the frame writer and its index, cutstream's capacity maths, the manifest, SHA256SUMS/sfv."""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard

from mkrec.backup.catalog import parse_catalog
from mkrec.backup.cutstream import Capacity, CutStream, VolumeContent, metadata_sizes
from mkrec.backup.frames import (
    FRAME_SIZE,
    Frame,
    FrameCompressor,
    FrameError,
    decompress_frame,
    incompressible,
)
from mkrec.backup.manifest import Manifest, PieceRecord, StreamRecord, parse_manifest
from mkrec.backup.sources import visible_mounts
from mkrec.backup.stream import pump
from mkrec.backup.sums import Sums, format_sfv, format_sha256sums, parse_sfv, parse_sha256sums
from mkrec.backup.tarscan import TarScanner, scan
from mkrec.errors import MkrecError

# ---- a source tree with everything the scanner must understand ----


def make_tree(root: Path) -> None:
    root.mkdir()
    (root / "small").write_text("hello\n")
    deep = root / ("d" * 120) / ("e" * 90)
    deep.mkdir(parents=True)
    (deep / ("f" * 200)).write_bytes(b"x" * 3000)  # path > 255: GNU LongLink / pax path
    os.symlink("t" * 180, root / "longlink")  # link target > 100
    os.link(root / "small", root / "hard")
    with open(root / "sparse", "wb") as fh:  # holes: tar --sparse writes a sparse member
        fh.truncate(20 * 1024 * 1024)
        fh.seek(5_000_000)
        fh.write(b"data in the middle")
        fh.seek(15_000_000)
        fh.write(b"more")
    (root / "name with\nnewline and ü").write_text("odd\n")
    os.mkfifo(root / "fifo")


def tar_of(root: Path, *fmt: str) -> bytes:
    proc = subprocess.run(
        ["tar", "-c", "-f", "-", "--sparse", *fmt, "-C", str(root), "."], capture_output=True, check=True
    )
    return proc.stdout


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scan") / "src"
    make_tree(root)
    return root


@pytest.mark.parametrize("fmt", [["--format=gnu"], ["--format=posix"], ["--format=posix", "--xattrs"]])
def test_scanner_matches_tarfile(tree: Path, fmt: list[str]) -> None:
    data = tar_of(tree, *fmt)
    entries = scan(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    assert [e.offset for e in entries] == [m.offset for m in members]
    assert [e.path for e in entries] == [m.name.removeprefix("./").rstrip("/") or "." for m in members]
    # members are contiguous: each ends where the next begins
    assert [e.end for e in entries[:-1]] == [e.offset for e in entries[1:]]
    by = {e.path: e for e in entries}
    long_file = f"{'d' * 120}/{'e' * 90}/{'f' * 200}"
    assert by[long_file].size == 3000 and by[long_file].type == "file"
    assert by["longlink"].type == "symlink" and by["longlink"].link == "t" * 180
    assert by["hard"].type == "hardlink" and by["hard"].link in ("small",)
    assert by["sparse"].sparse and by["sparse"].size == 20 * 1024 * 1024
    assert by["sparse"].end - by["sparse"].offset < 64 * 1024  # the holes are not in the stream
    assert by["name with\nnewline and ü"].size == 4
    assert by["fifo"].type == "fifo"
    assert by["."].type == "dir"
    st = os.stat(tree / "small")
    assert by["small"].mode == st.st_mode & 0o7777 and by["small"].uid == st.st_uid
    assert int(by["small"].mtime) == int(st.st_mtime)


def test_scanner_any_chunking(tree: Path) -> None:
    data = tar_of(tree, "--format=gnu")
    whole = scan(data)
    for size in (1, 7, 511, 512, 513, 4096):
        got: list = []
        scanner = TarScanner(got.append)
        for i in range(0, len(data), size):
            scanner.feed(data[i : i + size])
        assert got == whole, size
        assert scanner.finished


def test_scanner_base256_size() -> None:
    # GNU base-256 numbers: a file larger than 8 GiB stores its size with the high bit set.
    info = tarfile.TarInfo("big")
    info.size = 9 * 1024**3
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    got: list = []
    scanner = TarScanner(got.append)
    scanner.feed(bytes(header))
    assert got[0].size == 9 * 1024**3
    assert got[0].end == 512 + 9 * 1024**3


# ---- frames ----


def test_frames_in_order_and_readable() -> None:
    rng = random.Random(1)
    raws = [rng.randbytes(100_000) if i % 2 else bytes(200_000) for i in range(9)]
    comp = FrameCompressor(level=3, threads=3)
    out: list[Frame] = []
    offset = 0
    for raw in raws:
        out.extend(comp.submit(raw, offset, [f"line{offset}"]))
        offset += len(raw)
    out.extend(comp.close())
    assert [f.uoffset for f in out] == [sum(len(r) for r in raws[:i]) for i in range(9)]
    assert [decompress_frame(f.data, f.usize) for f in out] == raws
    assert out[2].entries == [f"line{out[2].uoffset}"]
    damaged = bytearray(out[1].data)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(FrameError):
        decompress_frame(bytes(damaged), out[1].usize)


def test_probe_tells_incompressible_frames_from_the_rest() -> None:
    rng = random.Random(2)
    fast = zstandard.ZstdCompressor(level=1)
    noise = rng.randbytes(FRAME_SIZE)
    text = b"".join(b"line %d of a log file\n" % i for i in range(200_000))[:FRAME_SIZE]
    assert incompressible(noise, fast)
    assert not incompressible(text, fast)
    mixed = bytearray(noise)
    mixed[FRAME_SIZE // 3 : FRAME_SIZE // 3 * 2] = bytes(FRAME_SIZE // 3)  # one sample lands in zeros
    assert not incompressible(mixed, fast)
    assert not incompressible(noise[: 64 * 1024], fast)  # too small to probe


def test_incompressible_frames_take_the_fast_level_and_others_the_configured_one() -> None:
    rng = random.Random(3)
    noise = rng.randbytes(FRAME_SIZE)
    text = b"".join(b"%d: %s\n" % (i, rng.choice([b"alpha", b"beta", b"gamma"]) * 3) for i in range(400_000))
    text = text[:FRAME_SIZE]
    comp = FrameCompressor(level=9, threads=1)
    frames = [*comp.submit(noise, 0, []), *comp.submit(text, FRAME_SIZE, []), *comp.close()]
    assert [decompress_frame(f.data, f.usize) for f in frames] == [noise, text]
    level = zstandard.ZstdCompressor(level=9, write_checksum=True, write_content_size=True)
    assert frames[1].data == level.compress(text)  # compressible: exactly the configured level
    assert frames[0].data != level.compress(noise)  # the probe chose the fast level
    assert len(frames[0].data) < FRAME_SIZE + 1024  # and it costs no space to speak of


# ---- cutstream on BytesIO ----


class MemoryStore:
    def __init__(self) -> None:
        self.files: dict[tuple[int, str], bytes] = {}
        self.volumes: list[VolumeContent] = []

    def open_piece(self, volume: int, name: str) -> BinaryIO:
        return io.BytesIO()

    def close_piece(self, volume: int, name: str, fh: BinaryIO) -> None:
        assert isinstance(fh, io.BytesIO)
        self.files[(volume, name)] = fh.getvalue()

    def close_volume(self, content: VolumeContent) -> None:
        self.volumes.append(content)


def test_cutstream_volumes_read_alone(tree: Path) -> None:
    data = tar_of(tree, "--format=posix") + random.Random(2).randbytes(3_000_000)
    store = MemoryStore()
    cap = Capacity(first=1_200_000, rest=2_000_000, block=2048, per_file=2048, fixed=64 * 1024)
    cut = CutStream(store, cap, piece_max=700_000)
    cut.start_stream("s.tar.zst")
    summary = pump(io.BytesIO(data), "s.tar.zst", cut, threads=2, frame_size=256 * 1024)
    result = cut.end_stream()
    volumes = cut.finish()
    assert summary.size == len(data)
    assert volumes == len(store.volumes) >= 3
    assert store.volumes[-1].last and not any(v.last for v in store.volumes[:-1])
    # Reopen what was written: each piece decompresses alone, frame by frame, at its uoffset.
    rebuilt = bytearray()
    for vol in store.volumes:
        used = 0
        for piece in vol.pieces:
            blob = store.files[(vol.number, piece.name)]
            assert len(blob) == piece.size <= 700_000
            assert zlib.crc32(blob) == piece.crc32
            assert piece.uoffset == len(rebuilt)
            pos = 0
            for csize, usize in piece.frames:
                rebuilt += decompress_frame(blob[pos : pos + csize], usize)
                pos += csize
            used += piece.size
        # the capacity maths held: what cutstream counted fits the volume
        meta = metadata_sizes(sum(len(x) + 1 for x in vol.catalog), len(cut.all_pieces), 1, 99, 9)
        assert cap.usage([p.size for p in vol.pieces] + meta[1:]) <= cap.of(vol.number) + 99 * 32
    assert bytes(rebuilt) == data
    assert result.compressed_size == sum(p.size for p in result.pieces)
    # every member is catalogued on the volume holding its first header
    catalog = [e for v in store.volumes for e in parse_catalog("\n".join(v.catalog), "test")]
    assert [c.offset for c in catalog] == [e.offset for e in scan(data)]
    for v in store.volumes:
        for e in parse_catalog("\n".join(v.catalog), "test"):
            lo = v.pieces[0].uoffset
            hi = v.pieces[-1].uoffset + v.pieces[-1].usize
            assert lo <= e.offset < hi


def test_cutstream_first_volume_smaller() -> None:
    # 1 MiB frames of random data (~1 MiB compressed): volume 1 holds fewer than the others.
    store = MemoryStore()
    mib = 1024 * 1024
    # fixed 256 KiB + ~52 KiB of metadata estimates: 3 frames do not fit in 3 MiB + 256 KiB
    cap = Capacity(first=3 * mib + 256 * 1024, rest=6 * mib + 256 * 1024, fixed=256 * 1024)
    cut = CutStream(store, cap)
    cut.start_stream("r.img.zst")
    pump(io.BytesIO(random.Random(3).randbytes(20 * mib)), "r.img.zst", cut, scan_tar=False, frame_size=mib)
    cut.end_stream()
    cut.finish()
    counts = [sum(len(p.frames) for p in v.pieces) for v in store.volumes]
    assert counts[0] == 2 and counts[1:4] == [5, 5, 5]
    assert sum(counts) == 20


def test_cutstream_frame_larger_than_volume() -> None:
    cut = CutStream(MemoryStore(), Capacity(first=100_000, rest=100_000, fixed=0))
    cut.start_stream("x")
    with pytest.raises(MkrecError, match=r"volume 2 \(97.7 KiB\) cannot hold even one frame"):
        cut.add(Frame(0, 10, b"z" * 200_000, []))


def test_cutstream_trailer_opens_one_more_volume() -> None:
    store = MemoryStore()
    cap = Capacity(first=200_000, rest=200_000, fixed=0, per_file=0)
    cut = CutStream(store, cap)
    cut.start_stream("x")
    cut.add(Frame(0, 10, b"z" * 120_000, []))
    cut.end_stream()
    assert cut.finish(trailer=60_000) == 2
    assert [len(v.pieces) for v in store.volumes] == [1, 0]


# ---- manifest ----


def sample_manifest() -> Manifest:
    piece = PieceRecord("sda1.ext4.tar.zst.001", 1, 0, 100, 50, "a" * 64, 123, [(50, 100)])
    stream = StreamRecord("sda1.ext4.tar.zst", "tar", "/dev/sda1", "ext4", "/", 4194304, [piece], True)
    return Manifest("id-1", "CDrec-20260101-1200", "host", "2026-01-01T12:00:00", "cd", 1, 1, [stream], "c")


def test_manifest_round_trip() -> None:
    m = sample_manifest()
    assert parse_manifest(m.to_json(), "m.json") == m


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: "{", "vol1:backup/manifest.json: not valid JSON (Expecting property name enclosed in "
         "double quotes at line 1)"),
        (lambda d: "[]", "vol1:backup/manifest.json: not a manifest (expected a JSON object)"),
        (lambda d: {**d, "format": "x"}, "vol1:backup/manifest.json: not an mkrec manifest (format 'x')"),
        (lambda d: {**d, "version": 9}, "vol1:backup/manifest.json: manifest version 9 is not supported "
         "(this mkrec reads 1)"),
        (lambda d: {k: v for k, v in d.items() if k != "set_id"},
         "vol1:backup/manifest.json: missing key 'set_id'"),
        (lambda d: {**d, "volume": "1"}, "vol1:backup/manifest.json: 'volume' must be int, got '1'"),
        (lambda d: {**d, "volumes": 0},
         "vol1:backup/manifest.json: 'volumes' must be a positive number or null, got 0"),
        (lambda d: {**d, "streams": [{**d["streams"][0], "pieces": [{**d["streams"][0]["pieces"][0],
                                                                      "size": -1.5}]}]},
         "vol1:backup/manifest.json: stream sda1.ext4.tar.zst: piece sda1.ext4.tar.zst.001: 'size' must be "
         "int, got -1.5"),
        (lambda d: {**d, "streams": [{**d["streams"][0], "pieces": [{**d["streams"][0]["pieces"][0],
                                                                      "frames": [[1]]}]}]},
         "vol1:backup/manifest.json: stream sda1.ext4.tar.zst: piece sda1.ext4.tar.zst.001: "
         "'frames' must be a list of [compressed, uncompressed] sizes"),
    ],
)  # fmt: skip
def test_manifest_errors(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(sample_manifest().to_json())
    changed = edit(data)
    text = changed if isinstance(changed, str) else json.dumps(changed)
    with pytest.raises(MkrecError) as err:
        parse_manifest(text, "vol1:backup/manifest.json")
    assert err.value.message == message


# ---- checksum lists ----


def test_sfv_and_sha256sums_format(tmp_path: Path) -> None:
    items = [("README.txt", Sums("0" * 63 + "1", 0x1234ABCD)), ("backup/a.tar.zst.001", Sums("f" * 64, 7))]
    sfv = format_sfv(items, "set X volume 1")
    assert sfv == "; set X volume 1\nREADME.txt 1234ABCD\nbackup/a.tar.zst.001 00000007\n"
    assert parse_sfv(sfv, "Checksums.sfv") == {"README.txt": 0x1234ABCD, "backup/a.tar.zst.001": 7}
    sums = format_sha256sums(items)
    assert sums.splitlines()[0] == "0" * 63 + "1  README.txt"
    assert parse_sha256sums(sums, "SHA256SUMS")["backup/a.tar.zst.001"] == "f" * 64
    with pytest.raises(ValueError, match=re.escape("Checksums.sfv line 2: not '<file> <CRC32>'")):
        parse_sfv("; c\nfoo\n", "Checksums.sfv")
    # the standard tools agree with what we write
    (tmp_path / "a").write_bytes(b"abc")
    from mkrec.backup.sums import sums_of

    with open(tmp_path / "a", "rb") as fh:
        s, _ = sums_of(fh)
    (tmp_path / "SHA256SUMS").write_text(format_sha256sums([("a", s)]))
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=tmp_path, check=True)
    assert format_sfv([("a", s)]) == "a 352441C2\n"  # CRC32("abc"), as cksfv prints it


# ---- reading a written volume back ----


def test_read_back_names_a_file_whose_bytes_did_not_land(tmp_path: Path) -> None:
    from mkrec.backup.setdir import check_volume
    from mkrec.backup.setreader import DirVolume

    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "piece").write_bytes(b"written")
    good = Sums("0" * 64, zlib.crc32(b"written"))
    check_volume(DirVolume(tmp_path), [("backup/piece", good)])
    with pytest.raises(MkrecError, match="backup/piece reads back wrong"):
        check_volume(DirVolume(tmp_path), [("backup/piece", Sums("0" * 64, zlib.crc32(b"wrItten")))])
    with pytest.raises(MkrecError, match="backup/other is missing after writing"):
        check_volume(DirVolume(tmp_path), [("backup/other", good)])


def test_of_two_mounts_on_one_directory_only_the_top_one_is_backed_up() -> None:
    """A file system mounted again over the same directory (a second loop device of one image, a
    tmpfs over it): only the later mount is seen there, so only it is saved, once."""
    findmnt = {
        "filesystems": [
            {"target": "/", "source": "/dev/vda1", "fstype": "ext4"},
            {"target": "/srv/data", "source": "/dev/loop3", "fstype": "ext4"},
            {"target": "/srv/data", "source": "/dev/loop0", "fstype": "ext4"},
            {"target": "/srv/other", "source": "/dev/loop5", "fstype": "xfs"},
            {"target": "/srv/other", "source": "tmpfs", "fstype": "tmpfs"},
        ]
    }
    assert visible_mounts(findmnt, Path("/srv")) == [("/srv/data", "/dev/loop0", "ext4")]
    assert visible_mounts(findmnt, Path("/"))[0] == ("/", "/dev/vda1", "ext4")
