"""Writing ISO 9660 volumes with pycdlib: Rock Ridge + Joliet, volume-set fields, long names
(interchange level 4). One writer for every volume, bootable or not; never prints, reports
progress through a callback."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

import pycdlib
from pycdlib.isohybrid import IsoHybrid

from mkrec.errors import MkrecError
from mkrec.progress import ProgressCallback

JOLIET_MAX = 64  # Joliet names longer than this are left to Rock Ridge only
GPT_TAIL = 33 * 512  # isohybrid's backup GPT: 32 sectors of partition entries, then its header
CYLINDER = 64 * 32 * 512  # pycdlib's default isohybrid geometry: a hybrid image ends on a cylinder
HYBRID_TAIL_MAX = CYLINDER + GPT_TAIL  # the most a hybrid image can grow past its ISO 9660 data


@dataclass(frozen=True)
class VolumeInfo:
    label: str  # volume id, e.g. CDREC_1
    set_id: str  # volume set id, e.g. CDrec-20261123-0712
    set_size: int = 1
    seqnum: int = 1
    application: str = "mkrec"


@dataclass(frozen=True)
class BootSpec:
    """How a bootable volume boots: ISO paths (among the volume's entries) of the BIOS El Torito
    image (isolinux.bin, with a boot info table) and of the EFI El Torito image (a FAT image)."""

    bios_image: str
    efi_image: str | None
    catalog: str = "/isolinux/boot.cat"
    hybrid: bool = True  # isohybrid MBR (+ EFI partition entry): the same image boots from a USB stick


@dataclass(frozen=True)
class BootPayload:
    """What the rescue system puts on a bootable volume: its files and how they boot."""

    entries: tuple[tuple[Path, str], ...]
    boot: BootSpec

    def size(self) -> int:
        """Bytes the payload takes on the volume (each file rounded up to a 2048-byte sector)."""
        return sum(-(-src.stat().st_size // 2048) * 2048 for src, _ in self.entries)


def _joliet(path: PurePosixPath) -> str | None:
    return str(path) if all(len(part) <= JOLIET_MAX for part in path.parts[1:]) else None


def _add_dirs(iso: pycdlib.PyCdlib, path: PurePosixPath, made: set[PurePosixPath]) -> None:
    for parent in reversed(path.parents):
        if parent == PurePosixPath("/") or parent in made:
            continue
        iso.add_directory(str(parent), rr_name=parent.name, joliet_path=_joliet(parent))
        made.add(parent)


def tree_entries(root: Path, prefix: str = "/") -> list[tuple[Path, str]]:
    """(source file, ISO path) for every regular file below root, sorted for a stable image."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            src = Path(dirpath) / name
            entries.append((src, str(PurePosixPath(prefix) / src.relative_to(root).as_posix())))
    return entries


def new_iso(info: VolumeInfo) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=4,
        joliet=3,
        rock_ridge="1.09",
        vol_ident=info.label,
        vol_set_ident=info.set_id,
        set_size=info.set_size,
        seqnum=info.seqnum,
        app_ident_str=info.application,
    )
    return iso


def add_files(iso: pycdlib.PyCdlib, entries: Iterable[tuple[Path, str]], made: set[PurePosixPath]) -> None:
    """Add files; `made` remembers directories already in the image."""
    for src, iso_path in entries:
        path = PurePosixPath(iso_path)
        _add_dirs(iso, path, made)
        mode = 0o100000 | (src.stat().st_mode & 0o7777)
        iso.add_file(str(src), str(path), rr_name=path.name, joliet_path=_joliet(path), file_mode=mode)


def add_data(
    iso: pycdlib.PyCdlib,
    source: object,
    length: int,
    path: str,
    made: set[PurePosixPath],
    *,
    iso_path: str | None = None,
    mode: int = 0o600,
) -> None:
    """Add one file from a path or from a file-like source of `length` bytes. Rock Ridge and
    Joliet carry `path`; the ISO 9660 name is `iso_path` (the same path unless given)."""
    rr = PurePosixPath(path)
    _add_dirs(iso, rr, made)
    where, joliet, file_mode = iso_path or path, _joliet(rr), 0o100000 | mode
    if isinstance(source, Path):
        iso.add_file(str(source), where, rr_name=rr.name, joliet_path=joliet, file_mode=file_mode)
    else:
        fp = cast(BinaryIO, source)  # pycdlib only seeks and reads it
        iso.add_fp(fp, length, where, rr_name=rr.name, joliet_path=joliet, file_mode=file_mode)


