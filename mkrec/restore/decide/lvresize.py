"""clone-disk's maths for LVM: a volume group whose physical volumes changed size (its PV partitions
were scaled by mkrec.restore.decide.resize) gets its LVs recomputed in proportion, in whole extents
(resize.scale_volumes). Like partitions, LVs whose size has a meaning keep it: swap unless asked,
/boot, raw images, LVs holding no filesystem we recreate (a LUKS container, say). Nothing is
accepted that cannot hold its data. Pure functions, plus the text file in which a person at the
terminal may change the proposed sizes before anything is written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from mkrec.errors import MkrecError
from mkrec.layout.model import VolumeGroup
from mkrec.restore.decide.model import SavedFs, SavedSystem
from mkrec.restore.decide.resize import align_down, align_up, fs_fixed_reason, min_fs_bytes, scale_volumes
from mkrec.sizes import format_size, parse_size

# saved partition name ("sda3") -> (its bytes on the saved disk, its bytes on the target disk)
Resized = Mapping[str, tuple[int, int]]

LV_FILE_HEADER = """\
# clone-disk: the new sizes of the logical volumes, in bytes. Change the "after" column if you like
# (a size such as 512M or 2.5G is fine too; it is rounded up to whole extents), save the file, then
# press Enter at the prompt. A volume group must hold its LVs, an LV must hold its data ("needs").
# lv                         before          after
"""


@dataclass(frozen=True)
class LvRow:
    """One line of the LV before/after table."""

    name: str  # "vg0/root"
    what: str  # mount point, "swap", fs type, "luks <name>", "-"
    old_size: int  # bytes
    new_size: int  # bytes
    fixed: str  # why the size is kept, "" when scaled
    need: int  # bytes its data needs (0: nothing to check)
    used: int  # bytes in use on its filesystem
    vg_size: int  # bytes of extents its volume group has on the target disks
    extent: int  # the VG's extent size, bytes

    @property
    def vg(self) -> str:
        return self.name.split("/", 1)[0]


def vg_bytes(vg: VolumeGroup, resized: Resized) -> tuple[int, int] | None:
    """(saved, new) bytes of the VG's extents; None when a PV's size was not captured. A PV keeps
    its header and the tail that did not fill an extent, so it never counts more than there is."""
    old = new = 0
    for pv in vg.pvs:
        if pv.size is None:
            return None
        old += pv.size
        if pv.device in resized:
            before, after = resized[pv.device]
            new += align_down(max(after - (before - pv.size), 0), vg.extent_size)
        else:
            new += pv.size
    return old, new


def _holds(system: SavedSystem, vg: VolumeGroup, lv: str) -> tuple[SavedFs | None, str]:
    """What an LV holds: its filesystem (or swap), and a word for the table."""
    fs = system.fs_on(f"/dev/{vg.name}/{lv}")
    if fs is not None:
        return fs, fs.mountpoint or fs.fstype
    luks = next((c.name for c in system.luks if c.device == f"{vg.name}/{lv}"), None)
    return None, f"luks {luks}" if luks else "-"


def _fixed_reason(fs: SavedFs | None, what: str, resize_swap: bool) -> str:
    """Why an LV keeps its size ("" when it is scaled), as for a partition holding the same."""
    if fs is None and what.startswith("luks "):
        return "LUKS"
    return fs_fixed_reason(fs, resize_swap)


def scale_vg(
    vg: VolumeGroup, system: SavedSystem, resized: Resized, resize_swap: bool = False
) -> tuple[VolumeGroup, tuple[LvRow, ...]]:
    """The VG with its LVs sized for the target disks, and its rows. Raises MkrecError (nothing is
    written yet) when the fixed-size LVs or an LV's data would not fit."""
    held = [_holds(system, vg, lv.name) for lv in vg.lvs]
    reasons = [_fixed_reason(fs, what, resize_swap) for fs, what in held]
    totals = vg_bytes(vg, resized)
    if totals is None:
        reasons = [r or "PV size not captured" for r in reasons]
        totals = (sum(lv.size for lv in vg.lvs),) * 2
    old_total, new_total = totals
    fixed = sum(lv.size for lv, why in zip(vg.lvs, reasons, strict=True) if why)
    if new_total < fixed:
        raise MkrecError(
            f"volume group {vg.name} would have {format_size(new_total)} on the target disks, less than "
            f"its fixed-size LVs take ({format_size(fixed)}); nothing was written",
            hint="choose a larger target disk",
        )
    sizes = scale_volumes(
        [(lv.size, bool(why)) for lv, why in zip(vg.lvs, reasons, strict=True)],
        old_total,
        new_total,
        vg.extent_size,
    )
    rows = []
    for lv, (fs, what), why, size in zip(vg.lvs, held, reasons, sizes, strict=True):
        need = min_fs_bytes(fs.fstype, fs.used) if fs is not None and not why else 0
        used = fs.used if fs is not None else 0
        rows.append(
            LvRow(f"{vg.name}/{lv.name}", what, lv.size, size, why, need, used, new_total, vg.extent_size)
        )
    check_rows(rows)
    return with_sizes(vg, rows), tuple(rows)


