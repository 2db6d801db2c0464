"""Helpers for tests that use real things: loop disks, mounts, and guests under virtme-ng / QEMU."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
MKREC = [sys.executable, "-m", "mkrec"]
Tree = dict[str, tuple[object, ...]]


def mkrec(*args: str, check: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """mkrec as a user runs it, in a process of its own, with no terminal to ask on; check: a failure
    is an AssertionError with what mkrec printed."""
    proc = subprocess.run([*MKREC, *args], capture_output=True, text=True, cwd=cwd, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"mkrec {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def file_tree(root: Path, skip: tuple[str, ...] = ("lost+found",)) -> Tree:
    """Everything a backup and a restore must keep, per path below root: type, permissions, owner,
    mtime (directories to the second), content hash, link target, hard-link group (the group's first
    path: inode numbers differ on another filesystem), xattrs. Paths starting with skip are left out."""
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel.startswith(skip):
                continue
            st = path.lstat()
            content: object = None
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            link: object = st.st_ino if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) else ""
            mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else st.st_mtime_ns // 10**9
            # xfs also shows an ACL as trusted.SGI_ACL_*: the same ACL, not another attribute
            names = [
                a for a in os.listxattr(path, follow_symlinks=False) if not a.startswith("trusted.SGI_ACL")
            ]
            xattrs = tuple(sorted((a, os.getxattr(path, a, follow_symlinks=False)) for a in names))
            kind = stat.S_IFMT(st.st_mode)
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, content, link, xattrs)
    groups: dict[object, list[str]] = {}
    for rel, entry in out.items():
        if entry[6] != "":
            groups.setdefault(entry[6], []).append(rel)
    for members in groups.values():
        for rel in members:
            out[rel] = (*out[rel][:6], min(members), out[rel][7])
    return out


def sh(*argv: str | os.PathLike[str], input: str | None = None) -> str:
    """Run a command for test set-up; fail the test with its stderr if it fails."""
    args = [os.fspath(a) for a in argv]
    proc = subprocess.run(args, input=input, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{shlex.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def fs_ids(node: str) -> tuple[str, str, str]:
    """(TYPE, UUID, LABEL) of the file system on node, from its signature (no cache)."""
    out = sh("blkid", "-c", "/dev/null", "-o", "export", node)
    v = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return v.get("TYPE", ""), v.get("UUID", ""), v.get("LABEL", "")


def kernel_for_guests() -> tuple[Path, str] | None:
    """The kernel guests boot: the one the rescue system would take (newest with its modules)."""
    from mkrec.errors import MkrecError
    from mkrec.kernel import find_kernel

    try:
        kernel = find_kernel()
    except MkrecError:
        return None
    return kernel.image, kernel.version


class LoopDisks:
    """Creates sparse image files attached as loop devices (with partition scanning) and cleans up:
    unmounts what was mounted below the test's tmp dir, then detaches."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.devices: list[str] = []
        self.mounts: list[Path] = []

    def create(self, size: str, name: str | None = None) -> str:
        image = self.workdir / (name or f"disk{len(self.devices)}.img")
        sh("truncate", "-s", size, image)
        return self.attach(image)

    def ext4(self, size: str, mountpoint: Path) -> Path:
        """A new loop disk holding one empty ext4, mounted: what a backup saves is a mounted file system."""
        dev = self.create(size)
        sh("mkfs.ext4", "-q", "-F", dev)
        return self.mount(dev, mountpoint)

    def attach(self, image: Path) -> str:
        dev = sh("losetup", "-f", "-P", "--show", image).strip()
        self.devices.append(dev)
        return dev

    def detach(self, dev: str) -> None:
        """Let go of a disk before a guest uses its image (the cleanup no longer owns it)."""
        sh("losetup", "-d", dev)
        self.devices.remove(dev)

    @staticmethod
    def rescan(dev: str) -> None:
        """udev does not run here: make the kernel's partition nodes (DEVp1...) appear."""
        subprocess.run(["partx", "-u", dev], capture_output=True)
        subprocess.run(["partx", "-a", dev], capture_output=True)

    def mount(self, dev: str, target: Path, *options: str) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        sh("mount", *options, dev, target)
        self.mounts.append(target)
        return target

    def cleanup(self) -> None:
        for target in reversed(self.mounts):
            subprocess.run(["umount", "-l", target], capture_output=True)
        # Also what the code under test mounted from these disks (a restore leaves its target mounted).
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            source, target = line.split()[:2]
            if any(source == dev or source.startswith(dev + "p") for dev in self.devices):
                subprocess.run(["umount", "-l", target.replace("\\040", " ")], capture_output=True)
        for dev in reversed(self.devices):
            subprocess.run(["losetup", "-d", dev], capture_output=True)


