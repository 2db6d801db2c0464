"""The root RAM disk (rd-base): this machine's own restore tools with every shared library they
need, grub-install with its modules, a Python runtime with mkrec, the saved layout (etc/recovery),
the restore commands and the few /etc files the tools read."""

from __future__ import annotations

import json
import logging
import shlex
import tomllib
from pathlib import Path

from mkrec.backup.imaging import PARTCLONE
from mkrec.config import Config, Mode, config_to_dict
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.kernel import Kernel
from mkrec.rescue.cpio import Archive
from mkrec.rescue.elf import is_elf, resolve_libraries
from mkrec.rescue.python import add_python
from mkrec.rescue.render import render
from mkrec.restic.repo import restores_over_network
from mkrec.restore.actions import ACTIONS
from mkrec.runner import which
from mkrec.tools import Need, commands, restic_tools

log = logging.getLogger("mkrec.rescue")

MARKER = "mkrec rescue system ready"
LIBDIR = "usr/lib/x86_64-linux-gnu"  # in the loader's built-in path: no ld.so.cache needed

# From the one tool table (mkrec.tools). Without REQUIRED_TOOLS a restore cannot start; the optional
# ones (and every partclone.<fs>, for restoring images) are carried when installed here.
REQUIRED_TOOLS = commands(Need.RESCUE)
OPTIONAL_TOOLS = (*commands(Need.RESTORE), *PARTCLONE.values())
# lvm is one program answering to many names.
LVM_NAMES = (
    "pvcreate", "pvs", "pvscan", "pvremove", "vgcreate", "vgs", "vgscan", "vgchange", "vgremove",
    "vgcfgbackup", "vgcfgrestore", "lvcreate", "lvs", "lvscan", "lvchange", "lvremove",
)  # fmt: skip
GRUB_DIRS = (Path("/usr/lib/grub/i386-pc"), Path("/usr/lib/grub/x86_64-efi"))
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr")  # the MBR boot code extlinux restores write back
# Loaded with dlopen (no DT_NEEDED names them): glibc needs libgcc_s to unwind threads on exit.
DLOPENED = ("libgcc_s.so.1",)
TERMINFO_DIRS = (Path("/usr/lib/terminfo"), Path("/usr/share/terminfo"), Path("/etc/terminfo"))
TERMINALS = ("l/linux", "v/vt100", "v/vt102", "v/vt220", "x/xterm", "d/dumb")
# The restore commands of the rescue shell: wrapper name -> (mkrec restore ACTION, help), from the one table.
WRAPPERS = {a.wrapper: (a.name, a.help) for a in ACTIONS}
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RESTIC_ACTIONS = ("start", "clone", "fs")  # the actions that read a restic set

ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\ndisk:x:6:\ntty:x:5:\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/fstab": "",
    "etc/shells": "/bin/sh\n/bin/ash\n/usr/bin/bash\n",
}


def _add_program(archive: Archive, path: Path) -> Path:
    """Add a host program at its own path (symlinks kept as symlinks); returns the real file."""
    real = path.resolve()
    archive.add_file(str(real), real, mode=0o755)
    if path.is_symlink():
        archive.add_symlink(str(path), str(path.readlink()))
    if not is_elf(real):
        # A script: its interpreter must be here too (busybox provides /bin/sh).
        first = real.read_bytes()[:128].split(b"\n", 1)[0]
        interp = first[2:].split()[0].decode() if first.startswith(b"#!") else ""
        if interp and interp not in ("/bin/sh", "/usr/bin/sh") and Path(interp).is_file():
            return _add_program(archive, Path(interp))
    return real


def add_tools(archive: Archive, required: tuple[str, ...] = REQUIRED_TOOLS) -> list[Path]:
    elves = []
    for name in required + OPTIONAL_TOOLS:
        path = which(name)
        if path is None:
            if name in required:
                raise MkrecError(
                    f"{name}: not installed here, the rescue system needs it", hint="run 'make deps'"
                )
            log.debug("rescue: %s not installed, left out", name)
            continue
        elves.append(_add_program(archive, path))
    if "usr/sbin/lvm" in archive:
        for name in LVM_NAMES:
            archive.add_symlink(f"usr/sbin/{name}", "lvm")
    for grub in GRUB_DIRS:
        if grub.is_dir():
            archive.add_tree(str(grub), grub)
    if SYSLINUX_MBR.is_dir():
        archive.add_tree(str(SYSLINUX_MBR), SYSLINUX_MBR)
    return elves


def add_libraries(archive: Archive, elves: list[Path]) -> int:
    libs = resolve_libraries(elves)
    for name in DLOPENED:
        path = Path("/", LIBDIR, name)
        if path.exists():
            libs[name] = path
            libs.update(resolve_libraries([path]))
    for soname, path in libs.items():
        archive.add_file(f"{LIBDIR}/{soname}", path.resolve(), mode=0o755)
    # The loader is found by the absolute path programs carry (PT_INTERP).
    archive.add_symlink("lib64/ld-linux-x86-64.so.2", f"/{LIBDIR}/ld-linux-x86-64.so.2")
    return len(libs)


