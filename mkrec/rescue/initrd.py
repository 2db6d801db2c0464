"""The initrd: static busybox, the kernel modules that reach disks, CD-ROMs and USB sticks, and
/init. Small on purpose: the tools live on the root RAM disk (rdbase.py)."""

from __future__ import annotations

import logging
import lzma
from pathlib import Path

import zstandard

from mkrec.config import Config, Network
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.kernel import Kernel
from mkrec.rescue import modules
from mkrec.rescue.bootcfg import RDBASE
from mkrec.rescue.cpio import Archive
from mkrec.rescue.render import render
from mkrec.restic.repo import restores_over_network
from mkrec.runner import run

log = logging.getLogger("mkrec.rescue")

BUSYBOX = Path("/bin/busybox")


def add_busybox(archive: Archive, busybox: Path = BUSYBOX) -> None:
    """busybox at /bin/busybox and a symlink per applet in /bin or /sbin. Never in /usr: the
    host's own tools go there on the RAM disk and come first on PATH."""
    if not busybox.is_file():
        raise MkrecError(f"{busybox}: no static busybox", hint="apt-get install busybox-static")
    archive.add_file("bin/busybox", busybox, mode=0o755)
    for applet in run([busybox, "--list-full"]).stdout.split():
        name = applet.rsplit("/", 1)[-1]
        where = "sbin" if "sbin/" in applet else "bin"
        if name != "busybox":
            archive.add_symlink(f"{where}/{name}", "/bin/busybox")


def _module_bytes(path: Path) -> bytes:
    """busybox insmod takes plain .ko files: unpack what the distribution compressed."""
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes())
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 30)
    return path.read_bytes()


def network_setting(config: Config) -> str:
    """[rescue] network; "auto" becomes "dhcp" when the restore reads a remote restic repository."""
    network = config.rescue.network
    if network is Network.AUTO and restores_over_network(config):
        return Network.DHCP.value
    return network.value


def add_modules(archive: Archive, kernel: Kernel, extra: tuple[str, ...]) -> list[str]:
    """DEFAULT_MODULES, NET_MODULES and this machine's NIC drivers where this kernel has them; every
    one of extra ([rescue] modules)."""
    index = modules.load_index(kernel.modules)
    wanted = (*modules.DEFAULT_MODULES, *modules.NET_MODULES, *modules.host_nic_modules())
    paths = modules.resolve(index, wanted, extra)
    plain = []
    for rel in paths:
        dest = rel.removesuffix(".xz").removesuffix(".zst")
        archive.add_bytes(f"lib/modules/{kernel.version}/{dest}", _module_bytes(kernel.modules / rel))
        plain.append(dest)
    # A modules.dep for just these, so modprobe works in the rescue shell too.
    present = set(plain)
    lines = []
    for rel, dest in zip(paths, plain, strict=True):
        deps = [d for d in index.deps[modules.module_name(rel)] if index.paths[d] in paths]
        dep_paths = [index.paths[d].removesuffix(".xz").removesuffix(".zst") for d in deps]
        lines.append(f"{dest}: {' '.join(p for p in dep_paths if p in present)}".rstrip())
    archive.add_bytes(f"lib/modules/{kernel.version}/modules.dep", "\n".join(lines) + "\n")
    archive.add_bytes("etc/mkrec/modules", "\n".join(plain) + "\n")
    return plain


def build_initrd(ctx: Context, kernel: Kernel) -> Archive:
    archive = Archive()
    for d in ("dev", "proc", "sys", "run", "tmp", "mnt", "root", "etc/mkrec"):
        archive.add_dir(d)
    add_busybox(archive)
    loaded = add_modules(archive, kernel, ctx.config.rescue.modules)
    log.debug("initrd: %d kernel modules", len(loaded))
    init = render(
        ctx.templates_dir, "init.sh.j2", set_name=ctx.set_name, version=kernel.version, rdbase=RDBASE
    )
    archive.add_bytes("init", init, mode=0o755)
    network = render(ctx.templates_dir, "network.sh.j2", network=network_setting(ctx.config))
    archive.add_bytes("etc/mkrec/network", network, mode=0o755)
    archive.add_bytes("etc/mkrec/udhcpc", render(ctx.templates_dir, "udhcpc.sh.j2"), mode=0o755)
    return archive
