"""The boot menus: isolinux.cfg (BIOS) and grub.cfg (UEFI) with the same entries, rendered from
templates/ by pure functions. The kernel command line says what the rescue system does after boot
(mkrec.run=shell|restore|unattended); the profile on the RAM disk reads it."""

from __future__ import annotations

from dataclasses import dataclass

from mkrec.context import Context
from mkrec.rescue.render import render

# Where the boot files sit on the volume.
KERNEL = "/boot/vmlinuz"
INITRD = "/boot/initrd.img"
RDBASE = "/boot/rdbase.img"
MEMTEST_BIOS = "/boot/memtest.bin"
MEMTEST_EFI = "/boot/memtest.efi"


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


def _values(ctx: Context, memtest: bool) -> dict[str, object]:
    return {
        "host": ctx.hostname,
        "date": f"{ctx.started:%Y-%m-%d %H:%M}",
        "set_name": ctx.set_name,
        "serial": serial_of(ctx.config.rescue.console),
        "timeout": ctx.config.rescue.timeout,
        "default": default_entry(ctx),
        "entries": ENTRIES,
        "cmdline": kernel_cmdline(ctx),
        "kernel": KERNEL,
        "initrd": INITRD,
        "rdbase": RDBASE,
        "memtest": memtest,
    }


def render_isolinux(ctx: Context, memtest: bool = False) -> str:
    return render(ctx.templates_dir, "isolinux.cfg.j2", **_values(ctx, memtest), memtest_path=MEMTEST_BIOS)


def render_grub(ctx: Context, memtest: bool = False) -> str:
    return render(ctx.templates_dir, "grub.cfg.j2", **_values(ctx, memtest), memtest_path=MEMTEST_EFI)


def render_grub_embedded(ctx: Context, tag_file: str) -> str:
    """The config built into BOOTX64.EFI: find the disc (CD or USB stick) by a file only this
    build has, then read the real grub.cfg from it."""
    return render(ctx.templates_dir, "grub-embedded.cfg.j2", tag_file=tag_file)