def scale_vgs(
    system: SavedSystem, resized: Resized, resize_swap: bool = False
) -> tuple[tuple[VolumeGroup, ...], tuple[LvRow, ...]]:
    vgs: list[VolumeGroup] = []
    rows: list[LvRow] = []
    for vg in system.vgs:
        new_vg, vg_rows = scale_vg(vg, system, resized, resize_swap)
        vgs.append(new_vg)
        rows += vg_rows
    return tuple(vgs), tuple(rows)


def with_sizes(vg: VolumeGroup, rows: list[LvRow] | tuple[LvRow, ...]) -> VolumeGroup:
    size = {r.name: r.new_size for r in rows}
    return replace(vg, lvs=tuple(replace(lv, size=size[f"{vg.name}/{lv.name}"]) for lv in vg.lvs))


def check_rows(rows: list[LvRow] | tuple[LvRow, ...], where: str = "") -> None:
    """Every LV holds its data, every VG its LVs; else one line naming the LV and the space."""
    for r in rows:
        if r.new_size < r.need:
            raise MkrecError(
                f"{where}LV {r.name} ({r.what}, {format_size(r.used)} used) needs {format_size(r.need)}, "
                f"but gets {format_size(r.new_size)} of the {format_size(r.vg_size)} volume group "
                f"{r.vg}; nothing was written",
                hint="choose a larger target disk, or free space on the saved filesystems",
            )
    for vg in dict.fromkeys(r.vg for r in rows):
        mine = [r for r in rows if r.vg == vg]
        total = sum(r.new_size for r in mine)
        if total > mine[0].vg_size:
            raise MkrecError(
                f"{where}the LVs of volume group {vg} take {format_size(total)}, it has "
                f"{format_size(mine[0].vg_size)}; nothing was written",
                hint="make some LVs smaller",
            )


def _note(r: LvRow) -> str:
    if r.fixed:
        return f"kept ({r.fixed})"
    return f"needs {format_size(r.need)}" if r.need else "scaled"


def render_lv_rows(rows: tuple[LvRow, ...] | list[LvRow]) -> str:
    """The LV lines of the before/after table shown before anything is written."""
    lines = [f"{'lv':<16} {'holds':<16} {'before':>10} {'after':>10}  note"]
    for r in rows:
        before, after = format_size(r.old_size), format_size(r.new_size)
        lines.append(f"{r.name:<16} {r.what:<16} {before:>10} {after:>10}  {_note(r)}")
    return "\n".join(lines)


def render_lv_file(rows: tuple[LvRow, ...]) -> str:
    """The editable list of LV sizes: name, bytes before, bytes after, and a comment."""
    lines = [LV_FILE_HEADER.rstrip("\n")]
    for vg in dict.fromkeys(r.vg for r in rows):
        first = next(r for r in rows if r.vg == vg)
        lines.append(
            f"# volume group {vg}: {first.vg_size} bytes ({format_size(first.vg_size)}), "
            f"extents of {format_size(first.extent)}"
        )
        for r in rows:
            if r.vg == vg:
                lines.append(f"{r.name:<24} {r.old_size:>14} {r.new_size:>14}   # {r.what}, {_note(r)}")
    return "\n".join(lines) + "\n"


def parse_lv_file(text: str, where: str, rows: tuple[LvRow, ...]) -> tuple[LvRow, ...]:
    """The rows with the sizes of the edited file (LVs left out keep the proposed size)."""
    by_name = {r.name: r for r in rows}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 3:
            raise MkrecError(f"{where}:{n}: expected 'vg/lv before after', got {line.strip()!r}")
        name, _, after = fields
        if name not in by_name:
            raise MkrecError(f"{where}:{n}: there is no LV {name}", hint=f"the LVs are {', '.join(by_name)}")
        try:
            size = parse_size(after)
        except ValueError as exc:
            raise MkrecError(f"{where}:{n}: {name}: {exc}") from None
        row = by_name[name]
        by_name[name] = replace(row, new_size=align_up(size, row.extent))
    edited = tuple(by_name[r.name] for r in rows)
    check_rows(edited, f"{where}: ")
    return edited
