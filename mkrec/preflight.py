"""`mkrec preflight` (= `make test`): checks the machine before a build, one row per check,
PASS / WARN / FAIL, each FAIL with the fix. Exit 1 on any FAIL."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from mkrec.backup.frames import FRAME_SIZE
from mkrec.backup.setkey import describe_security
from mkrec.backup.sources import mounted_filesystems
from mkrec.config import Mode
from mkrec.context import Context
from mkrec.errors import MkrecError, die
from mkrec.iso import HYBRID_TAIL_MAX
from mkrec.kernel import find_kernel
from mkrec.layout.parse import md_degraded
from mkrec.layout.sourcedisks import SYS_BLOCK, disks_to_back_up
from mkrec.restic.repo import readiness
from mkrec.runner import which
from mkrec.sizes import format_size
from mkrec.tools import PACKAGE, needed_tools

# Room the staging tree needs next to a volume (kernel, initrd, root RAM disk, EFI image).
STAGING_ESTIMATE = 512 * 1024**2
# What the rescue system occupies in RAM once unpacked (measured builds stay below this).
RESCUE_RAM_ESTIMATE = 512 * 1024**2
# What the rescue system takes on volume 1 before it was first built (measured: 69 MiB).
RESCUE_DISC_ESTIMATE = 80 * 1024**2
# Besides the rescue system, volume 1 holds its ISO metadata, the hybrid image's tail and at least
# one compressed frame of backup data (a frame that does not compress, and zstd's framing).
VOLUME_ROOM = 1024**2 + HYBRID_TAIL_MAX + FRAME_SIZE + 2 * 1024**2
ISOLINUX_FILES = [
    Path("/usr/lib/ISOLINUX/isolinux.bin"),
    Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"),
    Path("/usr/lib/syslinux/modules/bios/menu.c32"),
    Path("/usr/lib/syslinux/modules/bios/libutil.c32"),
]
GRUB_EFI_DIR = Path("/usr/lib/grub/x86_64-efi")
GRUB_BIOS_DIR = Path("/usr/lib/grub/i386-pc")


class Status(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Result:
    check: str
    status: Status
    detail: str
    fix: str = ""


def passed(check: str, detail: str) -> Result:
    return Result(check, Status.PASS, detail)


def warn(check: str, detail: str, fix: str = "") -> Result:
    return Result(check, Status.WARN, detail, fix)


def fail(check: str, detail: str, fix: str) -> Result:
    return Result(check, Status.FAIL, detail, fix)


# ---- the checks; each yields one or more rows ----


def check_root(ctx: Context) -> Iterable[Result]:
    if os.geteuid() == 0:
        yield passed("root", "running as root")
    else:
        yield fail("root", f"running as uid {os.geteuid()}", "run as root (sudo make)")


def check_tools(ctx: Context) -> Iterable[Result]:
    missing = [tool for tool in needed_tools(ctx.config) if which(tool) is None]
    for tool in missing:
        yield fail(f"tool {tool}", "not found", f"apt-get install {PACKAGE.get(tool, tool)}")
    if not missing:
        yield passed("tools", f"all {len(needed_tools(ctx.config))} needed tools present")


def check_kernel(ctx: Context) -> Iterable[Result]:
    try:
        kernel = find_kernel(ctx.config.rescue.kernel)
    except MkrecError as exc:
        yield fail("kernel", exc.message, exc.hint or "apt-get install linux-image-amd64")
        return
    yield passed("kernel", f"{kernel.image} with modules {kernel.modules}")


def check_boot_files(ctx: Context) -> Iterable[Result]:
    missing = [p for p in ISOLINUX_FILES if not p.is_file()]
    if missing:
        yield fail("isolinux", f"missing {missing[0]}", "apt-get install isolinux syslinux-common")
    else:
        yield passed("isolinux", "isolinux.bin and its modules present")
    if not (GRUB_EFI_DIR / "normal.mod").is_file():
        yield fail("grub efi", f"no GRUB EFI modules in {GRUB_EFI_DIR}", "apt-get install grub-efi-amd64-bin")
    else:
        yield passed("grub efi", f"GRUB EFI modules in {GRUB_EFI_DIR}")
    if not (GRUB_BIOS_DIR / "normal.mod").is_file():
        yield warn(
            "grub bios",
            f"no GRUB BIOS modules in {GRUB_BIOS_DIR}: restore cannot reinstall BIOS GRUB",
            "apt-get install grub-pc-bin",
        )
    else:
        yield passed("grub bios", f"GRUB BIOS modules in {GRUB_BIOS_DIR}")


def pe_is_signed(image: Path) -> bool:
    """Does a PE/COFF image (an EFI kernel) carry an Authenticode signature? Its optional header's
    certificate table (data directory 4) is then not empty."""
    with open(image, "rb") as fh:
        head = fh.read(4096)
    if head[:2] != b"MZ":
        return False
    pe = int.from_bytes(head[0x3C:0x40], "little")
    if head[pe : pe + 4] != b"PE\0\0":
        return False
    optional = pe + 24
    directories = optional + (112 if head[optional : optional + 2] == b"\x0b\x02" else 96)  # PE32+ / PE32
    size = int.from_bytes(head[directories + 4 * 8 + 4 : directories + 4 * 8 + 8], "little")
    return size > 0


def check_secure_boot(ctx: Context) -> Iterable[Result]:
    """The rescue disc boots under Secure Boot with Debian's signed shim, GRUB and kernel."""
    from mkrec.rescue.efi import SHIM, SIGNED_GRUB, signed_chain

    if signed_chain() is None:
        missing = " and ".join(str(p) for p in (SHIM, SIGNED_GRUB) if not p.is_file())
        yield warn(
            "secure boot",
            f"no {missing}: the rescue disc will not boot with Secure Boot enabled",
            "apt-get install shim-signed grub-efi-amd64-signed",
        )
        return
    try:
        kernel = find_kernel(ctx.config.rescue.kernel)
    except MkrecError:
        return  # the kernel row says what is wrong
    if not pe_is_signed(kernel.image):
        yield warn(
            "secure boot",
            f"{kernel.image} is not signed: the signed GRUB will refuse it with Secure Boot enabled",
            "use Debian's kernel (apt-get install linux-image-amd64) in [rescue] kernel",
        )
        return
    yield passed("secure boot", f"signed shim, GRUB and kernel {kernel.version}: boots with Secure Boot on")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def used_bytes_under(root: Path) -> int:
    """Bytes in use on the block-device file systems mounted at or under root: what the backup reads."""
    from mkrec.backup.sources import mounted_filesystems, used_bytes

    return sum(used_bytes(target) for target, _source, _fstype in mounted_filesystems(root))


