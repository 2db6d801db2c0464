"""The plan: decided and shown before anything is written. Which disk gets which saved disk and which
partition table, which filesystem goes to which node, what will be erased. Building it reads
nothing but values, so every refusal (too small, protected, ambiguous, data does not fit) is
decided before the first write. clone-disk on a terminal lets the person edit the tables and the LV
sizes of the plan (edit_clone_tables); the edited plan is checked by the same rules."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.layout.model import RaidArray, VolumeGroup
from mkrec.layout.vgcfg import file_name, mismatch, parse_vgcfg
from mkrec.restore.ask import Input
from mkrec.restore.decide.lvresize import (
    LvRow,
    Resized,
    parse_lv_file,
    render_lv_file,
    render_lv_rows,
    scale_vgs,
    with_sizes,
)
from mkrec.restore.decide.mapping import Chooser, DiskChoice, map_disks
from mkrec.restore.decide.model import SavedFs, SavedSystem
from mkrec.restore.decide.present import PresentDisk
from mkrec.restore.decide.resize import (
    LUKS_RESERVE,
    Row,
    Stacked,
    clone_layout,
    member_need,
    need_bytes,
    render_rows,
)
from mkrec.restore.decide.sfdisk import Table, parse_dump, partition_node, render_script
from mkrec.restore.decide.stack import Nodes, below, layers, provides
from mkrec.sizes import format_size

log = logging.getLogger("mkrec.restore")


@dataclass(frozen=True)
class FsTarget:
    saved: SavedFs
    node: str  # where it goes now
    size: int  # bytes the new node will have (0: unknown, e.g. an LV)


@dataclass(frozen=True)
class DiskPlan:
    choice: DiskChoice
    table: Table  # what will be written onto choice.target
    rows: tuple[Row, ...] = ()  # clone: the before/after table

    @property
    def device(self) -> str:
        return self.choice.target.path


@dataclass(frozen=True)
class Plan:
    action: str  # start | clone
    disks: tuple[DiskPlan, ...]
    filesystems: tuple[FsTarget, ...]
    system: SavedSystem
    vgs: tuple[VolumeGroup, ...]  # what is made: the saved VGs, with clone-disk's LV sizes
    lv_rows: tuple[LvRow, ...] = ()  # clone: the LV before/after table
    # start: VG name -> its saved vgcfgbackup text, restored as it is (VG and LV UUIDs kept)
    vg_metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable for the same set, targets and tables: what a journal must match to be resumed."""
        data = {
            "set": self.system.set_id,
            "action": self.action,
            "disks": [(d.device, render_script(d.table, d.device)) for d in self.disks],
            "fs": [(f.saved.device, f.node, f.saved.uuid) for f in self.filesystems],
            "lvs": [(vg.name, lv.name, lv.size) for vg in self.vgs for lv in vg.lvs],
        }
        return stable_id(data)

    def node_map(self) -> dict[str, str]:
        return partition_nodes(self.disks)

    def nodes(self) -> Nodes:
        return stack_nodes(self.node_map(), self.system)

    def target(self, mountpoint: str) -> FsTarget | None:
        return next((f for f in self.filesystems if f.saved.mountpoint == mountpoint), None)


