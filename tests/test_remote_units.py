"""The decisions of network sources, without servers: which URL goes where, what is refused, the
mount command, the baked default source in the rescue wrappers, and the ranged file object (with a
fetch function over bytes in memory that counts its calls)."""

from __future__ import annotations

import io
import random
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pycdlib
import pytest

from mkrec.config import config_from_dict
from mkrec.errors import MkrecError
from mkrec.remote import Source, open_source, split_iso
from mkrec.remote.nfs import nfs_mount_argv
from mkrec.remote.rangefile import FIRST_SPAN, RangeFile
from mkrec.rescue.rdbase import wrapper_defaults
from mkrec.rescue.render import render

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def test_a_local_path_is_used_as_it_is(tmp_path: Path) -> None:
    with open_source(str(tmp_path)) as place:
        assert place == tmp_path
    with pytest.raises(MkrecError, match="no such backup set"), open_source(str(tmp_path / "gone")):
        pass


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ftp://server/sets/", "unknown kind of source 'ftp:'"),
        ("http://me:secret@server/sets/", "a password in a URL is refused"),
        ("ssh://root:pw@server/sets/", "a password in a URL is refused"),
        ("http:///sets/", "no server in the URL"),
    ],
)
def test_bad_urls_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(MkrecError, match=message) as caught, open_source(Source(text)):
        pass
    assert "secret" not in str(caught.value) and "pw@" not in str(caught.value)


def test_a_url_naming_an_iso_reads_its_directory() -> None:
    directory, iso = split_iso(urlsplit("http://h:8080/sets/host/20261201/CDrec-20261201-0930-vol2.iso"))
    assert (directory.geturl(), iso) == ("http://h:8080/sets/host/20261201/", "CDrec-20261201-0930-vol2.iso")
    directory, iso = split_iso(urlsplit("http://h/sets/host/20261201/"))
    assert (directory.path, iso) == ("/sets/host/20261201/", "")


def test_the_nfs_mount_command() -> None:
    url = urlsplit("nfs://filer:2049/export/sets/host/20261201?vers=3")
    assert nfs_mount_argv(url, Path("/run/mkrec/nfs-1")) == [
        "mount", "-t", "nfs", "-o", "ro,nolock,port=2049,vers=3",
        "filer:/export/sets/host/20261201", "/run/mkrec/nfs-1",
    ]  # fmt: skip
    plain = nfs_mount_argv(urlsplit("nfs://10.0.2.2/sets"), Path("/m"))
    assert plain == ["mount", "-t", "nfs", "-o", "ro,nolock,vers=4", "10.0.2.2:/sets", "/m"]


def test_a_password_in_the_baked_source_is_a_config_error() -> None:
    ok = config_from_dict({"rescue": {"source": "ssh://backup@filer/sets/host/"}})
    assert ok.rescue.source == "ssh://backup@filer/sets/host/"
    with pytest.raises(MkrecError, match=r"\[rescue\] source.*carries a password"):
        config_from_dict({"rescue": {"source": "http://u:p@filer/sets/"}})


def run_wrapper(tmp_path: Path, source: str, *args: str) -> list[str]:
    """The rendered start-restore wrapper, run with a python3 that prints its arguments."""
    script = tmp_path / "start-restore"
    script.write_text(
        render(
            TEMPLATES,
            "wrapper.sh.j2",
            name="start-restore",
            sub="start",
            help="h",
            defaults=wrapper_defaults(config_from_dict({"rescue": {"source": source}}), "start"),
        )
    )
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin"}
    out = subprocess.run(["sh", str(script), *args], capture_output=True, text=True, env=env, check=True)
    return out.stdout.splitlines()


def test_the_baked_source_is_the_default_of_the_rescue_wrappers(tmp_path: Path) -> None:
    url = "http://10.0.2.2:8080/sets/host/20261201/"
    assert run_wrapper(tmp_path, url, "--yes") == [
        "-m",
        "mkrec",
        "restore",
        "start",
        "--source",
        url,
        "--yes",
    ]
    other = ["-m", "mkrec", "restore", "start", "--source", "/mnt/set", "--yes"]
    assert run_wrapper(tmp_path, url, "--source", "/mnt/set", "--yes") == other
    assert run_wrapper(tmp_path, url, "--source=/mnt/set") == [*other[:4], "--source=/mnt/set"]
    assert run_wrapper(tmp_path, "", "--yes") == ["-m", "mkrec", "restore", "start", "--yes"]


class Counting:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def __call__(self, offset: int, length: int) -> bytes:
        self.calls.append((offset, length))
        return self.data[offset : offset + length]


def test_range_file_reads_what_is_asked_and_reads_ahead_when_sequential() -> None:
    data = random.Random(3).randbytes(5 << 20)
    fetch = Counting(data)
    fh = io.BufferedReader(RangeFile("mem", len(data), fetch))  # type: ignore[arg-type]
    for offset, size in ((4_000_000, 100), (12, 7), (1 << 20, 300_000), (len(data) - 5, 100)):
        fh.seek(offset)
        assert fh.read(size) == data[offset : offset + size]
    assert fh.seek(0, io.SEEK_END) == len(data)
    fetch.calls.clear()
    raw = RangeFile("mem", len(data), fetch)
    assert raw.read(1 << 20) == data[: 1 << 20]  # one fetch of exactly what a frame read asks
    assert fetch.calls == [(0, 1 << 20)]
    while raw.read(FIRST_SPAN // 4):
        pass
    spans = [length for _offset, length in fetch.calls[1:]]
    assert spans[:3] == [2 * FIRST_SPAN, 4 * FIRST_SPAN, 8 * FIRST_SPAN], "sequential reads grow the span"
    assert len(fetch.calls) < 12


def test_pycdlib_opens_an_iso_through_a_range_file() -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09")
    iso.add_fp(io.BytesIO(b"x" * 5000), 5000, "/HELLO.;1", rr_name="hello.txt")
    out = io.BytesIO()
    iso.write_fp(out)
    fetch = Counting(out.getvalue())
    reader = pycdlib.PyCdlib()
    reader.open_fp(RangeFile("mem.iso", len(out.getvalue()), fetch))
    got = io.BytesIO()
    reader.get_file_from_iso_fp(got, rr_path="/hello.txt")
    assert got.getvalue() == b"x" * 5000
    assert len(fetch.calls) <= 4, fetch.calls
    reader.close()
