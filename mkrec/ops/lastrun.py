"""last-run.json: what the last `mkrec build` did, written next to the host's sets
(<output>/<host>/last-run.json, and in mode path also <[path] dir>/<host>/). With it, on success,
layout.toml: the layout the newest good set was made from, for `mkrec status` to compare against."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mkrec
from mkrec import __version__

LAST_RUN = "last-run.json"
LAST_LAYOUT = "layout.toml"


@dataclass
class RunRecord:
    host: str
    mode: str
    started: str  # ISO time
    finished: str = ""
    duration: float = 0.0  # seconds
    result: str = "failed"  # "ok" | "failed" | "interrupted"
    error: str = ""
    sets: list[str] = field(default_factory=list)  # directories (or the tape device) written
    size: int = 0  # bytes written into the sets
    verified: bool = False  # every set read back as written
    last_ok: str = ""  # when the newest good run finished (this one, or an earlier one)
    removed: list[str] = field(default_factory=list)  # older sets retention removed
    kernel: str = field(default_factory=platform.release)  # the running kernel
    kernels: list[str] = field(default_factory=list)  # installed under [source] root/boot
    mkrec_version: str = __version__
    mkrec_code: str = ""  # fingerprint of the code that ran: an update changes it
    report: list[str] = field(default_factory=list)  # what happened to mail / hook

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def installed_kernels(root: Path) -> list[str]:
    """Versions of the kernels installed on the system backed up (/boot/vmlinuz-*)."""
    return sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))


def code_fingerprint() -> str:
    """A short hash of mkrec's own Python files: the version string alone does not move between
    releases of a checkout, the code does."""
    digest = hashlib.sha256()
    package = Path(mkrec.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.parent / f".{path.name}.{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def save_run(record: RunRecord, host_dirs: list[Path], layout: Path | None) -> None:
    """Write last-run.json into each host directory; the layout of a good run beside it."""
    for host_dir in host_dirs:
        write_private_json(host_dir / LAST_RUN, record.as_json())
        if record.result == "ok" and layout is not None and layout.is_file():
            shutil.copyfile(layout, host_dir / LAST_LAYOUT)
            (host_dir / LAST_LAYOUT).chmod(0o600)


def load_run(host_dir: Path) -> RunRecord | None:
    try:
        data = json.loads((host_dir / LAST_RUN).read_text())
    except (OSError, ValueError):
        return None
    return RunRecord.from_json(data) if isinstance(data, dict) else None
