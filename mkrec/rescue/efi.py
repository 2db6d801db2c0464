"""The UEFI boot image: a FAT file holding EFI/BOOT/BOOTX64.EFI, a standalone GRUB whose built-in
config finds the disc and reads its grub.cfg. Made with mkfs.vfat -C and mtools, never mounted
(the build host's kernel may have no vfat)."""

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


def make_efi_image(workdir: Path, embedded_cfg_text: str, out: Path) -> Path:
    """Write out (a FAT image) with EFI/BOOT/BOOTX64.EFI; workdir holds the intermediate files."""
    cfg = workdir / "grub-embedded.cfg"
    cfg.write_text(embedded_cfg_text)
    efi = workdir / "BOOTX64.EFI"
    run(grub_mkstandalone_argv(efi, cfg))
    out.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "-n", "MKREC_EFI", str(out), str(FAT_KIB)])
    mtools = {"MTOOLS_SKIP_CHECK": "1"}
    run(["mmd", "-i", str(out), "::/EFI", "::/EFI/BOOT"], env=mtools)
    run(["mcopy", "-i", str(out), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], env=mtools)
    return out
