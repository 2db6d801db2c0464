"""Which present disk receives which saved disk. Pure decisions: the facts come in as values.

Names are not trusted (sda may be vda now): an explicit --map wins; then a disk with the same
WWN or serial; then the only disk that is large enough (start) or the only candidate (clone);
among several that fit equally well (a RAID's identical disks), the one with the saved disk's name.
Anything else is ambiguous: asked interactively, refused under --yes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mkrec.errors import MkrecError
from mkrec.restore.decide.model import SavedDisk
from mkrec.restore.decide.present import AUTO_TYPES, PresentDisk
from mkrec.sizes import format_size

# (saved disk, candidates) -> the chosen one, or None to stop. Given only when a person can answer.
Chooser = Callable[[SavedDisk, list[PresentDisk]], PresentDisk | None]


@dataclass(frozen=True)
class DiskChoice:
    saved: SavedDisk
    target: PresentDisk
    how: str  # "--map", "same WWN", "same serial", "only disk large enough", "chosen"


def _short(name: str) -> str:
    return name.removeprefix("/dev/")


def parse_map(items: list[str]) -> dict[str, str]:
    """["sda=/dev/vdb", ...] -> {"sda": "/dev/vdb"}; errors name the bad item."""
    out: dict[str, str] = {}
    for item in items:
        saved, eq, dev = item.partition("=")
        if not eq or not saved.strip() or not dev.strip():
            raise MkrecError(f"--map {item!r}: write it as SAVED=DEV", hint="e.g. --map sda=/dev/vdb")
        key = _short(saved.strip())
        if key in out:
            raise MkrecError(f"--map names saved {key} twice")
        out[key] = dev.strip()
    return out


def _check_target(
    saved: SavedDisk, disk: PresentDisk, protected: Mapping[str, str], need_same_size: bool
) -> None:
    if disk.path in protected:
        raise MkrecError(
            f"refusing to write {disk.path}: {protected[disk.path]}",
            hint=f"choose another disk for saved {_short(saved.name)} with --map {_short(saved.name)}=DEV",
        )
    if disk.readonly:
        raise MkrecError(f"refusing to write {disk.path}: it is read-only")
    if need_same_size and disk.size < saved.size:
        raise MkrecError(
            f"{disk.path} ({format_size(disk.size)}) is smaller than saved disk {_short(saved.name)} "
            f"({format_size(saved.size)}); nothing was written",
            hint="start-restore needs a disk of the same size or larger; use 'mkrec restore clone' to shrink",
        )


def map_disks(
    saved: list[SavedDisk],
    present: list[PresentDisk],
    explicit: Mapping[str, str],
    protected: Mapping[str, str],
    *,
    need_same_size: bool,
    choose: Chooser | None = None,
) -> list[DiskChoice]:
    """Decide a target for every saved disk, or raise MkrecError saying what to do."""
    by_path = {d.path: d for d in present}
    known = {_short(s.name): s for s in saved}
    for key in explicit:
        if key not in known:
            raise MkrecError(
                f"--map {key}=...: there is no saved disk {key}", hint=f"saved disks: {', '.join(known)}"
            )
    used: set[str] = set()
    choices: list[DiskChoice] = []
    for disk in saved:
        key = _short(disk.name)
        if key in explicit:
            dev = explicit[key]
            if dev not in by_path:
                raise MkrecError(
                    f"--map {key}={dev}: {dev} is not a disk here", hint="see lsblk for the disks"
                )
            target, how = by_path[dev], "--map"
        else:
            target, how = _auto(disk, present, used, protected, need_same_size, choose)
        if target.path in used:
            raise MkrecError(f"{target.path} was chosen for two saved disks", hint="give each its own --map")
        _check_target(disk, target, protected, need_same_size)
        used.add(target.path)
        choices.append(DiskChoice(disk, target, how))
    return choices


def same_name(key: str, candidates: list[PresentDisk]) -> PresentDisk | None:
    """The tie-break between disks that fit equally: the one still called what the saved disk was
    (two identical disks of a RAID1 go back where they were), when there is one."""
    named = [d for d in candidates if _short(d.path) == key]
    return named[0] if len(named) == 1 else None


def _auto(
    disk: SavedDisk,
    present: list[PresentDisk],
    used: set[str],
    protected: Mapping[str, str],
    need_same_size: bool,
    choose: Chooser | None,
) -> tuple[PresentDisk, str]:
    key = _short(disk.name)
    free = [d for d in present if d.path not in used and d.path not in protected and d.type in AUTO_TYPES]
    for attr, how in (("wwn", "same WWN"), ("serial", "same serial")):
        wanted = getattr(disk, attr)
        same = [d for d in free if wanted and getattr(d, attr) == wanted]
        if len(same) == 1:
            return same[0], how
    fits = [d for d in free if not d.readonly and (d.size >= disk.size or not need_same_size)]
    exact = [d for d in fits if d.size == disk.size and (not disk.model or d.model == disk.model)]
    if len(exact) == 1:
        return exact[0], "same size"
    if len(fits) == 1:
        return fits[0], "only disk large enough" if need_same_size else "only free disk"
    if not fits:
        size = f" of {format_size(disk.size)} or more" if need_same_size else ""
        raise MkrecError(
            f"no disk{size} is free for saved disk {key}",
            hint=f"attach one, or name it with --map {key}=DEV (protected: {', '.join(protected) or 'none'})",
        )
    named = same_name(key, exact if len(exact) > 1 else fits)
    if named is not None:
        return named, "same name"
    if choose is not None:
        picked = choose(disk, fits)
        if picked is not None:
            return picked, "chosen"
    names = ", ".join(d.path for d in fits)
    raise MkrecError(
        f"saved disk {key} ({format_size(disk.size)}) could go to any of {names}",
        hint=f"name the target with --map {key}=DEV",
    )
