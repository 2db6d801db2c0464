"""clone-disk's maths: a saved partition table recomputed for a disk of another size. Pure functions.

Partitions whose size has a meaning keep it (ESP, BIOS boot, /boot, swap unless asked, images,
partitions without a filesystem we can recreate); the others, LVM physical volumes included, share
what is left in proportion to their old sizes. On a larger disk, ext2/3/4 and NTFS images grow with
the others (the restore grows the file system to fill its partition); they never shrink. Every start
is aligned to 1 MiB, and nothing is accepted that cannot hold its data. The LVs of a VG whose PVs
changed size: mkrec.restore.decide.lvresize."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from mkrec.errors import MkrecError
from mkrec.restore.decide.model import SavedFs
from mkrec.restore.decide.sfdisk import MIB, Partition, Table
from mkrec.sizes import format_size

ESP_TYPES = frozenset({"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "ef"})
BIOS_BOOT_TYPES = frozenset({"21686148-6449-6e6f-744e-656564454649"})
GPT_BACKUP_SECTORS = 33  # the backup GPT (header + 32 sectors of entries) at the disk's end
RESIZABLE_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "swap"})
# Images whose file system the restore grows to fill a larger node (mkrec.restore.apply.unpack.grow_to_node)
GROWABLE_IMAGES = frozenset({"ext2", "ext3", "ext4", "ntfs"})


def align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def align_down(value: int, align: int) -> int:
    return value // align * align


def min_fs_bytes(fstype: str, used: int) -> int:
    """The least room a new filesystem needs to take back `used` bytes of data: 10 % slack plus
    room for the journal and metadata; mkfs.xfs refuses filesystems under 300 MiB."""
    if fstype == "swap":
        return MIB
    need = used + used // 10 + 16 * MIB
    if fstype == "xfs":
        need = max(need, 300 * MIB)
    return need


def need_bytes(fs: SavedFs) -> int:
    """The one fit rule: the least room a node must have to take fs back. An image needs its whole
    file system; files need a new file system with room for them; 0 when nothing of fs comes back."""
    if fs.raw:
        return fs.size
    if fs.stream:
        return min_fs_bytes(fs.fstype, fs.used)
    return 0


def fixed_reason(
    part: Partition,
    fs: SavedFs | None,
    resize_swap: bool = False,
    pv: bool = False,
    growing: bool = False,
    stacked: Stacked | None = None,
) -> str:
    """Why this partition keeps its size ("" when it is scaled). pv: it is an LVM physical volume;
    growing: the new disk is not smaller than the old one; stacked: it is a RAID member or a LUKS
    container."""
    ptype = part.type.lower().removeprefix("0x")
    if ptype in ESP_TYPES:
        return "ESP"
    if ptype in BIOS_BOOT_TYPES:
        return "BIOS boot"
    if pv and fs is None:
        return ""
    if stacked is not None:
        # The array or container is made anew on the partition and takes its size: it grows with
        # it, and shrinks with it only when what it holds says how much room it needs.
        return "" if growing or stacked.need is not None else stacked.what
    return fs_fixed_reason(fs, resize_swap, growing)


@dataclass(frozen=True)
class Stacked:
    """What a partition holds when it is a RAID member or a LUKS container."""

    what: str  # "raid md0", "luks vda3_crypt"
    need: int | None  # bytes the partition needs for it; None: not known (it only grows)


# Room mdadm takes on each member besides the data: the superblock, the bitmap and the data offset,
# which metadata 1.2 makes up to 128 MiB on large members.
MD_RESERVE = 130 * MIB
# The header cryptsetup writes before the data: 16 MiB for LUKS2, 2 MiB for LUKS1.
LUKS_RESERVE = {1: 2 * MIB, 2: 16 * MIB}


def member_need(level: str, members: int, content_need: int) -> int:
    """What each member of a new array needs so that the array holds content_need bytes."""
    data_members = {
        "raid0": members,
        "linear": members,
        "raid4": members - 1,
        "raid5": members - 1,
        "raid6": members - 2,
        "raid10": members // 2,
    }
    share = max(data_members.get(level, 1), 1)  # raid1: every member holds all of it
    return -(-content_need // share) + MD_RESERVE


def fs_fixed_reason(fs: SavedFs | None, resize_swap: bool = False, growing: bool = False) -> str:
    """Why a partition or an LV holding fs keeps its size ("" when it is scaled)."""
    if fs is None:
        return "no filesystem"
    if fs.raw:
        return "" if growing and fs.fstype in GROWABLE_IMAGES else "raw image"
    if fs.fstype not in RESIZABLE_FS:
        return f"{fs.fstype} not recreated"
    if fs.mountpoint == "/boot":
        return "/boot"
    if fs.is_swap and not resize_swap:
        return "swap"
    return ""


@dataclass(frozen=True)
class Row:
    """One line of the before/after table."""

    number: int
    what: str  # mount point, "swap", fs type or partition name
    old_size: int  # bytes
    new_size: int  # bytes
    fixed: str  # why the size is kept, "" when scaled
    need: int  # bytes the data needs


@dataclass(frozen=True)
class CloneLayout:
    table: Table
    rows: tuple[Row, ...]


def usable_end(disk_bytes: int, table: Table) -> int:
    """The first sector after the last one a partition may use, aligned down to 1 MiB."""
    sectors = disk_bytes // table.sector_size
    if table.label == "gpt":
        sectors -= GPT_BACKUP_SECTORS + 1
    return align_down(sectors, MIB // table.sector_size)


def clone_layout(
    table: Table,
    old_disk_bytes: int,
    new_disk_bytes: int,
    filesystems: Mapping[int, SavedFs],
    resize_swap: bool = False,
    pvs: Mapping[int, str] | None = None,
    stacked: Mapping[int, Stacked] | None = None,
) -> CloneLayout:
    """Recompute `table` (from a disk of old_disk_bytes) for a disk of new_disk_bytes.
    filesystems: partition number -> what it holds; pvs: partition number -> the volume group it is
    a physical volume of (scaled; whether its LVs fit is for lvresize); stacked: partition number ->
    the RAID array it is a member of or the LUKS container it is. Raises MkrecError when the data
    will not fit."""
    pvs = pvs or {}
    stacked = stacked or {}
    if any(p.is_extended for p in table.partitions):
        raise MkrecError(
            "clone-disk cannot recompute MBR extended/logical partitions",
            hint="edit the saved table by hand, or use start-restore onto a disk as large as the old one",
        )
    sector = table.sector_size
    align = max(MIB // sector, 1)
    parts = sorted(table.partitions, key=lambda p: p.start)
    if not parts:
        return CloneLayout(table, ())
    head = align_up(parts[0].start, align)
    growing = new_disk_bytes >= old_disk_bytes
    reasons = {
        p.number: fixed_reason(
            p, filesystems.get(p.number), resize_swap, p.number in pvs, growing, stacked.get(p.number)
        )
        for p in parts
    }
    fixed_total = sum(align_up(p.size, align) for p in parts if reasons[p.number])
    flex = [p for p in parts if not reasons[p.number]]
    old_limit = usable_end(old_disk_bytes, table)
    new_limit = usable_end(new_disk_bytes, table)
    old_room = old_limit - head - fixed_total
    new_room = new_limit - head - fixed_total
    if new_room < len(flex) * align or (flex and old_room <= 0):
        raise MkrecError(
            f"a disk of {format_size(new_disk_bytes)} cannot hold the fixed-size partitions "
            f"({format_size(fixed_total * sector)})",
            hint="choose a larger target disk",
        )
    # The last partition filled the old disk: let the last scaled one fill the new disk.
    fills_disk = parts[-1].end + align >= old_limit
    sizes: dict[int, int] = {}
    for p in parts:
        if reasons[p.number]:
            sizes[p.number] = p.size
        else:
            sizes[p.number] = max(align_down(p.size * new_room // old_room, align), align)
            if _is_image(filesystems.get(p.number)):
                sizes[p.number] = max(sizes[p.number], p.size)  # an image never shrinks
    new_parts: list[Partition] = []
    cursor = head
    for i, p in enumerate(parts):
        start = align_up(cursor, align)
        size = sizes[p.number]
        is_last_flex = bool(flex) and p.number == flex[-1].number
        if is_last_flex:
            # Whatever the fixed partitions after it need; the rest can go to this one.
            after = sum(align_up(sizes[q.number], align) for q in parts[i + 1 :])
            room = new_limit - after - start
            size = room if fills_disk else min(size, room)
        new_parts.append(replace(p, start=start, size=size))
        cursor = start + size
    if cursor > new_limit:
        raise MkrecError(
            f"the partitions need {format_size(cursor * sector)}, the disk has {format_size(new_disk_bytes)}",
            hint="choose a larger target disk",
        )
    rows = []
    too_small = []
    for p in sorted(new_parts, key=lambda p: p.number):
        fs = filesystems.get(p.number)
        old = table.partition(p.number)
        need = 0
        if fs and not reasons[p.number]:
            need = old.size * sector if _is_image(fs) else min_fs_bytes(fs.fstype, fs.used)
        held = stacked.get(p.number)
        if held is not None and not reasons[p.number]:
            need = held.need or 0
        what = (fs.mountpoint or fs.fstype) if fs else (f"pv {pvs[p.number]}" if p.number in pvs else "")
        what = what or (held.what if held else "")
        what = what or old.name or old.type
        rows.append(Row(p.number, what, old.size * sector, p.size * sector, reasons[p.number], need))
        if p.size * sector < need:
            too_small.append(
                f"partition {p.number} ({what}): {format_size(p.size * sector)} < {format_size(need)}"
            )
    if too_small:
        raise MkrecError(
            "the data will not fit on the smaller disk: " + "; ".join(too_small),
            hint="choose a larger target disk, or free space on the saved filesystems",
        )
    return CloneLayout(table.with_partitions(tuple(sorted(new_parts, key=lambda p: p.number))), tuple(rows))


def _is_image(fs: SavedFs | None) -> bool:
    return bool(fs and fs.raw)


def render_rows(rows: tuple[Row, ...] | list[Row]) -> str:
    """The before/after table shown before anything is written."""
    lines = [f"{'part':>4}  {'holds':<16} {'before':>10} {'after':>10}  note"]
    for r in rows:
        note = f"kept ({r.fixed})" if r.fixed else (f"needs {format_size(r.need)}" if r.need else "scaled")
        lines.append(
            f"{r.number:>4}  {r.what:<16} {format_size(r.old_size):>10} {format_size(r.new_size):>10}  {note}"
        )
    return "\n".join(lines)


def scale_volumes(sizes: list[tuple[int, bool]], old_total: int, new_total: int, extent: int) -> list[int]:
    """LVs in a VG whose PV changed size: (size, fixed) in bytes -> new sizes, whole extents.
    Fixed ones keep their size; the others keep their share of what is left."""
    fixed = sum(size for size, is_fixed in sizes if is_fixed)
    old_room, new_room = old_total - fixed, new_total - fixed
    if new_room < 0 or (old_room <= 0 and not all(is_fixed for _, is_fixed in sizes)):
        raise MkrecError(
            f"the volume group would be {format_size(new_total)}, less than its fixed volumes need",
            hint="choose a larger target disk",
        )
    return [size if is_fixed else align_down(size * new_room // old_room, extent) for size, is_fixed in sizes]
