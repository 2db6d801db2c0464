"""The rescue system: initrd + root RAM disk + boot configs, and the rescue-only ISO.

Stage order (each a small module): kernel (mkrec.kernel) -> initrd (busybox, modules, /init) ->
rd-base (tools, libraries, Python, etc/recovery) -> boot files (isolinux + GRUB EFI image) ->
BootPayload. The boot loader loads both cpio archives as initrds; the kernel unpacks them into
one RAM root, so CD, USB stick and PXE boot the same way without finding the medium first."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path, PurePosixPath

from mkrec.config import config_to_dict
from mkrec.context import Context
from mkrec.iso import BootPayload, BootSpec, tree_entries
from mkrec.kernel import find_kernel
from mkrec.log import step
from mkrec.rescue import bootcfg, efi
from mkrec.rescue.cpio import Archive, write_zstd
from mkrec.rescue.efi import make_efi_image
from mkrec.rescue.initrd import build_initrd
from mkrec.rescue.rdbase import build_rdbase
from mkrec.rescue.volume import write_rescue_set
from mkrec.sizes import format_size

log = logging.getLogger("mkrec.rescue")

__all__ = ["build_rescue", "write_rescue_set"]

ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
SYSLINUX_MODULES = Path("/usr/lib/syslinux/modules/bios")
ISOLINUX_MODULES = ("ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32")
EFI_IMAGE = "/boot/grub/efi.img"
ZSTD_LEVEL = 12  # measured here: level 19 triples the build time for 6 % less
SIZE_FILE = "rescue-size.json"  # in staging: the last build's sizes (RAM unpacked, disc), for the preflight


def find_memtest(ctx: Context) -> tuple[Path | None, Path | None]:
    """(BIOS image, EFI image) of memtest86+: utilities/memtest* first, then Debian's package."""
    bios = efi = None
    for path in sorted(ctx.utilities_dir.glob("memtest*")):
        if path.suffix == ".efi":
            efi = efi or path
        elif path.is_file():
            bios = bios or path
    debian_bios, debian_efi = Path("/boot/memtest86+x64.bin"), Path("/boot/memtest86+x64.efi")
    bios = bios or (debian_bios if debian_bios.is_file() else None)
    efi = efi or (debian_efi if debian_efi.is_file() else None)
    return bios, efi


def _pack(archive: Archive, out: Path, what: str) -> int:
    raw, packed = write_zstd(archive, out, level=ZSTD_LEVEL)
    log.info("    %s: %s unpacked, %s compressed (zstd)", what, format_size(raw), format_size(packed))
    return raw


def build_rescue(ctx: Context) -> BootPayload:
    """Build the rescue system into ctx.staging and return what volume 1 must carry to boot it."""
    kernel = find_kernel(ctx.config.rescue.kernel)
    boot = ctx.staging / "boot"
    isolinux = ctx.staging / "isolinux"
    work = ctx.staging / ".work"
    for old in (boot, isolinux, work):
        shutil.rmtree(old, ignore_errors=True)
    for d in (boot / "grub", isolinux, work, ctx.recovery_dir):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = json.dumps(config_to_dict(ctx.config), indent=2, sort_keys=True) + "\n"
    (ctx.recovery_dir / "config.json").write_text(config)

    with step(f"initrd (kernel {kernel.version})"):
        initrd_raw = _pack(build_initrd(ctx, kernel), boot / "initrd.img", "initrd")
    with step("root RAM disk"):
        rdbase_raw = _pack(build_rdbase(ctx, kernel), boot / "rdbase.img", "rd-base")
    with step("boot loaders"):
        shutil.copyfile(kernel.image, boot / "vmlinuz")
        bios_memtest, efi_memtest = find_memtest(ctx)
        if bios_memtest:
            shutil.copyfile(bios_memtest, ctx.staging / bootcfg.MEMTEST_BIOS.lstrip("/"))
        if efi_memtest:
            shutil.copyfile(efi_memtest, ctx.staging / bootcfg.MEMTEST_EFI.lstrip("/"))
        shutil.copyfile(ISOLINUX_BIN, isolinux / "isolinux.bin")
        for name in ISOLINUX_MODULES:
            shutil.copyfile(SYSLINUX_MODULES / name, isolinux / name)
        (isolinux / "isolinux.cfg").write_text(bootcfg.render_isolinux(ctx, memtest=bios_memtest is not None))
        (boot / "grub" / "grub.cfg").write_text(bootcfg.render_grub(ctx, memtest=efi_memtest is not None))
        tag = f"/boot/grub/mkrec-{ctx.set_name}.id"
        (ctx.staging / tag.lstrip("/")).write_text(f"{ctx.hostname} {ctx.set_name}\n")
        embedded = bootcfg.render_grub_embedded(ctx, tag)
        make_efi_image(work, embedded, ctx.staging / EFI_IMAGE.lstrip("/"))
        _signed_grub_files(ctx, embedded)

    entries = tree_entries(boot, "/boot") + tree_entries(isolinux, "/isolinux")
    disk_info_dir = str(PurePosixPath(efi.DISK_INFO).parent)
    entries += tree_entries(ctx.staging / disk_info_dir.lstrip("/"), disk_info_dir)
    entries += tree_entries(ctx.recovery_dir, "/etc/recovery")
    payload = BootPayload(tuple(entries), BootSpec(bios_image="/isolinux/isolinux.bin", efi_image=EFI_IMAGE))
    sizes = {"unpacked": initrd_raw + rdbase_raw, "disc": payload.size()}
    (ctx.staging / SIZE_FILE).write_text(json.dumps(sizes) + "\n")
    return payload


def _signed_grub_files(ctx: Context, embedded_cfg: str) -> None:
    """What Debian's signed GRUB looks for on the disc (see mkrec.rescue.efi)."""
    info = ctx.staging / efi.DISK_INFO.lstrip("/")
    shutil.rmtree(info.parent, ignore_errors=True)
    info.parent.mkdir(mode=0o700)
    info.write_text(f"mkrec rescue disc {ctx.set_name} of {ctx.hostname}\n")
    cfg = ctx.staging / efi.SIGNED_GRUB_CFG.lstrip("/")
    cfg.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cfg.write_text(embedded_cfg)


def measured_rescue_size(staging: Path, what: str = "unpacked") -> int | None:
    """What the last build's rescue system unpacks to in RAM ("unpacked") or takes on the disc
    ("disc"), or None before the first build."""
    try:
        return int(json.loads((staging / SIZE_FILE).read_text())[what])
    except (OSError, ValueError, KeyError, TypeError):
        return None
