"""The UEFI boot image: a FAT file holding EFI/BOOT/BOOTX64.EFI. Made with mkfs.vfat -C and mtools,
never mounted (the build host's kernel may have no vfat).

Where Debian's signed boot chain is installed (shim-signed, grub-efi-amd64-signed), the disc boots
under Secure Boot: BOOTX64.EFI is the signed shim, which starts grubx64.efi beside it, Debian's
signed GRUB for CDs (gcdx64). That GRUB cannot load modules or read the FAT image: it finds the
disc by /.disk/info and sources /boot/grub/x86_64-efi/grub.cfg there (DISK_INFO, SIGNED_GRUB_CFG), which
finds this very disc by its tag file and reads the menu. The kernel is Debian's signed one and
the modules the rescue system loads are signed too, as lockdown requires. Without the signed
chain, BOOTX64.EFI is a standalone GRUB whose built-in config does the same search."""

from __future__ import annotations

from pathlib import Path

from mkrec.runner import run

FAT_KIB = 16 * 1024  # FAT16 from 16 MiB: what firmware reads most reliably
# Modules in BOOTX64.EFI's memdisk (with their dependencies): read the disc, the menu, the kernel.
GRUB_MODULES = (
    "normal", "linux", "configfile", "search", "search_fs_file", "iso9660", "fat", "part_msdos",
    "part_gpt", "echo", "test", "sleep", "serial", "terminal", "all_video", "efi_gop", "gfxterm",
    "reboot", "halt", "chain", "ls", "cat",
)  # fmt: skip


# Loaded before the embedded config runs: find the disc, then the menu, serial and kernel loading.
PRELOAD = (
    "part_msdos", "part_gpt", "iso9660", "fat", "search", "search_fs_file", "configfile", "normal",
    "linux", "serial", "terminal", "all_video",
)  # fmt: skip


def grub_mkstandalone_argv(out: Path, embedded_cfg: Path) -> list[str]:
    modules = " ".join(GRUB_MODULES)
    return [
        "grub-mkstandalone",
        "-O", "x86_64-efi",
        "-o", str(out),
        "--install-modules", modules,
        "--modules", " ".join(PRELOAD),
        "--fonts=", "--locales=", "--themes=",
        f"boot/grub/grub.cfg={embedded_cfg}",
    ]  # fmt: skip


SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
SIGNED_GRUB = Path("/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed")  # Debian's, for CDs
MOK_MANAGER = Path("/usr/lib/shim/mmx64.efi.signed")  # shim starts it when a key is to enrol
# On the disc, for the signed GRUB: what it searches for, and the config it then sources.
DISK_INFO = "/.disk/info"
SIGNED_GRUB_CFG = "/boot/grub/x86_64-efi/grub.cfg"


def signed_chain(shim: Path = SHIM, grub: Path = SIGNED_GRUB) -> tuple[Path, Path] | None:
    """Debian's signed shim and GRUB, when both are installed."""
    return (shim, grub) if shim.is_file() and grub.is_file() else None


def efi_programs(workdir: Path, embedded_cfg: Path) -> list[tuple[Path, str]]:
    """(file, name in EFI/BOOT/) of the image: the signed chain, else a standalone GRUB."""
    chain = signed_chain()
    if chain is not None:
        shim, grub = chain
        programs = [(shim, "BOOTX64.EFI"), (grub, "grubx64.efi")]
        return programs + ([(MOK_MANAGER, "mmx64.efi")] if MOK_MANAGER.is_file() else [])
    efi = workdir / "BOOTX64.EFI"
    run(grub_mkstandalone_argv(efi, embedded_cfg))
    return [(efi, "BOOTX64.EFI")]


def make_efi_image(workdir: Path, embedded_cfg_text: str, out: Path) -> Path:
    """Write out (a FAT image) with EFI/BOOT/BOOTX64.EFI; workdir holds the intermediate files."""
    cfg = workdir / "grub-embedded.cfg"
    cfg.write_text(embedded_cfg_text)
    programs = efi_programs(workdir, cfg)
    out.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "-n", "MKREC_EFI", str(out), str(FAT_KIB)])
    mtools = {"MTOOLS_SKIP_CHECK": "1"}
    run(["mmd", "-i", str(out), "::/EFI", "::/EFI/BOOT"], env=mtools)
    for src, name in programs:
        run(["mcopy", "-i", str(out), str(src), f"::/EFI/BOOT/{name}"], env=mtools)
    return out
