"""Backup sets read over the network, from real servers on loopback: nginx (http://) and OpenSSH's
sshd (ssh://) serving a cd set (two ISO volumes) and a path set made by the real backup. verify, ls,
extract and `restore fs` read them by URL; extract of one file fetches fewer than three frames
(counted in nginx's access log); a bad URL, a server that is not there, a missing set, a refused
login each end in one line."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from netservers import Nginx, Sshd, free_port, ganesha, nginx, running, sshd
from support import LoopDisks, run_in_guest, sh
from test_backup_root import fake_rescue
from test_imaging_root import partition_disk, tree

from mkrec.backup.frames import FRAME_SIZE
from mkrec.backup.run import backup
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.layout.capture import capture

pytestmark = pytest.mark.root
MiB = 1024 * 1024
STARTED = datetime(2026, 12, 1, 9, 30)
REPO = Path(__file__).resolve().parent.parent
HELLO = "etc/hello.txt"  # where extract puts it under -C; the set names it /etc/hello.txt


@dataclass(frozen=True)
class Sets:
    out: Path  # served as the web root: <out>/cd/<host>/<date>/*.iso, <out>/path/<host>/<date>/...
    cd: Path
    path: Path
    recovery: Path
    part: str  # the saved partition (its name is what --map names)
    tree: dict[str, tuple[object, ...]]


def make_files(root: Path) -> None:
    rng = random.Random(5)
    (root / "data").mkdir()
    (root / "data" / "random.bin").write_bytes(rng.randbytes(60 * MiB))  # 15 frames; two 64M volumes
    (root / "etc").mkdir()
    (root / HELLO).write_text("hello over the network\n")
    for i in range(100):
        (root / "etc" / f"f{i:03d}").write_bytes(rng.randbytes(rng.randrange(0, 5000)))


def build_set(root: Path, work: Path, mode: str) -> Path:
    data = {
        "build": {"mode": mode, "output": str(work / "out" / mode)},
        "media": {"size": "64M"},
        "source": {"root": str(root)},
        "path": {"dir": str(work / "out" / mode)},
    }
    ctx = Context(config_from_dict(data), hostname="nethost", started=STARTED, staging=work / "isofs")
    (work / mode).mkdir()
    return backup(ctx, fake_rescue(work / mode) if mode == "cd" else None)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sets]:
    work = tmp_path_factory.mktemp("netsets")
    disks = LoopDisks(work)
    try:
        disk, part = partition_disk(disks, "200M", 160)
        sh("mkfs.ext4", "-q", "-L", "netdata", part)
        mnt = disks.mount(part, work / "root")
        make_files(mnt)
        capture([disk], work / "recovery", mnt, "nethost", STARTED)
        cd, path = build_set(mnt, work, "cd"), build_set(mnt, work, "path")
        assert len(list(cd.glob("*.iso"))) == 2
        yield Sets(work / "out", cd, path, work / "recovery", part, tree(mnt))
    finally:
        disks.cleanup()


@pytest.fixture(scope="module")
def web(sets: Sets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with nginx(sets.out, tmp_path_factory.mktemp("nginx")) as server:
        yield server


def mkrec(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home)} if home else None
    return subprocess.run(
        [sys.executable, "-m", "mkrec", "--log", "/dev/null", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def url_of(web: Nginx, sets: Sets, set_dir: Path) -> str:
    return web.url + str(set_dir.relative_to(sets.out)) + "/"


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """A failure is one error line (and maybe a hint), never a traceback."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("mkrec: error: "), proc.stderr
    return lines[0]


# ---- http:// ----


