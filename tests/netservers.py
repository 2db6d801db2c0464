"""Real servers the network-source tests start on loopback, each with its own config, port and
logs under the test's tmp dir: nginx (http://), OpenSSH's sshd (ssh://), nfs-ganesha (nfs://)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support import sh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} is not listening on port {port}")


@contextlib.contextmanager
def running(argv: list[str], port: int, what: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc, what)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Nginx:
    url: str  # http://127.0.0.1:PORT/ ; the same files behind a login under private/
    access_log: Path
    login: tuple[str, str] = ("backup", "s3cret")  # what private/ asks for

    def requests(self) -> list[tuple[str, str, str, int]]:
        """(method, path, Range header, status) of every request so far."""
        out = []
        for line in self.access_log.read_text().splitlines():
            method, path, rng, status = line.split("\t")
            out.append((method, path, rng, int(status)))
        return out


@contextlib.contextmanager
def nginx(root: Path, work: Path, port: int = 0) -> Iterator[Nginx]:
    """nginx on 127.0.0.1 serving root (read as root: sets are private files), logging each request."""
    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = work / "access.log"
    hashed = sh("openssl", "passwd", "-5", Nginx.login[1]).strip()
    (work / "htpasswd").write_text(f"{Nginx.login[0]}:{hashed}\n")
    temp = "".join(
        f"{kind}_temp_path {work}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (work / "nginx.conf").write_text(
        f"""user root root;
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{}}
http {{
  {temp}
  log_format ranges "$request_method\\t$uri\\t$http_range\\t$status";
  access_log {log} ranges;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location /private/ {{
      alias {root}/;
      auth_basic "mkrec sets";
      auth_basic_user_file {work}/htpasswd;
    }}
  }}
}}
"""
    )
    with running(["nginx", "-c", str(work / "nginx.conf"), "-e", str(work / "error.log")], port, "nginx"):
        yield Nginx(f"http://127.0.0.1:{port}/", log)


@dataclass
class Sshd:
    port: int
    key: Path  # the client key sshd accepts
    config: Path  # an ssh_config for the client: known hosts under the test's dir


@contextlib.contextmanager
def sshd(work: Path) -> Iterator[Sshd]:
    """OpenSSH's sshd on 127.0.0.1 with its own host key, accepting one client key for root."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    for name in ("host_key", "client_key"):
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", work / name)
    (work / "authorized_keys").write_text((work / "client_key.pub").read_text())
    (work / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {work}/host_key
PidFile {work}/sshd.pid
AuthorizedKeysFile {work}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
"""
    )
    (work / "ssh_config").write_text(
        f"UserKnownHostsFile {work}/known_hosts\nGlobalKnownHostsFile /dev/null\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    with running(["/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")], port, "sshd"):
        yield Sshd(port, work / "client_key", work / "ssh_config")


@contextlib.contextmanager
def ganesha(export: Path, work: Path, pseudo: str = "/sets") -> Iterator[int]:
    """nfs-ganesha (userspace NFSv4: the host kernel has no nfsd) exporting a directory read-only
    on 127.0.0.1 as `pseudo`, root not squashed (sets are private files); yields its port."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (work / "recovery").mkdir(exist_ok=True)
    (work / "ganesha.conf").write_text(
        f"""NFS_CORE_PARAM {{ NFS_Port = {port}; Bind_addr = 127.0.0.1; Protocols = 4;
  Enable_NLM = false; Enable_RQUOTA = false; }}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = {work}/recovery; }}
EXPORT {{ Export_Id = 1; Path = {export}; Pseudo = {pseudo}; Access_Type = RO; Squash = No_Root_Squash;
  Protocols = 4; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}
"""
    )
    argv = ["ganesha.nfsd", "-F", "-f", str(work / "ganesha.conf"), "-L", str(work / "ganesha.log")]
    with running([*argv, "-p", str(work / "ganesha.pid")], port, "ganesha.nfsd"):
        yield port