def stable_id(data: object) -> str:
    """A short id of JSON-able data: equal data, equal id (what a journal is matched by)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def partition_nodes(disks: Sequence[DiskPlan]) -> dict[str, str]:
    """Saved node -> node now, for every partition of every mapped disk."""
    return {
        d.choice.saved.node(p.number): partition_node(d.device, p.number)
        for d in disks
        for p in d.table.partitions
    }


def stack_nodes(partitions: dict[str, str], system: SavedSystem) -> Nodes:
    lvs = frozenset(f"{vg.name}/{lv.name}" for vg in system.vgs for lv in vg.lvs)
    return Nodes(partitions, lvs, frozenset(c.name for c in system.luks))


def _partition_of(fs: SavedFs, system: SavedSystem) -> tuple[str, int] | None:
    """(saved disk name, partition number) when fs lives directly on a partition of a saved disk."""
    for disk in system.disks:
        for p in disk.table.partitions:
            if disk.node(p.number) == fs.device:
                return disk.name, p.number
    return None


def resized_partitions(disks: tuple[DiskPlan, ...]) -> Resized:
    """Saved partition name ("sda3") -> (bytes on the saved disk, bytes in the table to write)."""
    out = {}
    for d in disks:
        saved = d.choice.saved
        old = {p.number: p.size * saved.sector_size for p in saved.table.partitions}
        for p in d.table.partitions:
            if p.number in old:
                out[saved.node(p.number).removeprefix("/dev/")] = (
                    old[p.number],
                    p.size * d.table.sector_size,
                )
    return out


def rescale_volumes(plan: Plan, resize_swap: bool = False) -> Plan:
    """clone-disk: the LVs sized for the partition tables of the plan (after a person edited them)."""
    resized = stacked_sizes(plan.system, resized_partitions(plan.disks))
    vgs, rows = scale_vgs(plan.system, resized, resize_swap)
    return dataclasses.replace(plan, vgs=vgs, lv_rows=rows)


def restorable_metadata(vgs: tuple[VolumeGroup, ...], texts: Mapping[str, str]) -> dict[str, str]:
    """start-restore: the saved vgcfgbackup text of each VG it still describes. A VG whose text is
    missing or was edited apart from layout.toml is made from layout.toml, with new VG and LV UUIDs."""
    out = {}
    for vg in vgs:
        text = texts.get(vg.name)
        if text is None:
            log.info(
                "Volume group %s: no %s saved; its VG and LV UUIDs will be new", vg.name, file_name(vg.name)
            )
            continue
        try:
            why = mismatch(parse_vgcfg(text, file_name(vg.name)), vg)
        except MkrecError as exc:
            why = exc.message
        if why:
            log.warning(
                "warning: %s does not match layout.toml (%s): volume group %s is made from layout.toml, "
                "with new VG and LV UUIDs",
                file_name(vg.name),
                why,
                vg.name,
            )
            continue
        out[vg.name] = text
    return out


def make_plan(
    system: SavedSystem,
    action: str,
    present: list[PresentDisk],
    explicit: dict[str, str],
    protected: dict[str, str],
    *,
    choose: Chooser | None = None,
    resize_swap: bool = False,
    vg_metadata: Mapping[str, str] | None = None,
) -> Plan:
    """vg_metadata: VG name -> its saved vgcfgbackup text (etc/recovery/vgcfg-<vg>.txt)."""
    if not system.disks:
        raise MkrecError("the saved layout has no disks", hint="is --source the right backup set?")
    choices = map_disks(
        list(system.disks), present, explicit, protected, need_same_size=(action == "start"), choose=choose
    )
    pv_of = {f"/dev/{pv.device}": vg.name for vg in system.vgs for pv in vg.pvs}
    stacked_on = stacked_partitions(system)
    disk_plans = []
    for choice in choices:
        saved = choice.saved
        if action == "start":
            disk_plans.append(DiskPlan(choice, saved.table))
            continue
        on_disk = {}
        for fs in system.filesystems:
            where = _partition_of(fs, system)
            if where and where[0] == saved.name:
                on_disk[where[1]] = fs
        pvs = {
            p.number: pv_of[saved.node(p.number)]
            for p in saved.table.partitions
            if saved.node(p.number) in pv_of
        }
        stacked = {
            p.number: stacked_on[saved.node(p.number)]
            for p in saved.table.partitions
            if saved.node(p.number) in stacked_on
        }
        layout = clone_layout(saved.table, saved.size, choice.target.size, on_disk, resize_swap, pvs, stacked)
        disk_plans.append(DiskPlan(choice, layout.table, layout.rows))
    plan = Plan(action, tuple(disk_plans), place_filesystems(system, disk_plans), system, system.vgs)
    check_fits(plan, "choose a larger target disk")
    if action == "start":
        # Same-or-larger disks with the saved tables: LVM's own metadata can come back as it was.
        return dataclasses.replace(plan, vg_metadata=restorable_metadata(system.vgs, vg_metadata or {}))
    # clone-disk: sizes change, so VGs and LVs are made anew (vgcreate/lvcreate; new VG/LV UUIDs).
    return rescale_volumes(plan, resize_swap)


def stacked_partitions(system: SavedSystem) -> dict[str, Stacked]:
    """Saved partition node -> the RAID array it is a member of or the LUKS container it is, with
    the room the partition needs for what that holds."""
    out = {}
    for raid in system.raids:
        count = raid.raid_devices or len(raid.members)
        need = content_need(system, raid.name, pv_ok=mirrored(raid))
        for member in raid.members:
            out[f"/dev/{member}"] = Stacked(
                f"raid {raid.name}", None if need is None else member_need(raid.level, count, need)
            )
    for luks in system.luks:
        need = content_need(system, luks.name)
        reserve = LUKS_RESERVE.get(luks.version, LUKS_RESERVE[2])
        out[f"/dev/{luks.device}"] = Stacked(f"luks {luks.name}", None if need is None else need + reserve)
    return out


def content_need(system: SavedSystem, name: str, pv_ok: bool = True) -> int | None:
    """The room what the stacked device `name` holds needs: its file system's; 0 for an LVM physical
    volume whose new size stacked_sizes can tell (the VG's own fit check follows); None: not known."""
    fs = system.fs_on(f"/dev/{name}")
    if fs is not None:
        return need_bytes(fs)
    if pv_ok and any(pv.device == name for vg in system.vgs for pv in vg.pvs):
        return 0
    return None


def mirrored(raid: RaidArray) -> bool:
    """Every member holds the whole array, so the array's new size follows its members' (what a
    PV on it gets is known); striped arrays' is not computed here."""
    return raid.level == "raid1"


def stacked_sizes(system: SavedSystem, resized: Resized) -> Resized:
    """resized, with the RAID1 arrays and LUKS containers made on resized partitions: each is its
    partition's size less the same reserve as before, so (saved, new) of the partition serves."""
    out = dict(resized)
    for raid in system.raids:
        sizes = [out[m] for m in raid.members if m in out]
        if mirrored(raid) and sizes:
            out[raid.name] = (min(old for old, _ in sizes), min(new for _, new in sizes))
    for luks in system.luks:
        if luks.device in out:
            out[luks.name] = out[luks.device]
    return out


def place_filesystems(system: SavedSystem, disks: Sequence[DiskPlan]) -> tuple[FsTarget, ...]:
    """Where each saved filesystem goes with these tables, and the bytes its node will have."""
    by_disk = {d.choice.saved.name: d for d in disks}
    nodes = stack_nodes(partition_nodes(disks), system)
    targets = []
    for fs in system.filesystems:
        where = _partition_of(fs, system)
        if where is None:
            # On RAID, LVM or LUKS: its node once those are recreated.
            targets.append(FsTarget(fs, nodes(fs.device.removeprefix("/dev/")), 0))
            continue
        dp = by_disk[where[0]]
        part = dp.table.partition(where[1])
        targets.append(FsTarget(fs, partition_node(dp.device, where[1]), part.size * dp.table.sector_size))
    return tuple(targets)


def check_fits(plan: Plan, hint: str) -> None:
    """Every filesystem placed on a partition gets the room it needs (resize.need_bytes), for the
    computed tables and for tables a person edited alike; else nothing is written."""
    for f in plan.filesystems:
        fs, need = f.saved, need_bytes(f.saved)
        if f.size and f.size < need:
            raise MkrecError(
                f"{fs.device} ({fs.mountpoint or fs.fstype}, {format_size(fs.used)} used) does not fit "
                f"in {format_size(f.size)} at {f.node} ({format_size(need)} needed); nothing was written",
                hint=hint,
            )


def edit_clone_tables(plan: Plan, asker: Input, resize_swap: bool = False) -> Plan:
    """clone-disk on a terminal: each new table is written to a file the person may edit first;
    then the LV sizes, recomputed for the tables as edited."""
    disks = []
    for d in plan.disks:
        path = Path(f"/tmp/mkrec-clone-{d.device.rsplit('/', 1)[-1]}.sfdisk")
        path.write_text(render_script(d.table, d.device))
        answer = asker(f"The new table for {d.device} is in {path}; edit it if you like, then press Enter: ")
        if answer.strip().lower() in ("n", "no", "q"):
            raise MkrecError("nothing was written: stopped before the tables were applied")
        table = parse_dump(path.read_text(), str(path))
        disks.append(dataclasses.replace(d, table=table))
    edited = dataclasses.replace(plan, disks=tuple(disks), filesystems=place_filesystems(plan.system, disks))
    check_fits(edited, "edit the table again with more room")
    edited = rescale_volumes(edited, resize_swap)
    return edit_lv_sizes(edited, asker) if edited.lv_rows else edited


def edit_lv_sizes(plan: Plan, asker: Input) -> Plan:
    """clone-disk on a terminal: the proposed LV sizes in a file the person may edit first."""
    path = Path("/tmp/mkrec-clone-lvm.txt")
    path.write_text(render_lv_file(plan.lv_rows))
    answer = asker(f"The new LV sizes are in {path}; edit them if you like, then press Enter: ")
    if answer.strip().lower() in ("n", "no", "q"):
        raise MkrecError("nothing was written: stopped before the LV sizes were applied")
    rows = parse_lv_file(path.read_text(), str(path), plan.lv_rows)
    vgs = tuple(with_sizes(vg, rows) for vg in plan.vgs)
    return dataclasses.replace(plan, vgs=vgs, lv_rows=rows)


def render_plan(plan: Plan) -> str:
    """What the person confirms: every disk that will be erased, and what it will hold."""
    lines = [f"Restore plan ({plan.action}, set {plan.system.set_id or '?'}, plan {plan.id}):"]
    for d in plan.disks:
        saved = d.choice.saved
        lines.append(
            f"  ERASE {d.choice.target.describe()}  <-  saved {saved.name} ({format_size(saved.size)}, "
            f"{d.table.label}, {len(d.table.partitions)} partitions; matched by {d.choice.how})"
        )
        if d.rows:
            lines += ["    " + line for line in render_rows(d.rows).splitlines()]
    if plan.lv_rows:
        lines += ["    " + line for line in render_lv_rows(plan.lv_rows).splitlines()]
    nodes = plan.nodes()
    for layer in layers(plan.system.raids, plan.vgs, plan.system.luks):
        on = ", ".join(nodes(n) for n in below(layer))
        made = ", ".join(provides(layer))
        how = ""
        if isinstance(layer, VolumeGroup) and layer.name in plan.vg_metadata:
            how = f" (from {file_name(layer.name)}: VG and LV UUIDs kept)"
        lines.append(f"  CREATE {type(layer).__name__} {made} on {on}{how}")
    for f in plan.filesystems:
        fs = f.saved
        what = "raw image" if fs.raw else ("tar" if fs.stream else "empty")
        lines.append(
            f"    {f.node:<18} {fs.fstype:<6} {fs.mountpoint or '-':<12} "
            f"label={fs.label or '-'} uuid={fs.uuid or '-'} used={format_size(fs.used)} ({what})"
        )
    return "\n".join(lines)
