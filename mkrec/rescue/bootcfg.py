"""The boot menus: isolinux.cfg / pxelinux.cfg/default (BIOS), grub.cfg (UEFI) and the iPXE script,
all with the same entries, rendered from templates/ by pure functions. The kernel command line says
what the rescue system does after boot (mkrec.run=shell|restore|unattended); the profile on the RAM
disk reads it. A Medium says where a menu finds its files: /boot/ on the disc, next to the boot
loader in the netboot tree."""

from __future__ import annotations

from dataclasses import dataclass

from mkrec.context import Context
from mkrec.rescue.render import render

# The boot files' names, in /boot/ on the volume and at the top of the netboot tree.
KERNEL_NAME, INITRD_NAME, RDBASE_NAME = "vmlinuz", "initrd.img", "rdbase.img"
MEMTEST_BIOS_NAME, MEMTEST_EFI_NAME = "memtest.bin", "memtest.efi"
BOOT_DIR = "/boot/"
KERNEL = BOOT_DIR + KERNEL_NAME
INITRD = BOOT_DIR + INITRD_NAME
RDBASE = BOOT_DIR + RDBASE_NAME
MEMTEST_BIOS = BOOT_DIR + MEMTEST_BIOS_NAME
MEMTEST_EFI = BOOT_DIR + MEMTEST_EFI_NAME


@dataclass(frozen=True)
class Medium:
    """Where a menu is read from: what goes before every boot file's name, and what a network
    boot adds to the kernel command line (the booting NIC's MAC as BOOTIF=, so the rescue system
    brings up that NIC; pxelinux adds it itself with IPAPPEND)."""

    name: str  # in the menu's first comment line
    prefix: str
    network: bool = False
    boot_arg: str = ""

    def path(self, name: str) -> str:
        return self.prefix + name


DISC = Medium("disc", BOOT_DIR)
# pxelinux reads names relative to the directory pxelinux.0 came from.
PXELINUX = Medium("network boot", "", network=True)
# $mkrec_dir: the directory bootx64.efi came from ($cmdpath), or the host's directory a fleet-wide
# grub.cfg chose (see the README).
GRUB_NET = Medium("network boot", "$mkrec_dir/", network=True, boot_arg="BOOTIF=01-${net_default_mac}")
# iPXE resolves names against the script's own URL (TFTP or HTTP).
IPXE = Medium("network boot", "", network=True, boot_arg="BOOTIF=01-${netX/mac:hexhyp}")


@dataclass(frozen=True)
class Serial:
    unit: int
    speed: int


@dataclass(frozen=True)
class MenuEntry:
    id: str
    title: str
    run: str  # value of mkrec.run= on the kernel command line


ENTRIES = (
    MenuEntry("shell", "Rescue shell", "shell"),
    MenuEntry("restore", "Restore this machine (asks before every destructive step)", "restore"),
    MenuEntry("unattended", "Unattended restore (no questions)", "unattended"),
)


def serial_of(console: str) -> Serial | None:
    """ "ttyS1,115200n8" -> Serial(1, 115200); a non-serial console (tty0) -> None."""
    if not console.startswith("ttyS"):
        return None
    name, _, opts = console.partition(",")
    speed = "".join(ch for ch in opts if ch.isdigit()) if opts else ""
    return Serial(int(name.removeprefix("ttyS") or 0), int(speed) if speed else 9600)


def kernel_cmdline(ctx: Context) -> str:
    """Common kernel arguments; with a console set the last console= (the one /dev/console
    follows, and so the rescue shell) is the configured one, the screen still gets messages."""
    args = ["quiet"]
    if ctx.config.rescue.console:
        args += ["console=tty0", f"console={ctx.config.rescue.console}"]
    return " ".join(args)


def default_entry(ctx: Context) -> str:
    return "unattended" if ctx.config.rescue.autorun == "start-restore" else "shell"


def _values(ctx: Context, medium: Medium, memtest: bool) -> dict[str, object]:
    cmdline = " ".join(filter(None, (kernel_cmdline(ctx), medium.boot_arg)))
    return {
        "host": ctx.hostname,
        "date": f"{ctx.started:%Y-%m-%d %H:%M}",
        "set_name": ctx.set_name,
        "serial": serial_of(ctx.config.rescue.console),
        "timeout": ctx.config.rescue.timeout,
        "default": default_entry(ctx),
        "entries": ENTRIES,
        "cmdline": cmdline,
        "medium": medium.name,
        "network": medium.network,
        "kernel": medium.path(KERNEL_NAME),
        "initrd": medium.path(INITRD_NAME),
        "rdbase": medium.path(RDBASE_NAME),
        "memtest": memtest,
    }


def render_isolinux(ctx: Context, memtest: bool = False, medium: Medium = DISC) -> str:
    """isolinux.cfg on the disc; with PXELINUX, pxelinux.cfg/default of the netboot tree."""
    loader = "pxelinux" if medium.network else "isolinux"
    values = {**_values(ctx, medium, memtest), "loader": loader}
    return render(ctx.templates_dir, "isolinux.cfg.j2", **values, memtest_path=medium.path(MEMTEST_BIOS_NAME))


def render_grub(ctx: Context, memtest: bool = False, medium: Medium = DISC) -> str:
    values = _values(ctx, medium, memtest)
    return render(ctx.templates_dir, "grub.cfg.j2", **values, memtest_path=medium.path(MEMTEST_EFI_NAME))


def render_ipxe(ctx: Context, memtest_bios: bool = False, memtest_efi: bool = False) -> str:
    """The iPXE script for HTTP boot (`chain http://server/path/netboot.ipxe`)."""
    values = _values(ctx, IPXE, memtest_bios or memtest_efi)
    memtest = {"memtest_bios": memtest_bios, "memtest_efi": memtest_efi}
    return render(ctx.templates_dir, "netboot.ipxe.j2", **values, **memtest)


def render_grub_net_embedded(ctx: Context) -> str:
    """The config built into the netboot tree's bootx64.efi: the menu beside it on the server."""
    return render(ctx.templates_dir, "grub-net-embedded.cfg.j2")


def render_grub_embedded(ctx: Context, tag_file: str) -> str:
    """The config built into BOOTX64.EFI: find the disc (CD or USB stick) by a file only this
    build has, then read the real grub.cfg from it."""
    return render(ctx.templates_dir, "grub-embedded.cfg.j2", tag_file=tag_file)