def run_in_guest(
    script: str, rwdir: Path, memory: str = "2G", timeout: int = 600, network: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a shell script inside a virtme-ng guest booting Debian's kernel with the host's userland
    (for device-mapper, MD RAID, vfat: what the host kernel lacks). rwdir is shared read-write.
    network: a NIC on QEMU's user network (the script brings it up; the host is 10.0.2.2)."""
    found = kernel_for_guests()
    assert found is not None, "no guest kernel"
    image, _version = found
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    argv = [
        "vng",
        "--run",
        str(image),
        "--disable-kvm",
        "--memory",
        memory,
        "--rwdir",
        str(rwdir),
        *(["--network", "user"] if network else []),
        *(f"--rodir={d}" for d in code_dirs()),
        "--",
        script,
    ]
    return run_killing_group(argv, env, timeout)


def code_dirs() -> list[Path]:
    """The checkout and the virtualenv, shared with the guest explicitly: virtme-ng puts tmpfs over
    /var/tmp, /var/cache, /var/lib/... in the guest, so a checkout there would vanish (a clean clone in
    /var/tmp made every guest test fail on 'No such file or directory' for .venv/bin/python)."""
    repo = Path(__file__).resolve().parent.parent
    venv = Path(sys.prefix).resolve()
    return [repo] if venv.is_relative_to(repo) else [repo, venv]


def run_killing_group(argv: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess[str]:
    """subprocess.run with output captured, but a timeout kills the whole process group: vng starts
    QEMU as a child, and subprocess.run would kill only vng and leave the guest running."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"{argv[0]} timed out after {timeout} s; last output:\n{out[-3000:]}\n{err[-3000:]}"
        ) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


class Terminal:
    """A command on a real pseudo-terminal, driven like a person at the console: wait for a prompt
    (a regex over everything printed so far), type an answer."""

    def __init__(self, argv: list[str]) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.output = ""
        self.seen = 0  # expect() searches only what came after the previous match

    def _read(self, timeout: float) -> bool:
        import select

        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the command closed the terminal
            return False
        self.output += chunk.decode(errors="replace").replace("\r", "")
        return bool(chunk)

    def expect(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        import time

        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.output, self.seen)
            if found:
                self.seen = found.end()
                return found
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"no {pattern!r} within {timeout:.0f} s; output:\n{self.output[-3000:]}")

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def wait(self, timeout: float = 120) -> int:
        while self._read(0.2):  # drain until the command closes the terminal
            pass
        code = self.proc.wait(timeout=timeout)
        os.close(self.master)
        return code


def stream_bytes(set_dir: Path, stream: str) -> Iterator[bytes]:
    """A stream of a set as its frames hold it, frame by frame (each checked by zstd on the way)."""
    from mkrec.backup.frames import decompress_frame
    from mkrec.backup.setreader import open_set

    bset = open_set(set_dir)
    try:
        for f in bset.frames(stream):
            yield decompress_frame(bset.read_piece(f.volume, f.piece, f.poffset, f.csize), f.usize)
    finally:
        bset.close()


def stream_sha256(set_dir: Path, stream: str) -> str:
    """SHA-256 of a stream of a set as its frames hold it."""
    digest = hashlib.sha256()
    for data in stream_bytes(set_dir, stream):
        digest.update(data)
    return digest.hexdigest()
