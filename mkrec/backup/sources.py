"""What gets backed up and how: the file systems mounted under [source] root (tar), the partitions
in [source] raw and the captured layout's file systems that are not mounted (images, see
imaging.py), with the exact tar command for each."""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkrec.backup.imaging import mounted_on
from mkrec.context import Context
from mkrec.errors import die
from mkrec.layout.model import Layout
from mkrec.runner import run, run_json

log = logging.getLogger("mkrec")

# File systems tar carries with every attribute; anything else on a block device is imaged.
TAR_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "jfs", "reiserfs", "f2fs", "vfat", "exfat"}
# What findmnt shows for a FUSE mount (ntfs-3g) or nothing: blkid tells the file system.
UNNAMED_FS = {"", "fuseblk"}


@dataclass(frozen=True)
class Source:
    device: str
    fstype: str
    mountpoint: str  # on the backed-up system: "/" for root, "/home", ...
    path: Path  # where it is mounted here (root joined with mountpoint)
    kind: str  # tar | image

    @property
    def stream(self) -> str:
        name = os.path.basename(self.device) or "dev"
        return f"{name}.{self.fstype or 'raw'}.{'tar' if self.kind == 'tar' else 'img'}.zst"


def used_bytes(mountpoint: Path | str) -> int:
    """Bytes in use on the file system mounted there (what tar will read, near enough)."""
    st = os.statvfs(mountpoint)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def mounted_filesystems(root: Path) -> list[tuple[str, str, str]]:
    """(target, source, fstype) of block-device mounts at or under root, outermost first."""
    return visible_mounts(run_json(["findmnt", "-J", "-l", "-o", "TARGET,SOURCE,FSTYPE"]), root)


def visible_mounts(findmnt: dict[str, Any], root: Path) -> list[tuple[str, str, str]]:
    """The mounts `findmnt -J -l` lists (in mount order) at or under root. Of two mounted on one
    directory only the later is seen there: the one under it is hidden, and reading the directory
    twice would save the top one twice."""
    by_target: dict[str, tuple[str, str, str]] = {}
    root_s = str(root).rstrip("/") or "/"
    for fs in findmnt.get("filesystems") or []:
        target, source, fstype = fs.get("target") or "", fs.get("source") or "", fs.get("fstype") or ""
        inside = target == root_s or target.startswith(root_s.rstrip("/") + "/")
        if not inside:
            continue
        by_target.pop(target, None)  # stacked: the later mount hides the earlier one
        # bind mounts show as /dev/x[/subdir]: the file system itself is backed up where it is mounted
        if source.startswith("/dev/") and "[" not in source:
            by_target[target] = (target, source, fstype)
    return sorted(by_target.values(), key=lambda t: t[0])