def check_output_space(ctx: Context) -> Iterable[Result]:
    """The set stays in [build] output (mode cd) or [path] dir (mode path) whole, next to the
    staging tree: its size is the used bytes of the file systems, compressed. Compression is
    not known before the backup: FAIL below half the used bytes (what typical systems compress
    to), WARN below all of them (data that does not compress)."""
    cfg = ctx.config
    mode = cfg.build.mode
    target = cfg.path.dir if mode is Mode.PATH and cfg.path.dir is not None else cfg.build.output
    free = shutil.disk_usage(_existing_parent(target)).free
    if mode in (Mode.CD, Mode.PATH):
        try:
            used = used_bytes_under(cfg.source.root)
        except (MkrecError, OSError):
            used = 0
        worst = STAGING_ESTIMATE + used
        typical = STAGING_ESTIMATE + used // 2
        detail = (
            f"{format_size(free)} free in {target}; the set is the {format_size(used)} in use under "
            f"{cfg.source.root}, compressed (often to half), plus {format_size(STAGING_ESTIMATE)} of staging"
        )
    else:  # rescue, tape: only the rescue disc and, for tape, one volume's staging
        worst = typical = STAGING_ESTIMATE + (cfg.tape.capacity if mode is Mode.TAPE else 0)
        detail = f"{format_size(free)} free in {target}, need {format_size(worst)} (rescue disc + staging)"
    fix = "free space there, or set [build] output (mode path: [path] dir) to a larger disk"
    if free < typical:
        yield fail("output space", detail, fix)
    elif free < worst:
        yield warn("output space", detail + " — enough only if the data compresses", fix)
    else:
        yield passed("output space", detail)


def _device_of(path: Path) -> int:
    return os.stat(_existing_parent(path)).st_dev


def check_output_excluded(ctx: Context) -> Iterable[Result]:
    cfg = ctx.config
    out = cfg.build.output
    raw_devs = {os.stat(p).st_rdev for p in cfg.source.raw if Path(p).exists()}
    if _device_of(out) in raw_devs:
        yield fail(
            "output excluded",
            f"{out} is on a partition listed in [source] raw: it would image itself",
            "set [build] output to another filesystem",
        )
        return
    under_root = _existing_parent(out).is_relative_to(cfg.source.root)
    where = "inside" if under_root else "outside"
    yield passed(
        "output excluded", f"{out} is {where} {cfg.source.root}; it is always left out of the backup"
    )


def _meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) * 1024
    return 0


def rescue_ram_need(ctx: Context) -> int:
    """RAM the rescue system needs: the kernel unpacks both initrds into its rootfs, which may fill
    only half the RAM, so twice what the last build measured (an estimate before the first build)."""
    from mkrec.rescue import measured_rescue_size

    measured = measured_rescue_size(ctx.staging)
    return 2 * measured if measured else RESCUE_RAM_ESTIMATE


