"""A set on any machine with an OpenSSH server (ssh://[user@]host[:port]/path): nothing is
installed there and no SFTP subsystem is needed. One master connection is opened first (a key from
--ssh-identity, or the password typed at ssh's own prompt: it never passes through mkrec); every
read then runs `dd` over it with byte offsets, and `stat` gives sizes.

Why not sshfs: it needs FUSE and a mount in the rescue system, and its error is a dead mount point;
ssh alone is in every rescue system and each failure is ssh's own one-line message."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import SplitResult, unquote

from mkrec.errors import CommandError
from mkrec.remote.place import SourceError
from mkrec.runner import popen, run, wait_checked

SSH_FAILED = 255  # ssh's own exit code: the connection or the login failed
DD_BLOCK = 64 * 1024


class SshFetcher:
    def __init__(self, url: SplitResult, identity: Path | None, config: Path | None) -> None:
        self.url = url._replace(path=url.path.rstrip("/") + "/").geturl()
        self.base = unquote(url.path).rstrip("/") + "/"
        self.target = f"{url.username}@{url.hostname}" if url.username else str(url.hostname)
        self._dir = tempfile.TemporaryDirectory(prefix="mkrec-ssh-")
        self.options = [
            *(["-F", str(config)] if config else []),
            *(["-p", str(url.port)] if url.port else []),
            *(["-i", str(identity), "-o", "IdentitiesOnly=yes"] if identity else []),
            "-o", "StrictHostKeyChecking=accept-new",  # a rescue system has no known_hosts yet
            "-o", f"BatchMode={'no' if sys.stdin.isatty() else 'yes'}",  # no terminal: nobody to type
            "-o", "ServerAliveInterval=15",
            "-S", str(Path(self._dir.name) / "master"),
        ]  # fmt: skip
        self._master = self._open_master()

    def _open_master(self) -> subprocess.Popen[bytes]:
        """The connection every read goes over; returns once it is up (after a typed password)."""
        master = popen(
            ["ssh", *self.options, "-M", "-N", "-o", "ControlPersist=no", self.target],
            stdout=subprocess.DEVNULL,
        )
        while master.poll() is None:
            check = run(["ssh", *self.options, "-O", "check", self.target], check=False)
            if check.returncode == 0:
                return master
            time.sleep(0.2)
        try:
            wait_checked(master)
        except CommandError as exc:
            self._dir.cleanup()
            raise self._failed(exc) from None
        raise SourceError(f"{self.url}: the ssh connection ended at once")

    def size(self, path: str) -> int | None:
        proc = run(self._remote("stat", "-L", "-c", "%s", self.base + path), check=False)
        if proc.returncode == SSH_FAILED:
            raise self._failed(CommandError(["ssh"], proc.returncode, proc.stderr))
        if proc.returncode != 0 or not proc.stdout.strip().isdigit():
            return None
        return int(proc.stdout)

    def read(self, path: str, offset: int, length: int) -> bytes:
        argv = self._remote(
            "dd", f"if={self.base + path}", f"bs={DD_BLOCK}", f"skip={offset}", f"count={length}",
            "iflag=skip_bytes,count_bytes,fullblock", "status=none",
        )  # fmt: skip
        proc = popen(argv)
        assert proc.stdout is not None
        data = proc.stdout.read()
        try:
            wait_checked(proc)
        except CommandError as exc:
            if exc.returncode == SSH_FAILED:
                raise self._failed(exc) from None
            raise OSError(f"{self.url}{path}: {exc.message}") from None
        return data

    def close(self) -> None:
        if self._master.poll() is None:
            run(["ssh", *self.options, "-O", "exit", self.target], check=False)
            try:
                self._master.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._master.kill()
                self._master.wait()
        self._dir.cleanup()

    def _remote(self, *command: str) -> list[str]:
        """ssh over the master connection; the remote shell gets one quoted command line."""
        return ["ssh", *self.options, "-o", "ControlMaster=no", self.target, "--", shlex.join(command)]

    def _failed(self, exc: CommandError) -> SourceError:
        why = exc.message.split(": ", 1)[-1] if ": " in exc.message else exc.message
        return SourceError(
            f"{self.url}: ssh to {self.target} failed ({why})",
            hint="check the host, the port, the user and the key (--ssh-identity) or password",
        )
