"""compare: a real directory tree against catalog entries as the backup writes them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mkrec.restore.compare import compare_tree, write_report


@dataclass(frozen=True)
class E:
    path: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float
    link: str = ""
    stream: str = "s"


def entries_of(top: Path) -> list[E]:
    out = [E(".", "dir", 0, 0o755, os.getuid(), os.getgid(), 0)]
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "symlink" if p.is_symlink() else "dir" if p.is_dir() else "file"
            size = st.st_size if kind == "file" else 0
            link = os.readlink(p) if kind == "symlink" else ""
            rel = str(p.relative_to(top))
            out.append(E(rel, kind, size, st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime, link))
    return out


def test_compare_finds_changed_added_missing(tmp_path: Path) -> None:
    top = tmp_path / "fs"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "a").write_text("a")
    (top / "etc" / "b").write_text("b")
    (top / "etc" / "mode").write_text("m")
    (top / "link").symlink_to("etc/a")
    catalog = entries_of(top)
    assert compare_tree(catalog, top, "/data") == []
    (top / "etc" / "a").write_text("changed content")
    (top / "etc" / "b").unlink()
    (top / "etc" / "mode").chmod(0o600)
    (top / "new").write_text("n")
    (top / "link").unlink()
    (top / "link").symlink_to("elsewhere")
    found = compare_tree(catalog, top, "/data")
    assert found == [
        ("changed", "/data/etc/a"),
        ("missing", "/data/etc/b"),
        ("changed", "/data/etc/mode"),
        ("changed", "/data/link"),
        ("added", "/data/new"),
    ]
    out = tmp_path / "changed.txt"
    assert write_report(found, out) == f"3 changed, 1 added, 1 missing (list in {out})"
    assert out.read_text().splitlines()[0] == "changed /data/etc/a"
