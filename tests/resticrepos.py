"""Real restic repositories for the tests: a local path, an SFTP repository behind an OpenSSH sshd
the test starts on 127.0.0.1 (its own config, host key, port and client key), and a REST repository
served by `rclone serve restic` on 127.0.0.1. Nothing listens on any other address."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from support import sh

PASSWORD = "correct horse battery staple\n"


@dataclass
class ServedRepo:
    kind: str  # local | sftp | rest
    location: str  # the restic repository string
    store: Path  # where its files are on this machine (to measure its size)
    password_file: Path
    options: list[str] = field(default_factory=list)  # restic -o: how sftp reaches the test's sshd

    def restic(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, RESTIC_PASSWORD_FILE=str(self.password_file))
        opts = [a for o in self.options for a in ("-o", o)]
        return subprocess.run(
            ["restic", "-r", self.location, *opts, *args],
            capture_output=True,
            text=True,
            env=env,
            check=check,
        )

    def size(self) -> int:
        """Bytes the repository's files take."""
        return sum(p.stat().st_size for p in self.store.rglob("*") if p.is_file())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.args} ({proc.stderr.read() if proc.stderr else ''!r})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def password_file(work: Path) -> Path:
    path = work / "restic-password"
    path.write_text(PASSWORD)
    path.chmod(0o600)
    return path


@contextmanager
def local_repo(work: Path) -> Iterator[ServedRepo]:
    store = work / "restic-local"
    yield ServedRepo("local", str(store), store, password_file(work))


@contextmanager
def sftp_repo(work: Path) -> Iterator[ServedRepo]:
    """sshd on 127.0.0.1:<free port>, key auth only; the client's own ssh config file names the host
    "mkrec-sftp" with that port, the client key and a known_hosts file; restic runs ssh with it
    (-o sftp.command, as [restic] options gives it)."""
    d = work / "sshd"
    home = work / "sshhome"
    (home / ".ssh").mkdir(parents=True)
    d.mkdir()
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "host_key")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", home / ".ssh" / "id_ed25519")
    (d / "authorized_keys").write_text((home / ".ssh" / "id_ed25519.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\n"
    )
    host_pub = (d / "host_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (home / ".ssh" / "config").write_text(
        f"Host mkrec-sftp\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {home / '.ssh' / 'id_ed25519'}\n"
        f"  UserKnownHostsFile {home / '.ssh' / 'known_hosts'}\n"
        "  HostKeyAlias [127.0.0.1]:" + str(port) + "\n  BatchMode yes\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    store = work / "restic-sftp"
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        command = f"sftp.command=ssh -F {home / '.ssh' / 'config'} mkrec-sftp -s sftp"
        yield ServedRepo("sftp", f"sftp:mkrec-sftp:{store}", store, password_file(work), [command])
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def rest_repo(work: Path) -> Iterator[ServedRepo]:
    """rclone serve restic on 127.0.0.1:<free port>, serving one directory as the repository root."""
    store = work / "restic-rest"
    store.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        ["rclone", "serve", "restic", "--config", "/dev/null", "--addr", f"127.0.0.1:{port}", str(store)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield ServedRepo("rest", f"rest:http://127.0.0.1:{port}/", store, password_file(work))
    finally:
        proc.terminate()
        proc.wait()


REPOS = {"local": local_repo, "sftp": sftp_repo, "rest": rest_repo}