def check_ram(ctx: Context) -> Iterable[Result]:
    total = _meminfo("MemTotal")
    need = rescue_ram_need(ctx)
    detail = f"{format_size(total)} RAM; the rescue system needs about {format_size(need)}"
    if total < need:
        yield fail("ram", detail, "the rescue system will not fit; add RAM or trim [rescue] modules")
    elif total < 2 * need:
        yield warn("ram", detail + " — little left for restore buffers", "2 GiB or more is comfortable")
    else:
        yield passed("ram", detail)


def check_disks(ctx: Context) -> Iterable[Result]:
    try:
        disks = disks_to_back_up(ctx.config)
    except MkrecError as exc:
        yield fail("disks", f"cannot list block devices: {exc.message}", "apt-get install util-linux")
        return
    if not disks:
        yield warn(
            "disks",
            f"no disk holds a filesystem mounted under {ctx.config.source.root}",
            "set [source] disks, or check [source] root",
        )
    for disk in disks:
        yield from _check_disk(disk)


def check_raids(ctx: Context, sys_block: Path = SYS_BLOCK) -> Iterable[Result]:
    """A degraded array is backed up as it should be (see mkrec.layout.probe), but the administrator
    should know before the backup, not after."""
    for md in sorted(p.name for p in sys_block.glob("md*")):
        lacking = md_degraded(md, sys_block)
        if lacking:
            yield warn(
                f"raid {md}",
                f"degraded: {lacking} member(s) missing; the backup records the members it finds",
                f"see mdadm --detail /dev/{md}; add the member back (mdadm /dev/{md} --add DEV) "
                "or replace the disk",
            )


def _check_disk(disk: str, opener: Callable[[str, int], int] = os.open) -> Iterable[Result]:
    try:
        mode = os.stat(disk).st_mode
    except FileNotFoundError:
        yield fail(f"disk {disk}", "does not exist", "fix [source] disks in the config (see lsblk)")
        return
    if not stat.S_ISBLK(mode):
        yield fail(f"disk {disk}", "is not a block device", "fix [source] disks in the config (see lsblk)")
        return
    try:
        os.close(opener(disk, os.O_RDONLY))
    except OSError as exc:
        why = (
            "EPERM" if exc.errno in (errno.EPERM, errno.EACCES) else errno.errorcode.get(exc.errno or 0, "?")
        )
        yield warn(
            f"disk {disk}",
            f"cannot be opened ({why}): boot sectors and raw images are skipped; "
            "the layout comes from lsblk, sysfs and the mounted filesystems",
            "expected in some VMs; on a real machine check permissions",
        )
        return
    yield passed(f"disk {disk}", "present and readable")


def check_mode(ctx: Context) -> Iterable[Result]:
    cfg = ctx.config
    mode = cfg.build.mode
    if mode is Mode.PATH:
        target = cfg.path.dir
        if target is None:
            yield fail("path", "mode path needs [path] dir", 'set [path] dir = "/mnt/backup"')
        elif not target.is_dir():
            yield fail("path", f"{target} is not a directory", "create it, or mount the NFS/SMB share there")
        elif target.resolve() == cfg.build.output.resolve():
            yield fail(
                "path",
                f"{target} is also [build] output, where the rescue disc goes",
                "point [path] dir at another directory",
            )
        elif not os.access(target, os.W_OK):
            yield fail(
                "path", f"{target} is not writable", "fix its permissions or the share's mount options"
            )
        else:
            yield passed("path", f"{target} is writable")
    elif mode is Mode.TAPE:
        device = cfg.tape.device
        if not device.exists():
            yield fail(
                "tape", f"{device} does not exist", "load the st driver (modprobe st) or fix [tape] device"
            )
        elif not (stat.S_ISCHR(device.stat().st_mode) or device.is_file()):
            yield fail("tape", f"{device} is neither a tape device nor a file", "fix [tape] device")
        else:
            yield passed("tape", f"{device} present")
    if mode is Mode.CD and cfg.media.burn:
        drives = sorted(Path("/dev").glob("sr[0-9]*"))
        if which("xorriso") is None:
            yield fail("burner", "burn = true but xorriso is missing", "apt-get install xorriso")
        elif not drives:
            yield fail("burner", "burn = true but no optical drive (/dev/sr*)", "set [media] burn = false")
        else:
            yield passed("burner", f"xorriso and {drives[0]}")


def check_restic(ctx: Context) -> Iterable[Result]:
    if ctx.config.build.mode is not Mode.RESTIC:
        return
    ok, detail, fix = readiness(ctx.config)
    yield passed("restic", detail) if ok else fail("restic", detail, fix)


