"""One restic repository as mkrec talks to it: the restic argv (the password and the backend's
credentials only ever in the child's environment, never in argv or the log) and restic's failures
turned into one line that says what is wrong and what to do."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkrec.config import Config, Mode
from mkrec.errors import CommandError, MkrecError
from mkrec.runner import popen, run

ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
TAG = "mkrec"  # every snapshot mkrec writes carries it


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (optionally quoted, `export` allowed, # comments): the backend's credentials."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise MkrecError(f"[restic] env_file {path}: cannot read it ({exc.strerror})") from None
    env = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = ENV_LINE.match(line)
        if m is None:
            raise MkrecError(f"{path}:{number}: not a KEY=VALUE line", hint="e.g. AWS_ACCESS_KEY_ID=...")
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[m.group(1)] = value
    return env


@dataclass(frozen=True)
class Repo:
    location: str  # what restic -r takes: a path, sftp:…, rest:…, s3:…, rclone:…
    password_file: Path | None = None
    env_file: Path | None = None
    password: str | None = field(default=None, repr=False)  # typed on the console (rescue system)
    options: tuple[str, ...] = ()  # restic -o KEY=VALUE ([restic] options)

    @classmethod
    def from_config(cls, config: Config) -> Repo:
        cfg = config.restic
        if not cfg.repository:
            raise MkrecError("mode restic needs [restic] repository", hint='e.g. repository = "/srv/restic"')
        return cls(cfg.repository, cfg.password_file, cfg.env_file, options=cfg.options)

    def env(self) -> dict[str, str]:
        env = read_env_file(self.env_file) if self.env_file else {}
        if self.password_file is not None:
            env["RESTIC_PASSWORD_FILE"] = str(self.password_file)
        elif self.password is not None:
            env["RESTIC_PASSWORD"] = self.password
        return env

    def argv(self, *args: str) -> list[str]:
        options = [arg for option in self.options for arg in ("-o", option)]
        return ["restic", "--repo", self.location, *options, *args]

    def run(self, *args: str, cwd: Path | None = None) -> str:
        """restic ARGS to completion; its stdout. A failure is one line (see explain())."""
        try:
            return run(self.argv(*args), cwd=cwd, env=self.env()).stdout
        except CommandError as err:
            raise self.explain(err) from None

    def json(self, *args: str) -> Any:
        out = self.run(*args, "--json")
        try:
            return json.loads(out) if out.strip() else None
        except json.JSONDecodeError as exc:
            raise MkrecError(f"restic printed output that is not JSON: {exc}") from None

    def popen(
        self, *args: str, stdin: int = subprocess.DEVNULL, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        return popen(self.argv(*args), stdin=stdin, cwd=cwd, env=self.env())

    def read_bytes(self, *args: str) -> bytes:
        """restic ARGS's stdout as bytes (restic dump)."""
        proc = self.popen(*args)
        data, err = proc.communicate()
        if proc.returncode != 0:
            raise self.failed(args, proc.returncode, err)
        return data

    def explain(self, err: CommandError) -> MkrecError:
        return explain_failure(self.location, err)

    def failed(self, args: tuple[str, ...] | list[str], code: int, stderr: bytes | str) -> MkrecError:
        """What to raise when restic ARGS exited with code, having said stderr."""
        text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
        return self.explain(CommandError(self.argv(*args), code, text))

    def local_path(self) -> Path | None:
        """The repository's directory when it is a path on this machine."""
        return None if REMOTE.match(self.location) else Path(self.location)

    def check_ready(self) -> None:
        """Reachable, initialised, and the password opens it: else one line saying which."""
        self.run("cat", "config")


REMOTE = re.compile(r"^[a-z0-9]+:")  # sftp:, rest:, s3:, b2:, rclone:, ...; a path has no scheme


def restores_over_network(config: Config) -> bool:
    """The rescue system needs the network: mode restic with a repository that is not a path."""
    return config.build.mode is Mode.RESTIC and bool(REMOTE.match(config.restic.repository))


def fatal_line(stderr: str) -> str:
    """restic's own reason: its `Fatal: ...` line, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = [line for line in lines if "Fatal:" in line]
    return (fatal[-1] if fatal else lines[-1] if lines else "").rpartition("Fatal:")[2].strip()


def explain_failure(location: str, err: CommandError) -> MkrecError:
    """The common ways restic fails, as one line with what to do; anything else as restic said it."""
    text = err.stderr
    reason = fatal_line(text)
    where = f"restic repository {location}"
    if "wrong password" in text:
        return MkrecError(
            f"{where}: wrong password (no key in the repository opens with it)",
            hint="check [restic] password_file, or the file given with --restic-password-file",
        )
    if "Resolving password failed" in text:
        return MkrecError(
            f"{where}: cannot read the password file: {reason}",
            hint="check [restic] password_file or --restic-password-file",
        )
    if "empty password" in text:
        return MkrecError(
            f"{where}: no password given",
            hint="set [restic] password_file, give --restic-password-file FILE, or type it on a terminal",
        )
    if "Is there a repository at the following location?" in text:
        if any(s in text for s in ("no such file or directory", "404", "Not Found", "does not exist")):
            return MkrecError(
                f"{where} is not initialised (no config file there)",
                hint=f"create it once: RESTIC_PASSWORD_FILE=<password file> restic -r {location} init",
            )
        return MkrecError(
            f"{where} is not reachable: {reason}", hint="check the address, the server and the network"
        )
    if "no matching ID found" in text or "no snapshot" in reason:
        return MkrecError(f"{where}: {reason}", hint=f"list what is there: mkrec sets restic:{location}")
    return MkrecError(
        f"{where}: restic {err.argv[3] if len(err.argv) > 3 else ''} failed: {reason}",
        hint="run with --debug to see the command",
    )


MIN_VERSION = (0, 14)  # Debian 12's; dump of a directory as tar, --stdin-filename, forget --prune


def restic_version() -> tuple[int, ...] | None:
    """restic's version ("restic 0.14.0 compiled with …"); None when it is not installed."""
    try:
        out = run(["restic", "version"]).stdout
    except MkrecError:
        return None
    m = re.match(r"restic (\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def readiness(config: Config) -> tuple[bool, str, str]:
    """Mode restic, before any work: (ok, what was found, what to do)."""
    cfg = config.restic
    version = restic_version()
    if version is None:
        return False, "restic is not installed", "run 'make deps' (Debian package restic)"
    shown = ".".join(map(str, version))
    if version[:2] < MIN_VERSION:
        return (
            False,
            f"restic {shown} is too old",
            f"install restic {'.'.join(map(str, MIN_VERSION))} or newer",
        )
    if not cfg.repository:
        return (
            False,
            "mode restic needs [restic] repository",
            'e.g. repository = "sftp:backup@host:/srv/restic"',
        )
    if cfg.password_file is None or not cfg.password_file.is_file():
        what = (
            f"[restic] password_file {cfg.password_file} does not exist"
            if cfg.password_file
            else ("mode restic needs [restic] password_file (a build asks nobody)")
        )
        return False, what, "write the repository password into a file only root can read and name it there"
    try:
        Repo.from_config(config).check_ready()
    except MkrecError as err:
        return False, err.message, err.hint or ""
    return True, f"restic {shown}; repository {cfg.repository} reachable and initialised", ""
