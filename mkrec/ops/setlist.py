"""The sets under a directory: <base>/<host>/<YYYYMMDD>/, with their size and verify state.

The verify state lives next to the sets of a host, in <base>/<host>/verified.json, so the set
directories hold only what was checksummed: {"20261201": {"when": ISO time, "how": "...", "ok": true}}.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

VERIFIED_FILE = "verified.json"
DATE_NAME = re.compile(r"^\d{8}$")  # a set directory: YYYYMMDD; partial ones start with a dot


@dataclass(frozen=True)
class SetEntry:
    host: str
    date: str  # YYYYMMDD
    path: Path
    size: int  # bytes, every file in it
    kind: str  # "cd" (ISO volumes), "path" (a directory set), "rescue" (the rescue disc only)
    verified: str  # ISO time of the last good check, "" when never checked
    verify_ok: bool | None  # None: never checked
    how: str  # what the check was

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "path": str(self.path)}


def is_set_dir(path: Path) -> bool:
    return path.is_dir() and bool(DATE_NAME.match(path.name))


def set_dirs(host_dir: Path) -> list[Path]:
    """The complete sets of one host, oldest first."""
    if not host_dir.is_dir():
        return []
    return sorted((p for p in host_dir.iterdir() if is_set_dir(p)), key=lambda p: p.name)


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def set_kind(path: Path) -> str:
    isos = list(path.glob("*.iso"))
    if (path / "backup").is_dir():
        return "path"
    if len(isos) > 1 or any(_has_backup(iso) for iso in isos):
        return "cd"
    return "rescue"


def _has_backup(iso: Path) -> bool:
    """A volume of a cd set carries backup/manifest.json; the rescue disc alone does not."""
    import pycdlib

    disc = pycdlib.PyCdlib()
    try:
        disc.open(str(iso))
        try:
            disc.get_record(rr_path="/backup/manifest.json")
            return True
        except pycdlib.pycdlibexception.PyCdlibInvalidInput:
            return False
        finally:
            disc.close()
    except (OSError, pycdlib.pycdlibexception.PyCdlibException):
        return False


def read_verified(host_dir: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads((host_dir / VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_verified(set_dir: Path, ok: bool, how: str, when: datetime | None = None) -> None:
    """Remember the outcome of a check of one set, next to it (written whole, then renamed)."""
    host_dir = set_dir.parent
    state = read_verified(host_dir)
    stamp = (when or datetime.now()).isoformat(timespec="seconds")
    state[set_dir.name] = {"when": stamp, "how": how, "ok": ok}
    _write_state(host_dir, state)


def forget_removed(host_dir: Path) -> None:
    """Drop the verify state of sets that are gone."""
    _write_state(host_dir, read_verified(host_dir))


def _write_state(host_dir: Path, state: dict[str, dict[str, object]]) -> None:
    state = {k: v for k, v in state.items() if (host_dir / k).is_dir()}
    tmp = host_dir / f".{VERIFIED_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    tmp.chmod(0o600)
    tmp.replace(host_dir / VERIFIED_FILE)


def is_verified(set_dir: Path) -> bool:
    return read_verified(set_dir.parent).get(set_dir.name, {}).get("ok") is True


def host_sets(host_dir: Path) -> list[SetEntry]:
    state = read_verified(host_dir)
    entries = []
    for path in set_dirs(host_dir):
        check = state.get(path.name, {})
        ok = check.get("ok")
        entries.append(
            SetEntry(
                host=host_dir.name,
                date=path.name,
                path=path,
                size=tree_size(path),
                kind=set_kind(path),
                verified=str(check.get("when", "")),
                verify_ok=ok if isinstance(ok, bool) else None,
                how=str(check.get("how", "")),
            )
        )
    return entries


def find_sets(base: Path) -> list[SetEntry]:
    """Every set under base (a [build] output or [path] dir), by host, oldest first."""
    if not base.is_dir():
        return []
    hosts = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [entry for host in hosts for entry in host_sets(host)]


def render_sets(entries: list[SetEntry]) -> list[str]:
    from mkrec.sizes import format_size

    lines = [f"{'HOST':<20} {'DATE':<8}  {'KIND':<6} {'SIZE':>10}  VERIFIED"]
    for e in entries:
        if e.verify_ok is None:
            state = "never"
        else:
            state = f"{'ok' if e.verify_ok else 'FAILED'} {e.verified}" + (f" ({e.how})" if e.how else "")
        lines.append(f"{e.host:<20} {e.date:<8}  {e.kind:<6} {format_size(e.size):>10}  {state}")
    return lines


def list_sets(where: str, as_json: bool = False) -> int:
    """`mkrec sets DIR`: every set under DIR; exit 1 when there is none."""
    from mkrec.errors import MkrecError

    base = Path(where)
    if not base.is_dir():
        raise MkrecError(f"{where}: no such directory", hint="give a [build] output or [path] dir")
    entries = find_sets(base)
    if as_json:
        print(json.dumps([e.as_json() for e in entries], indent=2))
    else:
        print("\n".join(render_sets(entries)) if entries else f"no sets in {where}")
    return 0 if entries else 1