def smallest_media(rescue_disc: int) -> int:
    """The smallest [media] size whose volume 1 holds the rescue system and some backup data,
    rounded up to whole MiB."""
    return -(-(rescue_disc + VOLUME_ROOM) // 1024**2) * 1024**2


def media_verdict(ctx: Context, rescue_disc: int | None) -> Result | None:
    """Mode cd: does volume 1 hold the rescue system (measured, or estimated before the first
    build) and some backup? None when the mode writes no volumes."""
    cfg = ctx.config
    if cfg.build.mode is not Mode.CD:
        return None
    size = cfg.media.size
    rescue = f"{format_size(rescue_disc)}" if rescue_disc else f"about {format_size(RESCUE_DISC_ESTIMATE)}"
    need = smallest_media(rescue_disc or RESCUE_DISC_ESTIMATE)
    detail = f'[media] size = "{size}" ({format_size(size.capacity)}); the rescue system takes {rescue}'
    if size.capacity < need:
        return fail(
            "media",
            detail + ", so volume 1 has no room for backup data",
            f'set [media] size to at least "{need // 1024**2}M" (or "cd700", "dvd"), '
            "or build the rescue disc alone with --mode rescue",
        )
    return passed("media", detail)


def check_media(ctx: Context) -> Iterable[Result]:
    from mkrec.rescue import measured_rescue_size

    verdict = media_verdict(ctx, measured_rescue_size(ctx.staging, "disc"))
    if verdict:
        yield verdict


def check_security(ctx: Context) -> Iterable[Result]:
    """[security]: the recipients are age public keys, the passphrase file is private and readable."""
    try:
        yield passed("encryption", describe_security(ctx.config.security))
    except MkrecError as exc:
        yield fail("encryption", exc.message, exc.hint or "fix [security] in the config")


# Checks of the configuration alone: `mkrec build` runs them before any work, too.
def check_source(ctx: Context) -> Iterable[Result]:
    """[source] root must be a directory, with something mounted under it to back up."""
    cfg = ctx.config
    root = cfg.source.root
    if not root.is_dir():
        yield fail("source", f"[source] root {root} is not a directory", "set [source] root (usually /)")
        return
    if cfg.build.mode.writes_backup() and not cfg.source.raw and not mounted_filesystems(root):
        yield fail(
            "source",
            f"nothing to back up: no file system is mounted under [source] root {root}",
            "mount the system to back up there, or set [source] root",
        )
        return
    yield passed("source", f"file systems mounted under {root}")


CONFIG_CHECKS: list[Callable[[Context], Iterable[Result]]] = [
    check_mode,
    check_media,
    check_source,
    check_restic,
    check_security,
]


def require_config_ready(ctx: Context) -> None:
    """Stop `mkrec build` before any work on the first configuration FAIL, in one line."""
    for check in CONFIG_CHECKS:
        for result in check(ctx):
            if result.status is Status.FAIL:
                die(result.detail, hint=result.fix)


def require_room_for_rescue(ctx: Context, rescue_disc: int) -> None:
    """After the rescue system is built (its size now known exactly), before the backup starts."""
    verdict = media_verdict(ctx, rescue_disc)
    if verdict and verdict.status is Status.FAIL:
        die(verdict.detail, hint=verdict.fix)


CHECKS: list[Callable[[Context], Iterable[Result]]] = [
    check_root,
    check_tools,
    check_kernel,
    check_boot_files,
    check_secure_boot,
    check_output_space,
    check_output_excluded,
    check_ram,
    check_disks,
    check_raids,
    *CONFIG_CHECKS,
]


def run_checks(ctx: Context, config_error: MkrecError | None = None) -> list[Result]:
    results = []
    if config_error is not None:
        results.append(fail("config", config_error.message, config_error.hint or "fix the key named above"))
    else:
        source = ctx.config_path or "built-in defaults"
        results.append(passed("config", f"{source} is valid (mode {ctx.config.build.mode})"))
    for check in CHECKS:
        results.extend(check(ctx))
    return results


def print_results(results: list[Result], as_json: bool = False) -> None:
    if as_json:
        rows = [asdict(r) | {"status": str(r.status)} for r in results]
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    width = max(len(r.check) for r in results)
    for r in results:
        print(f"{r.status}  {r.check:<{width}}  {r.detail}")
        if r.status is not Status.PASS and r.fix:
            print(f"      {'':<{width}}  fix: {r.fix}")
    n = {s: sum(r.status is s for r in results) for s in Status}
    print(f"preflight: {n[Status.PASS]} passed, {n[Status.WARN]} warnings, {n[Status.FAIL]} failed")


def preflight(ctx: Context, config_error: MkrecError | None = None, as_json: bool = False) -> int:
    results = run_checks(ctx, config_error)
    print_results(results, as_json)
    return 1 if any(r.status is Status.FAIL for r in results) else 0