def write_iso(
    out: Path,
    entries: Iterable[tuple[Path, str]],
    info: VolumeInfo,
    progress: ProgressCallback | None = None,
    boot: BootSpec | None = None,
) -> Path:
    """Write a volume to out via a temporary name; the final name appears only when the image is
    complete, so a crash never leaves a half volume that looks whole. With boot, the volume boots
    (El Torito BIOS + EFI, isohybrid): its entries must include boot's images."""
    iso = new_iso(info)
    made: set[PurePosixPath] = set()
    add_files(iso, entries, made)
    if boot is not None:
        add_boot(iso, boot)
    return finish_iso(iso, out, progress)


def add_boot(iso: pycdlib.PyCdlib, boot: BootSpec) -> None:
    """El Torito: the BIOS entry (isolinux.bin: 4 sectors loaded, boot info table patched in),
    then the EFI entry (a FAT image). Call after add_files, which put both images on the volume."""
    catalog = PurePosixPath(boot.catalog)
    iso.add_eltorito(
        boot.bios_image,
        bootcatfile=str(catalog),
        rr_bootcatname=catalog.name,
        joliet_bootcatfile=_joliet(catalog),
        boot_load_size=4,
        boot_info_table=True,
    )
    if boot.efi_image:
        iso.add_eltorito(boot.efi_image, bootcatfile=str(catalog), efi=True)
    if boot.hybrid:
        # MBR boot code for a USB stick (isolinux's isohdpfx, built into pycdlib) and, with EFI,
        # an MBR partition entry pointing UEFI firmware at the FAT image.
        iso.add_isohybrid(efi=boot.efi_image is not None)
        if boot.efi_image:
            iso.isohybrid_mbr.__class__ = _GptSafeHybrid


class _GptSafeHybrid(IsoHybrid):
    """pycdlib pads a hybrid image up to a whole cylinder and writes the backup GPT into the last
    33 sectors of that padding, without checking that the padding is that long: an image whose
    ISO 9660 data ended less than 16.5 KiB before a cylinder boundary had its last files
    overwritten by the GPT. This one pads one cylinder more whenever the padding would be too
    short for the GPT, so the GPT always lies past the data (`hybrid_tail_overlaps` checks it)."""

    __slots__ = ()

    def _calc_cc(self, iso_size: int) -> tuple[int, int]:
        cylinders, padding = super()._calc_cc(iso_size)
        if padding < GPT_TAIL:
            cylinders, padding = min(cylinders + 1, 1024), padding + CYLINDER
        return cylinders, padding


def hybrid_tail_overlaps(iso: pycdlib.PyCdlib) -> bool:
    """Would isohybrid's backup GPT be written over the image's ISO 9660 data? (Call after the
    layout is consistent: the GPT's place follows from the image's size.)"""
    hybrid = iso.isohybrid_mbr
    if hybrid is None or not hybrid.efi:
        return False
    header = hybrid.secondary_gpt.header
    gpt_start = header.current_lba * 512 - header.num_parts * 128
    return bool(gpt_start < iso.pvd.space_size * iso.logical_block_size)


def check_layout(iso: pycdlib.PyCdlib, out: Path) -> None:
    """Refuse to write an image whose own structures would overlap its data."""
    if hybrid_tail_overlaps(iso):
        raise MkrecError(
            f"{out}: the hybrid image's backup GPT would overwrite its last files",
            hint="this is a bug in mkrec; please report it with the output of mkrec --debug",
        )


def finish_iso(iso: pycdlib.PyCdlib, out: Path, progress: ProgressCallback | None = None) -> Path:
    tmp = out.with_name(out.name + ".part")
    cb = (lambda done, total, _opaque: progress(done, total)) if progress else None
    try:
        iso.force_consistency()
        check_layout(iso, out)
        iso.write(str(tmp), progress_cb=cb)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MkrecError(
            f"cannot write {out}: {exc.strerror or exc}", hint="check free space there"
        ) from None
    finally:
        iso.close()
    tmp.chmod(0o600)
    tmp.replace(out)
    return out