def block_id(path: str) -> int | None:
    """The device number of a block device node (links followed); None for anything else."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISBLK(st.st_mode) else None


def device_node(name: str) -> str | None:
    """The /dev node of a device as the layout names it: "sda1", "md0", "cryptdata", "vg0/root"
    (an LV by its /dev/mapper name, which stays unique across volume groups)."""
    mapper = "/dev/mapper/" + name.replace("-", "--").replace("/", "-")
    candidates = [mapper, f"/dev/{name}"] if "/" in name else [f"/dev/{name}", f"/dev/mapper/{name}"]
    return next((c for c in candidates if block_id(c) is not None), None)


def probe_fstype(device: str) -> str:
    """The file system on device by its signature (blkid's TYPE); "raw" when it has none."""
    proc = run(["blkid", "-c", "/dev/null", "-o", "value", "-s", "TYPE", device], check=False)
    return proc.stdout.strip() or "raw"


def _relative(root: Path, target: str) -> str:
    rel = posixpath.relpath(target, str(root))
    return "/" if rel == "." else "/" + rel


def sources(ctx: Context, never: list[Path], layout: Layout | None = None) -> list[Source]:
    """Every file system to back up: tar for what tar carries, images for [source] raw and the rest,
    and images of the layout's file systems that are not mounted (an ESP, a spare data partition).
    `never`: directories that must not be backed up as file systems (the output directory)."""
    cfg = ctx.config.source
    raw = set(cfg.raw)
    found: list[Source] = []
    seen: set[str] = set()
    for target, device, fstype in mounted_filesystems(cfg.root):
        mp = _relative(cfg.root, target)
        if device in seen or any(Path(target).is_relative_to(n) for n in never):
            continue
        if any(fnmatch.fnmatch(mp, pat) for pat in cfg.exclude):
            continue
        seen.add(device)
        if fstype in UNNAMED_FS:
            fstype = probe_fstype(device)
        kind = "tar" if fstype in TAR_FS and device not in raw else "image"
        found.append(Source(device, fstype, mp, Path(target), kind))
    for device in cfg.raw:
        if device not in seen:
            seen.add(device)
            found.append(Source(device, probe_fstype(device), "", Path(device), "image"))
    if layout is not None:
        found += unmounted_sources(layout, seen)
    return found


def backup_sources(ctx: Context, never: list[Path], layout: Layout | None) -> list[Source]:
    """sources(), refusing a run that would back up nothing."""
    found = sources(ctx, never, layout)
    if not found:
        die(
            f"nothing to back up: no file system is mounted under {ctx.config.source.root}",
            hint="see [source] root",
        )
    return found


def unmounted_sources(layout: Layout, seen: set[str]) -> list[Source]:
    """Images of the layout's file systems that nothing above covers and that are not mounted at all
    (one mounted outside [source] root may be changing, so it is named, not imaged)."""
    covered = {block_id(d) for d in seen} - {None}
    out = []
    for fs in layout.filesystems:
        if fs.mountpoint:
            continue
        node = device_node(fs.device)
        if node is None:
            log.warning(
                "warning: %s (%s) is in the layout but has no device node here: not backed up",
                fs.device,
                fs.type,
            )
            continue
        dev_id = block_id(node)
        if dev_id in covered:
            continue
        elsewhere = mounted_on(node)
        if elsewhere:
            log.warning(
                "warning: %s is mounted at %s, outside [source] root: not backed up", node, elsewhere[0][0]
            )
            continue
        log.info("%s (%s) is not mounted: it is imaged", node, fs.type)
        covered.add(dev_id)
        out.append(Source(node, fs.type, "", Path(node), "image"))
    return out


def tar_argv(src: Source, excludes: tuple[str, ...], never: list[Path]) -> list[str]:
    """GNU tar for one file system: POSIX format (xattrs, ACLs, SELinux labels, long names),
    numeric owners, sparse files, no crossing into other mounts. Excludes written as absolute paths
    on the backed-up system are anchored at this file system's top."""
    argv = [
        "tar",
        "--create",
        "--file=-",
        "--format=posix",
        "--one-file-system",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--selinux",
        "--sparse",
        "--warning=no-file-ignored",
        f"--directory={src.path}",
    ]
    anchored, floating = split_excludes(src, excludes, never)
    if anchored:
        argv.append("--anchored")
        argv += [f"--exclude={p}" for p in anchored]
    if floating:
        argv.append("--no-anchored")
        argv += [f"--exclude={p}" for p in floating]
    argv.append(".")
    return argv


def split_excludes(src: Source, excludes: tuple[str, ...], never: list[Path]) -> tuple[list[str], list[str]]:
    """([source] exclude + the output directories) for one file system: patterns anchored at its top
    ("./tmp/*", for absolute patterns that fall inside it) and patterns that match anywhere."""
    anchored = []
    floating = []
    for pat in excludes:
        if pat.startswith("/"):
            top = src.mountpoint.rstrip("/")
            if not top:
                anchored.append("." + pat)
            elif pat.startswith(top + "/"):
                anchored.append("." + pat[len(top) :])
        else:
            floating.append(pat)
    for n in never:
        if n.is_relative_to(src.path):
            rel = n.relative_to(src.path).as_posix()
            if rel != ".":
                anchored.append("./" + rel)
    return anchored, floating