def known_disks(recovery: Path) -> list[str]:
    """One line per disk the capture saved (layout.toml), for the welcome screen."""
    layout = recovery / "layout.toml"
    if not layout.is_file():
        return []
    try:
        data = tomllib.loads(layout.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return ["(layout.toml is unreadable; see /etc/recovery)"]
    lines = []
    for disk in data.get("disk", []):
        size = disk.get("size")
        gib = f"{size / 1024**3:.1f} GiB" if isinstance(size, int) else "size unknown"
        parts = len(disk.get("partition", []))
        lines.append(f"{disk.get('name', '?'):<12} {gib:>12}  {disk.get('label', '')}  {parts} partitions")
    return lines


def add_etc(archive: Archive, ctx: Context, kernel: Kernel) -> None:
    for path, text in ETC_FILES.items():
        archive.add_bytes(path, text, mode=0o600 if path == "etc/shadow" else 0o644)
    for d in ("root", "tmp", "run", "var/log", "var/tmp", "var/lock", "mnt", "media"):
        archive.add_dir(d, mode=0o1777 if d.endswith("tmp") else 0o755)
    archive.add_symlink("etc/mtab", "/proc/self/mounts")
    for term in TERMINALS:
        src = next((d / term for d in TERMINFO_DIRS if (d / term).is_file()), None)
        if src:
            archive.add_file(f"usr/share/terminfo/{term}", src)
    values = {
        "host": ctx.hostname,
        "date": f"{ctx.started:%Y-%m-%d %H:%M}",
        "set_name": ctx.set_name,
        "version": kernel.version,
        "marker": MARKER,
        "extra_tty": bool(ctx.config.rescue.console) and ctx.config.rescue.console != "tty1",
        "disks": known_disks(ctx.recovery_dir),
        "network": restores_over_network(ctx.config),
    }
    archive.add_bytes("etc/inittab", render(ctx.templates_dir, "inittab.j2", **values))
    archive.add_bytes("etc/rc.rescue", render(ctx.templates_dir, "rc.rescue.j2", **values), mode=0o755)
    if values["network"]:
        add_network(archive, ctx)
    archive.add_bytes("etc/profile", render(ctx.templates_dir, "profile.j2", **values))
    archive.add_bytes("etc/motd", render(ctx.templates_dir, "motd.j2", **values))
    for name, (sub, help) in WRAPPERS.items():
        defaults = wrapper_defaults(ctx.config, sub)
        text = render(ctx.templates_dir, "wrapper.sh.j2", name=name, sub=sub, help=help, defaults=defaults)
        archive.add_bytes(f"usr/local/bin/{name}", text, mode=0o755)
    if ctx.recovery_dir.is_dir():
        archive.add_tree("etc/recovery", ctx.recovery_dir)
    config = json.dumps(config_to_dict(ctx.config), indent=2, sort_keys=True) + "\n"
    archive.add_bytes("etc/recovery/config.json", config, mode=0o600)
    for secret in embedded_credentials(ctx.config):
        archive.add_file(str(secret).lstrip("/"), secret, mode=0o600)
    # The initrd's /init checks for this file: proof the second initrd was unpacked.
    archive.add_bytes("etc/mkrec/rd-base", f"{ctx.set_name}\n")


def add_network(archive: Archive, ctx: Context) -> None:
    """What a restore over the network needs besides the NIC drivers and DHCP (in the initrd, see
    templates/network.sh.j2): the certificate authorities (https: and s3: repositories)."""
    if CA_BUNDLE.is_file():
        archive.add_file(str(CA_BUNDLE).lstrip("/"), CA_BUNDLE)


def wrapper_defaults(config: Config, sub: str) -> str:
    """What a restore wrapper adds when no --source is given: mode restic's repository (and the
    embedded password files) for the actions that read restic, else [rescue] source."""
    restic = restic_source_args(config)
    if restic and sub in RESTIC_ACTIONS:
        return shlex.join(restic)
    return shlex.join(["--source", config.rescue.source]) if config.rescue.source else ""


def embedded_credentials(config: Config) -> list[Path]:
    """[restic] embed_credentials = true: the password and env files, at their own paths (a risk the
    README names: whoever holds the disc can read the backups)."""
    cfg = config.restic
    if config.build.mode is not Mode.RESTIC or not cfg.embed_credentials:
        return []
    return [p for p in (cfg.password_file, cfg.env_file) if p is not None]


def restic_source_args(config: Config) -> list[str]:
    """Mode restic: what the restore wrappers add when no --source is given: the repository, and the
    embedded password and env files (else the password is asked on the console)."""
    cfg = config.restic
    if config.build.mode is not Mode.RESTIC or not cfg.repository:
        return []
    args = ["--source", f"restic:{cfg.repository}"]
    args += [arg for option in cfg.options for arg in ("--restic-option", option)]
    if cfg.embed_credentials and cfg.password_file is not None:
        args += ["--restic-password-file", str(cfg.password_file)]
    if cfg.embed_credentials and cfg.env_file is not None:
        args += ["--restic-env-file", str(cfg.env_file)]
    return args


def build_rdbase(ctx: Context, kernel: Kernel) -> Archive:
    archive = Archive()
    elves = add_tools(archive, REQUIRED_TOOLS + restic_tools(ctx.config))
    elves += add_python(archive)
    count = add_libraries(archive, elves)
    log.debug("rd-base: %d shared libraries", count)
    add_etc(archive, ctx, kernel)
    return archive
