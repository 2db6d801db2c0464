"""The one way mkrec runs external commands.

Argument lists only, stdin closed unless input is given, a fixed environment (LC_ALL=C, a known PATH),
the argv logged at debug level, and a failure turned into CommandError with the last line of stderr.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from mkrec.errors import CommandError, MkrecError

log = logging.getLogger("mkrec.run")

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every child gets: not the caller's, so output is parseable and stable."""
    env = {"PATH": SAFE_PATH, "LC_ALL": "C", "LANG": "C", "HOME": os.environ.get("HOME", "/root")}
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    input: str | bytes | None = None,
    capture: bool = True,
    check: bool = True,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion. Text output; stdout captured unless capture=False."""
    args = [os.fspath(a) for a in argv]
    log.debug("run: %s", shlex.join(args))
    text_input = input.decode() if isinstance(input, bytes) else input
    try:
        proc = subprocess.run(
            args,
            input=text_input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            cwd=cwd,
            env=command_env(env),
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise MkrecError(f"{args[0]}: command not found", hint="run 'make deps' or see 'make test'") from None
    except subprocess.TimeoutExpired:
        raise MkrecError(f"{args[0]} did not finish in {timeout:.0f} s", hint=shlex.join(args)) from None
    if proc.stderr:
        log.debug("stderr of %s: %s", args[0], proc.stderr.strip())
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stderr or "")
    return proc


def run_json(argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> Any:
    """Run a command that prints JSON (lsblk -J, sfdisk -J, findmnt -J, ...) and parse it."""
    out = run(argv, **kwargs).stdout
    try:
        return json.loads(out) if out.strip() else {}
    except json.JSONDecodeError as exc:
        raise MkrecError(f"{os.fspath(argv[0])} printed output that is not JSON: {exc}") from None


def popen(
    argv: Sequence[str | os.PathLike[str]],
    *,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a streaming command (tar in a pipeline); the caller checks it with wait_checked()."""
    args = [os.fspath(a) for a in argv]
    log.debug("popen: %s", shlex.join(args))
    try:
        return subprocess.Popen(
            args, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, cwd=cwd, env=command_env(env)
        )
    except FileNotFoundError:
        raise MkrecError(f"{args[0]}: command not found", hint="run 'make deps' or see 'make test'") from None


def wait_checked(proc: subprocess.Popen[bytes], ok_codes: tuple[int, ...] = (0,)) -> int:
    """Wait for a popen() child; raise CommandError unless it exited with one of ok_codes."""
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = proc.wait()
    if stderr:
        log.debug("stderr of %s: %s", proc.args, stderr.strip())
    if code not in ok_codes:
        argv = [os.fspath(a) for a in proc.args] if isinstance(proc.args, list) else [str(proc.args)]
        raise CommandError(argv, code, stderr)
    return code


def which(tool: str) -> Path | None:
    found = shutil.which(tool, path=SAFE_PATH)
    return Path(found) if found else None
