"""Used-blocks imaging, its decisions and commands: which tool images what, the exact argv of
partclone and ntfsclone (save and restore), their image headers (the first bytes of real images),
the manifest's record of the format, a tool's failure as one line, and the file system grown to fill
a larger node after the restore (pytest-subprocess)."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest
from pytest_subprocess import FakeProcess

from mkrec.backup import imaging
from mkrec.backup.imaging import (
    ImageInfo,
    choose,
    mounted_on,
    open_image,
    parse_header,
    restore_argv,
    restore_hint,
    save_argv,
)
from mkrec.backup.manifest import ImageFormat, Manifest, StreamRecord, parse_manifest
from mkrec.errors import CommandError, MkrecError
from mkrec.restore.apply.unpack import grow_to_node, write_image

FIXTURES = Path(__file__).parent / "fixtures" / "imaging"
PC_EXT4 = (FIXTURES / "partclone-ext4-256M.head").read_bytes()
PC_VFAT = (FIXTURES / "partclone-vfat-32M.head").read_bytes()
NTFS = (FIXTURES / "ntfsclone-256M.head").read_bytes()


def installed(monkeypatch: pytest.MonkeyPatch, *tools: str) -> None:
    monkeypatch.setattr(imaging, "which", lambda tool: Path("/usr/sbin", tool) if tool in tools else None)


# ---- commands ----


def test_save_argv_exact() -> None:
    assert save_argv(ImageFormat.PARTCLONE, "ext4", "/dev/sdb3") == [
        "partclone.ext4", "--clone", "--source", "/dev/sdb3", "--output", "-", "--quiet",
        "--logfile", "/dev/null",
    ]  # fmt: skip
    assert save_argv(ImageFormat.PARTCLONE, "vfat", "/dev/sda1")[0] == "partclone.vfat"
    assert save_argv(ImageFormat.NTFSCLONE, "ntfs", "/dev/sdb4") == [
        "ntfsclone", "--save-image", "--output", "-", "--quiet", "/dev/sdb4",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        save_argv(ImageFormat.RAW, "raw", "/dev/sdb9")


def test_restore_argv_exact() -> None:
    assert restore_argv(ImageFormat.PARTCLONE, "/dev/vdb3") == [
        "partclone.restore", "--source", "-", "--output", "/dev/vdb3", "--quiet", "--logfile", "/dev/null",
    ]  # fmt: skip
    assert restore_argv(ImageFormat.NTFSCLONE, "/dev/vdb4") == [
        "ntfsclone", "--restore-image", "--overwrite", "/dev/vdb4", "--quiet", "-",
    ]  # fmt: skip
    assert restore_hint(ImageFormat.NTFSCLONE, "x/sdb4.ntfs.ntfsclone.img") == (
        "ntfsclone --restore-image --overwrite /dev/TARGET x/sdb4.ntfs.ntfsclone.img"
    )


# ---- which tool ----


@pytest.mark.parametrize(
    ("fstype", "mounts", "tools", "expected"),
    [
        ("ntfs", [], ("ntfsclone", "partclone.ntfs"), ImageFormat.NTFSCLONE),
        ("ntfs", [("/win", True)], ("ntfsclone",), ImageFormat.NTFSCLONE),  # ntfsclone takes a ro mount
        ("ntfs", [], ("partclone.ntfs",), ImageFormat.PARTCLONE),
        ("ext4", [], ("partclone.ext4",), ImageFormat.PARTCLONE),
        ("vfat", [], ("partclone.vfat",), ImageFormat.PARTCLONE),
        ("ext4", [("/mnt/x", True)], ("partclone.ext4",), ImageFormat.RAW),  # partclone refuses mounts
        ("ext4", [], (), ImageFormat.RAW),
        ("raw", [], ("partclone.dd", "partclone.raw"), ImageFormat.RAW),
        ("swap", [], ("partclone.swap",), ImageFormat.RAW),
    ],
)
def test_choose(
    monkeypatch: pytest.MonkeyPatch,
    fstype: str,
    mounts: list[tuple[str, bool]],
    tools: tuple[str, ...],
    expected: ImageFormat,
) -> None:
    installed(monkeypatch, *tools)
    assert choose("/dev/sdb3", fstype, mounts) is expected


def test_a_read_write_mount_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, "ntfsclone")
    with pytest.raises(MkrecError) as err:
        choose("/dev/sdb4", "ntfs", [("/mnt/sys/win", False)])
    assert err.value.message == "cannot image /dev/sdb4: it is mounted read-write on /mnt/sys/win"
    assert err.value.hint is not None and "read-only" in err.value.hint


def test_mounted_on_matches_by_device_number(tmp_path: Path) -> None:
    # the null device under two names stands in for a partition and its /dev/disk/... alias
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/null /mnt/with\\040space ext4 ro,relatime 0 0\n"
        "/dev/zero /other ext4 rw 0 0\n"
        "proc /proc proc rw 0 0\n"
        "/dev/null /again fuseblk rw,user_id=0 0 0\n"
    )
    os.symlink("/dev/null", tmp_path / "alias")
    assert mounted_on(str(tmp_path / "alias"), mounts) == [("/mnt/with space", True), ("/again", False)]
    assert mounted_on("/dev/no-such-device", mounts) == []


# ---- headers of real images ----


def test_parse_headers_of_real_images() -> None:
    assert parse_header(ImageFormat.PARTCLONE, PC_EXT4) == ImageInfo(268435456, 47207 * 1024)
    assert parse_header(ImageFormat.PARTCLONE, PC_VFAT) == ImageInfo(33554432, 768 * 512)
    # ntfsclone wants the volume (65535 clusters) plus its backup boot sector
    assert parse_header(ImageFormat.NTFSCLONE, NTFS) == ImageInfo(65535 * 4096 + 512, 5573 * 4096)
    assert parse_header(ImageFormat.NTFSCLONE, PC_EXT4) is None
    assert parse_header(ImageFormat.PARTCLONE, PC_EXT4[:60]) is None
    assert parse_header(ImageFormat.PARTCLONE, PC_EXT4[:30] + b"0001" + PC_EXT4[34:]) is None


# ---- running the tool ----


def test_open_image_reads_the_header_and_the_whole_stream(
    fp: FakeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed(monkeypatch, "partclone.ext4")
    body = PC_EXT4 + os.urandom(3 * 4096 + 17)
    argv = save_argv(ImageFormat.PARTCLONE, "ext4", "/dev/sdz3")
    fp.register(argv, stdout=body, stderr="Partclone v0.3.23\nElapsed: 00:00:01\rElapsed: 00:00:02\n")
    image = open_image("/dev/sdz3", "ext4")
    assert image.format is ImageFormat.PARTCLONE
    assert image.info == ImageInfo(268435456, 47207 * 1024)
    got = image.reader.read(4096 * 2)
    assert got == body[: 4096 * 2], "the first read is a whole one, header included"
    got += image.reader.read()
    assert got == body
    image.finish()
    line = json.loads(image.catalog_line("sdz3.ext4.img.zst"))
    assert (line["path"], line["type"], line["size"]) == (".", "image", 47207 * 1024)


def test_open_image_by_readinto(fp: FakeProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, "ntfsclone")
    body = NTFS + bytes(range(256)) * 40
    fp.register(save_argv(ImageFormat.NTFSCLONE, "ntfs", "/dev/sdz4"), stdout=body)
    image = open_image("/dev/sdz4", "ntfs")
    out = bytearray()
    buf = bytearray(1000)
    while n := image.reader.readinto(memoryview(buf)):  # type: ignore[attr-defined]
        out += buf[:n]
    assert bytes(out) == body
    image.finish()


def test_a_failing_tool_is_one_line_with_its_reason(fp: FakeProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, "partclone.ext4")
    argv = save_argv(ImageFormat.PARTCLONE, "ext4", "/dev/sdz3")
    stderr = (
        "Partclone v0.3.23 http://partclone.org\nStarting to clone device (/dev/sdz3) to image (-)\n"
        "Reading Super Block\nextfs_open: bad magic number in super-block\nerror exit\n"
        "Partclone fail, please check /dev/null !\n"
    )
    fp.register(argv, stdout=b"", stderr=stderr, returncode=1)
    with pytest.raises(CommandError) as err:
        open_image("/dev/sdz3", "ext4")
    assert err.value.message == "partclone.ext4 failed (exit 1): extfs_open: bad magic number in super-block"


def test_an_unknown_header_is_refused(fp: FakeProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, "ntfsclone")
    fp.register(
        save_argv(ImageFormat.NTFSCLONE, "ntfs", "/dev/sdz4"), stdout=b"\0ntfsclone-imagX" + bytes(99)
    )
    with pytest.raises(MkrecError) as err:
        open_image("/dev/sdz4", "ntfs")
    assert (
        err.value.message
        == "ntfsclone on /dev/sdz4: the image does not start with the ntfsclone header mkrec knows"
    )


def test_every_block_without_a_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    installed(monkeypatch)
    device = tmp_path / "part"
    device.write_bytes(b"x" * 12345)
    image = open_image(str(device), "ext4")
    assert image.format is ImageFormat.RAW and image.proc is None
    assert image.info == ImageInfo(12345, 12345)
    assert image.reader.read() == b"x" * 12345
    image.reader.close()


# ---- the manifest ----


def _manifest(streams: list[StreamRecord]) -> Manifest:
    return Manifest("id", "CDrec-x", "h", "2026-01-01T00:00:00", "path", 1, 1, streams, "catalog.1")


def test_manifest_records_the_image_format_and_size() -> None:
    rec = StreamRecord("sdb3.ext4.img.zst", "image", "/dev/sdb3", "ext4", "", 4 << 20)
    rec.image, rec.fs_size = ImageFormat.PARTCLONE, 268435456
    tar = StreamRecord("sdb2.ext4.tar.zst", "tar", "/dev/sdb2", "ext4", "/", 4 << 20)
    back = parse_manifest(_manifest([rec, tar]).to_json(), "m.json")
    assert back.streams[0].image is ImageFormat.PARTCLONE and back.streams[0].fs_size == 268435456
    assert back.streams[1].image is None and back.streams[1].fs_size is None


def test_an_old_manifest_without_the_format_reads_as_raw() -> None:
    data = json.loads(_manifest([StreamRecord("a.raw.img.zst", "image", "/dev/a", "raw", "", 1)]).to_json())
    for s in data["streams"]:
        del s["image"], s["fs_size"]
    rec = parse_manifest(json.dumps(data), "old.json").streams[0]
    rec.size = 5000
    assert (rec.image, imaging.image_format(rec), imaging.needed_bytes(rec)) == (None, ImageFormat.RAW, 5000)


def test_a_bad_image_format_names_the_stream() -> None:
    data = json.loads(_manifest([StreamRecord("a.ext4.img.zst", "image", "/dev/a", "ext4", "", 1)]).to_json())
    data["streams"][0]["image"] = "clonezilla"
    with pytest.raises(MkrecError) as err:
        parse_manifest(json.dumps(data), "m.json")
    assert err.value.message == (
        "m.json: stream a.ext4.img.zst: 'image' must be one of raw, partclone, ntfsclone, got 'clonezilla'"
    )


# ---- restoring ----


class FakeSet:
    """What write_image needs of a RestoreSet: the records and the stream's bytes."""

    def __init__(self, record: StreamRecord, data: bytes) -> None:
        self.streams = {record.name: record}
        self.set_name = "CDrec-20260101-0000"
        self.data = data

    def open(self, name: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def _image_record(fmt: ImageFormat | None, fs_size: int | None, size: int) -> StreamRecord:
    rec = StreamRecord("sdb3.ext4.img.zst", "image", "/dev/sdb3", "ext4", "", 4 << 20, complete=True)
    rec.image, rec.fs_size, rec.size = fmt, fs_size, size
    return rec


def test_a_too_small_target_is_refused_before_anything_runs(fp: FakeProcess, tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.write_bytes(b"k" * 4096)
    rec = _image_record(ImageFormat.PARTCLONE, 8192, 600)
    with pytest.raises(MkrecError) as err:
        write_image(FakeSet(rec, PC_EXT4), rec.name, str(node))  # type: ignore[arg-type]
    assert err.value.message == (
        f"{node} (4.0 KiB) is too small for the image sdb3.ext4.img.zst (8.0 KiB needed); nothing was written"
    )
    assert node.read_bytes() == b"k" * 4096 and not fp.calls


def test_restore_runs_the_tool_of_the_format(fp: FakeProcess, tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.write_bytes(bytes(8192))
    rec = _image_record(ImageFormat.PARTCLONE, 8192, len(PC_EXT4))
    fp.register(
        restore_argv(ImageFormat.PARTCLONE, str(node)), stderr="Partclone v0.3.23\nCloned successfully.\n"
    )
    assert write_image(FakeSet(rec, PC_EXT4), rec.name, str(node)) == len(PC_EXT4)  # type: ignore[arg-type]
    assert fp.call_count(restore_argv(ImageFormat.PARTCLONE, str(node))) == 1
    assert node.read_bytes() == bytes(8192), "the tool writes the node, not mkrec"


def test_an_old_raw_image_is_written_block_for_block(fp: FakeProcess, tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.write_bytes(bytes(8192))
    rec = _image_record(None, None, 5000)
    assert write_image(FakeSet(rec, b"r" * 5000), rec.name, str(node)) == 5000  # type: ignore[arg-type]
    assert node.read_bytes() == b"r" * 5000 + bytes(3192) and not fp.calls


def test_ntfsclone_says_why_on_stdout(fp: FakeProcess, tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.write_bytes(bytes(1 << 20))
    rec = _image_record(ImageFormat.NTFSCLONE, 1 << 20, len(NTFS))
    argv = restore_argv(ImageFormat.NTFSCLONE, str(node))
    fp.register(
        argv,
        stdout="ERROR: Output device is too small (1048576) to fit the NTFS image (268431872).\n",
        stderr="ntfsclone v2022.10.3 (libntfs-3g)\n",
        returncode=1,
    )
    with pytest.raises(CommandError) as err:
        write_image(FakeSet(rec, NTFS), rec.name, str(node))  # type: ignore[arg-type]
    reason = "ERROR: Output device is too small (1048576) to fit the NTFS image (268431872)."
    assert err.value.message == f"ntfsclone failed (exit 1): {reason}"


# ---- growing to fill a larger node ----

MiB = 1 << 20


def sized_node(tmp_path: Path, size: int) -> str:
    node = tmp_path / "node"
    with open(node, "wb") as fh:
        fh.truncate(size)  # sparse: only its size matters
    return str(node)


def test_ext4_on_a_larger_node_is_checked_then_grown(
    fp: FakeProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = sized_node(tmp_path, 300 * MiB)
    fp.register(["e2fsck", "-f", "-p", node], returncode=1)  # 1: errors corrected, fine
    fp.register(["resize2fs", node])
    with caplog.at_level(logging.INFO, logger="mkrec"):
        grow_to_node("ext4", node, 200 * MiB)
    assert list(fp.calls) == [["e2fsck", "-f", "-p", node], ["resize2fs", node]]
    assert f"{node}: ext4 grown by 100.0 MiB to fill it" in caplog.text


def test_ntfs_on_a_larger_node_is_grown_without_a_question(fp: FakeProcess, tmp_path: Path) -> None:
    node = sized_node(tmp_path, 256 * MiB)
    argv = ["ntfsresize", "--force", "--force", "--no-progress-bar", node]
    fp.register(argv, stdout="Successfully resized NTFS on device\n")
    grow_to_node("ntfs", node, 128 * MiB + 512)
    assert list(fp.calls) == [argv]


@pytest.mark.parametrize("fstype", ["ext4", "ntfs", "xfs", "vfat"])
@pytest.mark.parametrize("extra", [0, MiB, -4096], ids=["same", "1MiB", "smaller"])
def test_a_node_not_more_than_1MiB_larger_is_left_alone(
    fp: FakeProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture, fstype: str, extra: int
) -> None:
    node = sized_node(tmp_path, 64 * MiB + extra)
    with caplog.at_level(logging.INFO, logger="mkrec"):
        grow_to_node(fstype, node, 64 * MiB)  # any command run would be unregistered: an error
    assert not fp.calls and not caplog.text


@pytest.mark.parametrize(
    ("fstype", "level", "line"),
    [
        ("xfs", logging.WARNING, "warning: {node}: the xfs file system keeps its saved size "
                                 "(64.0 MiB unused); once mounted: xfs_growfs MOUNTPOINT"),
        ("btrfs", logging.WARNING, "warning: {node}: the btrfs file system keeps its saved size "
                                   "(64.0 MiB unused); once mounted: btrfs filesystem resize max MOUNTPOINT"),
        ("vfat", logging.INFO, "    {node}: the vfat image keeps its saved size (64.0 MiB unused)"),
        ("raw", logging.INFO, "    {node}: the raw image keeps its saved size (64.0 MiB unused)"),
    ],
)  # fmt: skip
def test_what_cannot_grow_here_keeps_its_size_in_one_line(
    fp: FakeProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture, fstype: str, level: int, line: str
) -> None:
    node = sized_node(tmp_path, 128 * MiB)
    with caplog.at_level(logging.INFO, logger="mkrec"):
        grow_to_node(fstype, node, 64 * MiB)
    assert not fp.calls
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(level, line.format(node=node))]


def test_e2fsck_errors_stop_the_growing(fp: FakeProcess, tmp_path: Path) -> None:
    node = sized_node(tmp_path, 300 * MiB)
    fp.register(
        ["e2fsck", "-f", "-p", node], stdout="UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.\n", returncode=4
    )
    with pytest.raises(MkrecError) as err:
        grow_to_node("ext3", node, 200 * MiB)
    assert (
        err.value.message == f"{node}: e2fsck -f -p found errors it could not repair (exit 4); ext3 not grown"
    )
    assert err.value.hint == f"run e2fsck -f {node} by hand, then resize2fs {node}"
    assert list(fp.calls) == [["e2fsck", "-f", "-p", node]], "resize2fs does not run"


def test_a_failing_grow_names_the_node_and_the_command(fp: FakeProcess, tmp_path: Path) -> None:
    node = sized_node(tmp_path, 300 * MiB)
    fp.register(["e2fsck", "-f", "-p", node])
    fp.register(["resize2fs", node], stderr="resize2fs: No space left on device while trying to resize\n",
                returncode=1)  # fmt: skip
    with pytest.raises(MkrecError) as err:
        grow_to_node("ext4", node, 200 * MiB)
    assert err.value.message == (
        f"{node}: growing its ext4 file system to fill it failed: "
        "resize2fs failed (exit 1): resize2fs: No space left on device while trying to resize"
    )
    assert err.value.hint == f"the image is written at its saved size; to grow it run resize2fs {node}"


def test_an_image_written_onto_a_larger_node_is_grown(fp: FakeProcess, tmp_path: Path) -> None:
    node = sized_node(tmp_path, 16 * MiB)
    rec = _image_record(ImageFormat.PARTCLONE, 8 * MiB, len(PC_EXT4))
    fp.register(restore_argv(ImageFormat.PARTCLONE, node))
    fp.register(["e2fsck", "-f", "-p", node])
    fp.register(["resize2fs", node])
    write_image(FakeSet(rec, PC_EXT4), rec.name, node)  # type: ignore[arg-type]
    assert [c[0] for c in fp.calls] == ["partclone.restore", "e2fsck", "resize2fs"]


def test_the_preflight_wants_the_image_tools_when_partitions_are_imaged() -> None:
    from mkrec.config import config_from_dict
    from mkrec.tools import PACKAGE, needed_tools

    assert "partclone.restore" not in needed_tools(config_from_dict({}))
    tools = needed_tools(config_from_dict({"source": {"raw": ["/dev/sdb3"]}}))
    assert [PACKAGE[t] for t in tools if t in ("partclone.restore", "ntfsclone")] == ["partclone", "ntfs-3g"]