@pytest.mark.parametrize("kind", ["cd", "path"])
def test_verify_ls_extract_over_http(web: Nginx, sets: Sets, tmp_path: Path, kind: str) -> None:
    url = url_of(web, sets, sets.cd if kind == "cd" else sets.path)
    proc = mkrec("verify", url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    volumes = 2 if kind == "cd" else 1
    assert f"OK: CDrec-20261201-0930: {volumes} of {volumes} volumes" in proc.stdout
    listing = mkrec("ls", url, "/etc")
    assert listing.returncode == 0 and "/etc/hello.txt" in listing.stdout, listing.stderr
    proc = mkrec("extract", url, "/" + HELLO, "-C", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "x" / HELLO).read_text() == "hello over the network\n"


def test_extract_of_one_file_reads_fewer_than_three_frames(web: Nginx, sets: Sets, tmp_path: Path) -> None:
    """The path set's pieces are files of their own: every ranged GET of a piece is mapped onto the
    frames of the manifest's index."""
    url = url_of(web, sets, sets.path)
    before = len(web.requests())
    proc = mkrec("extract", url, "/" + HELLO, "-C", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((sets.path / "backup" / "manifest.json").read_text())
    frames = {  # piece name -> [(start, end)] of its frames
        p["name"]: spans(p["frames"]) for s in manifest["streams"] for p in s["pieces"]
    }
    assert sum(len(f) for f in frames.values()) >= 15
    touched = set()
    for method, path, rng, status in web.requests()[before:]:
        name = path.rsplit("/", 1)[-1]
        if method == "GET" and name in frames:
            assert status == 206 and rng.startswith("bytes="), (path, rng, status)
            first, last = (int(x) for x in rng.removeprefix("bytes=").split("-"))
            touched |= {(name, a) for a, b in frames[name] if a <= last and first < b}
    print(
        f"extract of one file over http: {len(touched)} frame(s) fetched of {sum(map(len, frames.values()))}"
    )
    assert 1 <= len(touched) < 3


def spans(index: list[list[int]]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for csize, _usize in index:
        out.append((pos, pos + csize))
        pos += csize
    return out


def test_extract_from_the_cd_set_reads_a_few_frames_of_its_isos(
    web: Nginx, sets: Sets, tmp_path: Path
) -> None:
    before = len(web.requests())
    proc = mkrec("extract", url_of(web, sets, sets.cd), "/" + HELLO, "-C", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr
    fetched = 0
    for method, _path, rng, _status in web.requests()[before:]:
        if method == "GET":
            first, last = (int(x) for x in rng.removeprefix("bytes=").split("-"))
            fetched += last - first + 1
    total = sum(p.stat().st_size for p in sets.cd.glob("*.iso"))
    print(
        f"extract of one file from a {total / MiB:.0f} MiB cd set over http: {fetched / MiB:.2f} MiB fetched"
    )
    assert fetched < 3 * FRAME_SIZE


def test_the_url_of_one_iso_finds_the_other_volumes(web: Nginx, sets: Sets) -> None:
    first = sorted(sets.cd.glob("*.iso"))[0]
    proc = mkrec("verify", url_of(web, sets, sets.cd) + first.name)
    assert proc.returncode == 0 and "2 of 2 volumes" in proc.stdout, proc.stdout + proc.stderr


def test_restore_fs_over_http(web: Nginx, sets: Sets, loop_disks: LoopDisks, tmp_path: Path) -> None:
    _disk, target = partition_disk(loop_disks, "200M", 160)
    mapping = f"{Path(sets.part).name}={target}"
    proc = mkrec("restore", "fs", "--source", url_of(web, sets, sets.cd), "--layout", str(sets.recovery),
                 "--map", mapping, "--target", str(tmp_path / "none"), "--yes")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mnt = loop_disks.mount(target, tmp_path / "check", "-o", "ro")
    assert tree(mnt) == sets.tree


def test_http_failures_are_one_line(web: Nginx, sets: Sets) -> None:
    missing = mkrec("verify", web.url + "nothing/here/")
    assert "no backup set here" in error_line(missing)
    closed = mkrec("ls", f"http://127.0.0.1:{free_port()}/sets/")
    assert "cannot reach 127.0.0.1" in error_line(closed) and "Connection refused" in closed.stderr
    secret = mkrec("ls", "http://me:secret@127.0.0.1/sets/")
    line = error_line(secret)
    assert "password in a URL is refused" in line and "secret" not in secret.stderr
    odd = mkrec("ls", "ftp://127.0.0.1/sets/")
    assert "unknown kind of source 'ftp:'" in error_line(odd)
    gone_iso = mkrec("verify", url_of(web, sets, sets.cd) + "CDrec-19990101-0000-vol1.iso")
    assert "no readable volume" in error_line(gone_iso)


def test_a_server_without_range_requests_is_named(sets: Sets) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
        str(sets.out),
        str(port),
    ]
    with running(argv, port, "python3 -m http.server"):
        proc = mkrec("verify", f"http://127.0.0.1:{port}/" + str(sets.path.relative_to(sets.out)) + "/")
    assert "the web server ignores Range requests" in error_line(proc)


def test_a_login_comes_from_netrc(web: Nginx, sets: Sets, tmp_path: Path) -> None:
    url = web.url + "private/" + str(sets.path.relative_to(sets.out)) + "/"
    refused = mkrec("verify", url, home=tmp_path)
    assert "access denied (HTTP 401 Unauthorized)" in error_line(refused)
    assert "~/.netrc" in refused.stderr  # the hint says where a login goes
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login backup password wrong\n")
    netrc.chmod(0o600)
    assert "access denied" in error_line(mkrec("verify", url, home=tmp_path))
    netrc.write_text("machine 127.0.0.1 login {} password {}\n".format(*web.login))
    proc = mkrec("verify", url, home=tmp_path)
    assert proc.returncode == 0 and "OK: CDrec-20261201-0930" in proc.stdout, proc.stdout + proc.stderr
    assert web.login[1] not in proc.stdout + proc.stderr


# ---- ssh:// ----


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        pytest.skip("needs sshd (apt-get install openssh-server)")
    with sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def ssh_args(server: Sshd, key: Path | None = None) -> list[str]:
    return ["--ssh-identity", str(key or server.key), "--ssh-config", str(server.config)]


@pytest.mark.parametrize("kind", ["cd", "path"])
def test_verify_and_extract_over_ssh(ssh_server: Sshd, sets: Sets, tmp_path: Path, kind: str) -> None:
    url = f"ssh://root@127.0.0.1:{ssh_server.port}{sets.cd if kind == 'cd' else sets.path}/"
    proc = mkrec("verify", url, *ssh_args(ssh_server))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: CDrec-20261201-0930" in proc.stdout
    proc = mkrec("extract", url, "/" + HELLO, "-C", str(tmp_path / "x"), *ssh_args(ssh_server))
    assert proc.returncode == 0, proc.stderr
    assert (
        hashlib.sha256((tmp_path / "x" / HELLO).read_bytes()).hexdigest()
        == hashlib.sha256(b"hello over the network\n").hexdigest()
    )


def test_ssh_failures_are_one_line(ssh_server: Sshd, sets: Sets, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger)
    url = f"ssh://root@127.0.0.1:{ssh_server.port}{sets.path}/"
    refused = mkrec("verify", url, *ssh_args(ssh_server, stranger))
    assert "Permission denied" in error_line(refused)
    closed = mkrec("verify", f"ssh://root@127.0.0.1:{free_port()}/x/", *ssh_args(ssh_server))
    assert "Connection refused" in error_line(closed)
    nothing = mkrec("verify", f"ssh://root@127.0.0.1:{ssh_server.port}/nonexistent/", *ssh_args(ssh_server))
    assert "no backup set here" in error_line(nothing)


# ---- nfs:// (the kernel's NFS client in a guest: the host kernel has none) ----

NET_UP = """dev=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
ip link set "$dev" up && ip addr replace 10.0.2.15/24 dev "$dev" && ip route replace default via 10.0.2.2"""


@pytest.mark.vm
def test_extract_and_ls_over_nfs_in_a_guest(sets: Sets, tmp_path: Path) -> None:
    if shutil.which("ganesha.nfsd") is None:
        pytest.skip("needs nfs-ganesha (apt-get install nfs-ganesha nfs-ganesha-vfs)")
    with ganesha(sets.out, tmp_path / "ganesha") as port:
        base = f"nfs://10.0.2.2:{port}/sets"
        script = f"""set -e
{NET_UP}
cd {REPO}
date +%s.%N
{sys.executable} -m mkrec --log /dev/null extract {base}/cd/nethost/20261201/ /{HELLO} -C {tmp_path}/x
date +%s.%N
{sys.executable} -m mkrec --log /dev/null ls {base}/path/nethost/20261201 /etc | grep -c /etc/
date +%s.%N
echo "nfs mounts left: $(grep -c ' nfs4\\? ' /proc/mounts || true)"
{sys.executable} -m mkrec --log /dev/null ls nfs://10.0.2.2:{port}/nothing/ || echo "exit $?"
date +%s.%N
"""
        proc = run_in_guest(script, tmp_path, memory="1G", timeout=600, network=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    print(out[-1500:])
    assert "\n101\n" in out  # the 101 files under /etc, listed from the path set's catalog
    assert (tmp_path / "x" / HELLO).read_text() == "hello over the network\n"
    assert "nfs mounts left: 0" in out  # unmounted after each command
    assert "mkrec: error: nfs://10.0.2.2" in out and "cannot mount" in out and "exit 1" in out
