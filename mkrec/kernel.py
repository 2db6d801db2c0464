"""Which kernel the rescue system boots: `[rescue] kernel` = auto, a version, or a vmlinuz path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mkrec.errors import MkrecError


@dataclass(frozen=True)
class Kernel:
    image: Path
    version: str
    modules: Path


def _version_key(version: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\-+~]", version)]


def find_kernel(
    spec: str = "auto", boot: Path = Path("/boot"), lib_modules: Path = Path("/lib/modules")
) -> Kernel:
    """The newest /boot/vmlinuz-<v> with /lib/modules/<v>, or the one `spec` names."""
    if spec.startswith("/"):
        image = Path(spec)
        version = image.name.removeprefix("vmlinuz-")
        candidates = [(image, version)]
    elif spec != "auto":
        candidates = [(boot / f"vmlinuz-{spec}", spec)]
    else:
        found = [(p, p.name.removeprefix("vmlinuz-")) for p in boot.glob("vmlinuz-*")]
        candidates = sorted(found, key=lambda c: _version_key(c[1]), reverse=True)
    for image, version in candidates:
        if image.is_file() and (lib_modules / version / "modules.dep").is_file():
            return Kernel(image, version, lib_modules / version)
    if spec == "auto":
        raise MkrecError(
            f"no kernel in {boot} has its modules in {lib_modules}",
            hint="apt-get install linux-image-amd64, or set [rescue] kernel",
        )
    raise MkrecError(
        f"[rescue] kernel = {spec!r}: no such kernel image with modules.dep",
        hint=f"check {candidates[0][0]} and {lib_modules}/<version>",
    )
