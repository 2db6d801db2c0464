"""Debian 12 root trees made with debootstrap from the machine's own Debian mirror, with the boot
loader of one firmware kind, the storage tools an installer sets up, what `mkrec build` needs, and
mkrec's Python dependencies (the versions of the host's .venv, from PyPI wheels). Each root is
cached as a tarball keyed by release + package list + wheels, so only the first run downloads.

Cache: $MKREC_TEST_CACHE/realsys (default /var/cache/mkrec-tests/realsys); `make clean-cache`."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("MKREC_TEST_CACHE", "/var/cache/mkrec-tests")) / "realsys"
RELEASE = "bookworm"
# The system itself: kernel, init, initramfs, storage stacks, the tools a restore rebuilds them with.
SYSTEM = (
    "linux-image-amd64", "systemd-sysv", "initramfs-tools", "udev", "kmod",
    "lvm2", "mdadm", "cryptsetup", "cryptsetup-initramfs", "e2fsprogs", "xfsprogs", "dosfstools",
    "python3", "python3-cffi-backend",  # debootstrap resolves no virtual packages: name it
)  # fmt: skip
# What `mkrec build --mode cd` takes from the system it runs on (mkrec/tools.py CORE, the rescue
# disc's boot files, the restore's tools on the RAM disk); both GRUB platforms for the hybrid disc.
MKREC_BUILD = (
    "busybox-static", "cpio", "zstd", "tar", "isolinux", "syslinux-common", "grub-common",
    "grub-pc-bin", "grub-efi-amd64-bin", "efibootmgr", "mtools", "fdisk", "gdisk", "parted",
    "util-linux", "acl", "attr",
)  # fmt: skip
BOOT_LOADER = {
    "bios": ("grub-pc",),
    "uefi": ("grub-efi-amd64", "grub-efi-amd64-signed", "shim-signed"),
}
# mkrec's runtime dependencies (mkrec/rescue/python.py PACKAGES and MODULES without mkrec itself).
PY_PACKAGES = ("pycdlib", "jinja2", "markupsafe", "psutil", "zstandard", "cryptography", "cffi", "pyrage")
SITE = "opt/mkrec/site"  # in the root: pip --target; the mkrec wrapper puts it on PYTHONPATH
RECIPE = 1  # bump when what build_root() does changes


def packages(firmware: str) -> list[str]:
    return sorted({*SYSTEM, *MKREC_BUILD, *BOOT_LOADER[firmware]})


def mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses for RELEASE (deb822 .sources or one-line .list)."""
    files = [*sorted((sources / "sources.list.d").glob("*.sources")), sources / "sources.list"]
    files += sorted((sources / "sources.list.d").glob("*.list"))
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text()
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (m.group(1).lower(), m.group(2).strip())
                    for m in re.finditer(r"(?m)^([A-Za-z-]+):\s*(.*)$", stanza)
                )
                if "deb" in fields.get("types", "").split() and RELEASE in fields.get("suites", "").split():
                    return fields["uris"].split()[0]
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2) == RELEASE:
                    return m.group(1)
    raise RuntimeError(f"no apt source for {RELEASE} in {sources}: cannot debootstrap")


def python_pins() -> list[str]:
    """name==version of mkrec's dependencies as installed in this interpreter (the host's .venv)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in PY_PACKAGES]


def cache_key(firmware: str) -> str:
    text = "\n".join([RELEASE, f"recipe {RECIPE}", *packages(firmware), *python_pins()])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def tarball_path(firmware: str) -> Path:
    return CACHE / f"{RELEASE}-{firmware}-{cache_key(firmware)}.tar.zst"


def _run(argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}); see {log}:\n" + "\n".join(tail))


def build_root(firmware: str, root: Path, log: Path) -> None:
    """debootstrap into root, then mkrec's wheels, then drop what only the download needed."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    _run(
        [
            "debootstrap", "--variant=minbase", f"--include={','.join(packages(firmware))}",
            RELEASE, str(root), mirror(),
        ],
        log,
        env,
    )  # fmt: skip
    # The same Python 3.11 ABI as Debian 12's python3: the host venv's versions, as binary wheels.
    pip = Path(sys.executable).parent / "pip"
    _run(
        [
            str(pip), "install", "--quiet", "--no-deps", "--only-binary=:all:", "--no-compile",
            "--target", str(root / SITE), *python_pins(),
        ],
        log,
        env,
    )  # fmt: skip
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (root / junk).glob("*"):
            if item.is_file():
                item.unlink()
    (root / "etc" / "machine-id").write_text("")  # each system gets its own on first boot


def root_tarball(firmware: str, log: Path) -> Path:
    """The cached root for this firmware kind ("bios": grub-pc, "uefi": grub-efi-amd64 + shim),
    built first if missing. Concurrent callers: the rename makes the tarball appear whole."""
    target = tarball_path(firmware)
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f".build-{target.stem}-{os.getpid()}"
    started = time.monotonic()
    try:
        shutil.rmtree(work, ignore_errors=True)
        (work / "root").mkdir(parents=True)
        build_root(firmware, work / "root", log)
        partial = work / "root.tar.zst"
        _run(
            [
                "tar", "--zstd", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
                "-cpf", str(partial), "-C", str(work / "root"), ".",
            ],
            log,
        )  # fmt: skip
        partial.rename(target)
    finally:
        _umount_below(work)
        shutil.rmtree(work, ignore_errors=True)
    with open(log, "a") as out:
        out.write(f"root {target.name} built in {time.monotonic() - started:.0f} s\n")
    return target


def _umount_below(path: Path) -> None:
    """debootstrap leaves proc/sys mounted in the root when it fails half-way."""
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):
        target = line.split()[1]
        if target.startswith(str(path) + "/"):
            subprocess.run(["umount", "-l", target], capture_output=True)


def clean_cache() -> None:
    shutil.rmtree(CACHE, ignore_errors=True)


if __name__ == "__main__":
    for kind in sys.argv[1:] or ["bios", "uefi"]:
        print(root_tarball(kind, Path(f"/tmp/realsys-root-{kind}.log")))
