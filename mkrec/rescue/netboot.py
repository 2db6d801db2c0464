"""The netboot tree: <output>/<host>/<date>/netboot/, a directory a TFTP or web server serves as
its root. The same kernel and two initrds as the disc, at the top beside their boot loaders:
pxelinux.0 (BIOS PXE, menu in pxelinux.cfg/default), bootx64.efi (UEFI: a GRUB network image whose
built-in config reads grub.cfg beside it) and netboot.ipxe (iPXE, for HTTP boot). The menus come
from the disc's templates and entry table (mkrec.rescue.bootcfg)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from mkrec.backup.setdir import SetDir
from mkrec.context import Context
from mkrec.rescue import ISOLINUX_MODULES, SYSLINUX_MODULES, bootcfg
from mkrec.rescue.volume import private_tree
from mkrec.runner import run
from mkrec.sizes import format_size

log = logging.getLogger("mkrec.rescue")

NETBOOT_DIR = "netboot"  # in the set directory
PXELINUX = Path("/usr/lib/PXELINUX/pxelinux.0")
GRUB_EFI_NET = "bootx64.efi"
# Built into bootx64.efi (grub-mkimage adds their dependencies): the network, the menu, the kernel.
GRUB_NET_MODULES = (
    "efinet", "tftp", "http", "net", "normal", "linux", "configfile", "echo", "test", "sleep",
    "serial", "terminal", "all_video", "efi_gop", "gfxterm", "reboot", "halt", "chain", "ls", "cat",
)  # fmt: skip


def grub_net_argv(out: Path, embedded_cfg: Path) -> list[str]:
    return [
        "grub-mkimage",
        "-O", "x86_64-efi",
        "-o", str(out),
        "-p", "/",  # unused: every module is built in, the config is embedded
        "-c", str(embedded_cfg),
        *GRUB_NET_MODULES,
    ]  # fmt: skip


def _copy_boot_files(boot: Path, tree: Path) -> tuple[bool, bool]:
    """The kernel, the initrds and memtest86+ from the staged /boot; (BIOS memtest?, EFI memtest?)."""
    for name in (bootcfg.KERNEL_NAME, bootcfg.INITRD_NAME, bootcfg.RDBASE_NAME):
        shutil.copyfile(boot / name, tree / name)
    memtest = []
    for name in (bootcfg.MEMTEST_BIOS_NAME, bootcfg.MEMTEST_EFI_NAME):
        if (boot / name).is_file():
            shutil.copyfile(boot / name, tree / name)
        memtest.append((boot / name).is_file())
    return memtest[0], memtest[1]


GRUB_EFI_MODULES = Path("/usr/lib/grub/x86_64-efi")  # grub-efi-amd64-bin: what grub-mkimage builds from


def _pxelinux(ctx: Context, tree: Path, memtest: bool) -> None:
    shutil.copyfile(PXELINUX, tree / PXELINUX.name)
    for name in ISOLINUX_MODULES:
        shutil.copyfile(SYSLINUX_MODULES / name, tree / name)
    (tree / "pxelinux.cfg").mkdir(mode=0o700)
    menu = bootcfg.render_isolinux(ctx, memtest=memtest, medium=bootcfg.PXELINUX)
    (tree / "pxelinux.cfg" / "default").write_text(menu)


def _grub_net(ctx: Context, tree: Path, work: Path, memtest: bool) -> None:
    embedded = work / "grub-net-embedded.cfg"
    embedded.write_text(bootcfg.render_grub_net_embedded(ctx))
    run(grub_net_argv(tree / GRUB_EFI_NET, embedded))
    (tree / "grub.cfg").write_text(bootcfg.render_grub(ctx, memtest=memtest, medium=bootcfg.GRUB_NET))


def _can_make(what: str, needs: Path, package: str) -> bool:
    if needs.exists():
        return True
    log.warning("warning: netboot tree without %s: %s is missing (apt-get install %s)", what, needs, package)
    return False


def write_netboot(ctx: Context) -> Path:
    """Write the netboot tree of the rescue system just built (ctx.staging) into the set
    directory; an earlier tree is replaced only once the new one is complete."""
    setdir = SetDir(ctx.set_dir / NETBOOT_DIR)
    tree = setdir.create()
    try:
        bios_memtest, efi_memtest = _copy_boot_files(ctx.staging / "boot", tree)
        # A loader that cannot be made here leaves its way of booting out, said once: the backup and
        # the disc do not depend on the network boot.
        if _can_make("BIOS PXE", PXELINUX, "pxelinux"):
            _pxelinux(ctx, tree, bios_memtest)
        if _can_make("UEFI network boot", GRUB_EFI_MODULES, "grub-efi-amd64-bin"):
            _grub_net(ctx, tree, ctx.staging / ".work", efi_memtest)
        (tree / "netboot.ipxe").write_text(bootcfg.render_ipxe(ctx, bios_memtest, efi_memtest))
        private_tree(tree)  # like the rest of the set; the README copies it for the servers
    except BaseException:
        setdir.abort()
        raise
    final = setdir.commit()
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    log.info("    %s: %s", final, format_size(size))
    return final
