"""What changed between two captured layouts, in words: "disk sdb added (64.0 MiB)",
"partition sda2 grew from 10.0 GiB to 20.0 GiB". Usage and capture time are not changes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mkrec.layout.model import Layout
from mkrec.sizes import format_size

# What each kind of device is compared on (beyond being there at all); sizes are said as sizes.
COMPARED: dict[str, tuple[str, ...]] = {
    "disk": ("size", "label", "id"),
    "partition": ("start", "size", "type"),
    "RAID array": ("level", "members", "uuid"),
    "volume group": ("uuid",),
    "logical volume": ("size", "segtype"),
    "LUKS container": ("device", "uuid", "version"),
    "file system": ("type", "uuid", "mountpoint"),
    "swap": ("uuid",),
}


def _items(layout: Layout) -> dict[str, dict[str, Any]]:
    """Every device of the layout by kind, then name."""
    lvs = {f"{vg.name}/{lv.name}": lv for vg in layout.vgs for lv in vg.lvs}
    parts = {p.name: (p, d) for d in layout.disks for p in d.partitions}
    return {
        "disk": {d.name: d for d in layout.disks},
        "partition": {n: p for n, (p, _d) in parts.items()},
        "RAID array": {r.name: r for r in layout.raids},
        "volume group": {v.name: v for v in layout.vgs},
        "logical volume": lvs,
        "LUKS container": {c.name: c for c in layout.luks},
        "file system": {f.device: f for f in layout.filesystems},
        "swap": {s.device: s for s in layout.swaps},
    }


def _shown(field: str, value: Any, sector: int) -> str:
    if value is None:
        return "none"
    if field == "size" and isinstance(value, int):
        return format_size(value * sector)
    if isinstance(value, tuple):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _about(kind: str, item: Any) -> str:
    """A few words on a device that came or went."""
    if kind == "file system":
        return f" ({item.type}{' on ' + item.mountpoint if item.mountpoint else ''})"
    size = getattr(item, "size", None)
    return f" ({format_size(size)})" if isinstance(size, int) and kind != "partition" else ""


def _changes(kind: str, name: str, old: Any, new: Any, sector: Callable[[str], int]) -> Iterable[str]:
    for field in COMPARED[kind]:
        before, after = getattr(old, field), getattr(new, field)
        if before == after:
            continue
        scale = sector(name) if kind == "partition" else 1
        if field == "size" and isinstance(before, int) and isinstance(after, int):
            verb = "grew" if after > before else "shrank"
            yield f"{kind} {name} {verb} from {_shown(field, before, scale)} to {_shown(field, after, scale)}"
        else:
            was, now = _shown(field, before, scale), _shown(field, after, scale)
            yield f"{kind} {name}: {field} was {was}, now {now}"


def diff_layouts(saved: Layout, now: Layout) -> list[str]:
    """The differences, one sentence each; empty when the disks look as they did."""
    sectors = {p.name: d.logical_sector for d in now.disks for p in d.partitions}
    sectors |= {p.name: d.logical_sector for d in saved.disks for p in d.partitions}
    before, after = _items(saved), _items(now)
    lines: list[str] = []
    for kind in COMPARED:
        old, new = before[kind], after[kind]
        lines += [f"{kind} {n} added{_about(kind, new[n])}" for n in new if n not in old]
        lines += [f"{kind} {n} removed{_about(kind, old[n])}" for n in old if n not in new]
        for n in sorted(old.keys() & new.keys()):
            lines += _changes(kind, n, old[n], new[n], lambda x: sectors.get(x, 512))
    return lines
