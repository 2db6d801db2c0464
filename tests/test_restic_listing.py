"""A restic set's files as ls, extract and compare read them: `restic ls --json` output captured
from Debian's restic 0.14 (tests/fixtures/restic/ls.json: a tree with a set-uid file, a sticky and
a set-gid directory, a symlink, a hard link, a fifo, device nodes and a name with a newline, all
with the mtime 2026-01-02 03:04:05.123456789 UTC) turned into catalog entries."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mkrec.backup.catalog import CatalogEntry
from mkrec.backup.extract import absent_paths, ls_lines
from mkrec.backup.manifest import StreamRecord
from mkrec.errors import MkrecError
from mkrec.restic.extract import include_pattern
from mkrec.restic.listing import as_image, epoch, parse_ls, top_entry
from mkrec.restore.compare import differs

LS = (Path(__file__).parent / "fixtures" / "restic" / "ls.json").read_text()
MTIME = 1767323045.123456789  # 2026-01-02 03:04:05.123456789 UTC


@dataclass
class Listing:
    """What ls reads of a set (mkrec.backup.extract.Listed)."""

    entries: list[CatalogEntry]
    streams: dict[str, StreamRecord] = field(default_factory=dict)

    def catalog(self) -> tuple[list[CatalogEntry], list[int]]:
        return self.entries, []


def by_path() -> dict[str, CatalogEntry]:
    return {e.path: e for e in parse_ls(LS, "sda2.ext4.tar", "fixture")}


def test_every_node_of_the_listing_becomes_an_entry() -> None:
    entries = by_path()
    assert sorted(entries) == sorted(
        ["etc", "etc/hosts", "etc/link", "etc/sub", "etc/sub/a", "etc/sub/hl", "tmp", "tmp/fifo",
         "tmp/loop", "tmp/null", "we ird", "we ird/new\nline"]
    )  # fmt: skip
    types = {path: e.type for path, e in entries.items()}
    assert types["etc"] == "dir" and types["etc/link"] == "symlink" and types["tmp/fifo"] == "fifo"
    assert types["tmp/null"] == "char" and types["tmp/loop"] == "block"
    assert types["etc/sub/hl"] == "file"  # restic marks no hard links
    assert entries["etc/hosts"].size == 6 and entries["etc/link"].link == ""
    assert entries["we ird/new\nline"].uid == 1000 and entries["we ird/new\nline"].gid == 100
    assert all(abs(e.mtime - MTIME) < 1e-6 for e in entries.values())


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("etc/hosts", stat.S_IFREG | 0o644),
        ("etc/sub/a", stat.S_IFREG | 0o4755),
        ("tmp", stat.S_IFDIR | 0o1777),
        ("we ird", stat.S_IFDIR | 0o2750),
        ("etc/link", stat.S_IFLNK | 0o777),
        ("tmp/null", stat.S_IFCHR | 0o644),
    ],
)
def test_gos_file_mode_becomes_the_unix_one(path: str, mode: int) -> None:
    assert oct(by_path()[path].mode) == oct(mode)


def test_times_with_a_zone_and_without_fraction() -> None:
    assert epoch("2026-01-02T04:04:05.5+01:00") == pytest.approx(1767323045.5)
    assert epoch("2026-01-02T03:04:05Z") == 1767323045


def test_a_line_that_is_not_restics_names_where() -> None:
    with pytest.raises(MkrecError, match=r"restic ls of /data line 2: not a line of restic ls --json"):
        parse_ls(LS.splitlines()[0] + '\n{"path": "/x"}\n', "s", "restic ls of /data")


def test_ls_lines_as_for_the_other_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    data = StreamRecord("sda2.ext4.tar", "tar", "/dev/sda2", "ext4", "/data", 0)
    top = top_entry(
        data.name, {"mode": 0o755, "uid": 0, "gid": 0, "atime_ns": 0, "mtime_ns": int(MTIME * 1e9)}
    )
    listing = Listing([top, *parse_ls(LS, data.name, "fixture")], {data.name: data})
    try:
        lines = ls_lines(listing, "/data/etc/sub")
        assert lines == [
            "drwxr-xr-x 0/0            0 2026-01-02 03:04 /data/etc/sub",
            "-rwsr-xr-x 0/0            2 2026-01-02 03:04 /data/etc/sub/a",
            "-rwsr-xr-x 0/0            2 2026-01-02 03:04 /data/etc/sub/hl",
        ]
        everything = ls_lines(listing)
        assert everything[0] == "drwxr-xr-x 0/0            0 2026-01-02 03:04 /data"
        assert "lrwxrwxrwx 0/0            0 2026-01-02 03:04 /data/etc/link" in everything
        assert "-rw-r--r-- 1000/100            1 2026-01-02 03:04 /data/we ird/new\\nline" in everything
        assert "drwxrwxrwt 0/0            0 2026-01-02 03:04 /data/tmp" in everything
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert absent_paths(listing, listing.entries, ["/data/etc", "/data/nothere", "/etc"]) == [
        "/data/nothere",
        "/etc",
    ]


def test_an_image_snapshot_is_one_member() -> None:
    node = '{"name":"sda1.vfat.img","type":"file","path":"/sda1.vfat.img","uid":0,"gid":0,"size":4096,"mode":420,"mtime":"2026-01-02T03:04:05Z","struct_type":"node"}'  # noqa: E501
    (entry,) = as_image(parse_ls(node, "sda1.vfat.img", "fixture"))
    assert (entry.path, entry.type, entry.size) == (".", "image", 4096)


@pytest.mark.parametrize(
    ("wanted", "mountpoint", "pattern"),
    [
        ("/etc/hosts", "/", "/etc/hosts"),
        ("/data/a b/", "/data", "/data/a b".removeprefix("/data")),
        ("/data", "/data", None),
        ("/", "/data", None),
        ("/srv", "/srv/www", None),  # above the mount point: all of it
        ("/data/x*y?[z]\\", "/data", "/x\\*y\\?\\[z]\\\\"),  # restic's patterns: a name as it is
    ],
)
def test_include_patterns(wanted: str, mountpoint: str, pattern: str | None) -> None:
    assert include_pattern(wanted, mountpoint) == pattern


def test_a_symlink_without_target_compares_by_its_mtime(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to("somewhere")
    st = link.lstat()
    entry = CatalogEntry(
        "s", "link", "symlink", 0, stat.S_IFLNK | 0o777, st.st_uid, st.st_gid, st.st_mtime, "", 0, 0
    )
    assert not differs(entry, link, st)
    os.utime(link, (1, 1), follow_symlinks=False)
    assert differs(entry, link, link.lstat())
