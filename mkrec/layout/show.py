"""`mkrec layout show DIR`: the layout as a tree, disk -> partitions -> RAID/LVM/LUKS -> filesystems,
with sizes and usage."""

from __future__ import annotations

from mkrec.layout.model import Layout
from mkrec.sizes import format_size


def _what(layout: Layout, device: str) -> str:
    """One line for what a device holds: a filesystem with its usage, swap, or nothing."""
    fs = layout.filesystem_on(device)
    if fs is not None:
        parts = [fs.type]
        if fs.label:
            parts.append(f'"{fs.label}"')
        if fs.mountpoint:
            parts.append(f"on {fs.mountpoint}")
        if fs.used is not None and fs.size:
            parts.append(
                f"{format_size(fs.used)} used of {format_size(fs.size)} ({100 * fs.used // fs.size}%)"
            )
        elif fs.size:
            parts.append(format_size(fs.size))
        return " ".join(parts)
    swap = next((s for s in layout.swaps if s.device == device), None)
    if swap is not None:
        return "swap" + (f' "{swap.label}"' if swap.label else "")
    return ""


def render_tree(layout: Layout) -> list[str]:
    children: dict[str, list[tuple[str, str]]] = {}  # device -> [(child name, description)]
    sizes: dict[str, int | None] = {}
    for raid in layout.raids:
        for member in raid.members:
            children.setdefault(member, []).append((raid.name, f"{raid.level} md {raid.name}"))
        sizes[raid.name] = raid.size
    for vg in layout.vgs:
        for pv in vg.pvs:
            for lv in vg.lvs:
                children.setdefault(pv.device, []).append((f"{vg.name}/{lv.name}", f"lvm {lv.segtype}"))
                sizes[f"{vg.name}/{lv.name}"] = lv.size
    for c in layout.luks:
        children.setdefault(c.device, []).append((c.name, f"luks{c.version} {c.cipher or ''}".strip()))

    lines = [f"{layout.hostname}, captured {layout.captured}"]

    def node(name: str, desc: str, size: int | None, prefix: str, last: bool, seen: set[str]) -> None:
        branch = "└─ " if last else "├─ "
        held = _what(layout, name)
        text = f"{name:<14} {format_size(size) if size else '':>10}  {desc}"
        lines.append(f"{prefix}{branch}{text}{'  ' + held if held else ''}".rstrip())
        if name in seen:
            return  # a RAID or VG over several members is drawn in full under its first member only
        seen.add(name)
        kids = children.get(name, [])
        for i, (kid, kid_desc) in enumerate(kids):
            more = "   " if last else "│  "
            node(kid, kid_desc, sizes.get(kid), prefix + more, i == len(kids) - 1, seen)

    seen: set[str] = set()
    for disk in layout.disks:
        ident = ", ".join(x for x in (disk.model, disk.serial, disk.wwn) if x)
        table = disk.label or "no partition table"
        state = "" if disk.readable else "  [not readable at capture]"
        lines.append(
            f"{disk.name}  {format_size(disk.size)}  {table}{f'  ({ident})' if ident else ''}{state}"
        )
        held = _what(layout, disk.name)
        if held:
            lines.append(f"└─ {held}")
        entries: list[tuple[str, str, int | None]] = [
            (p.name, f"{p.kind} {p.gpt_name or ''}".strip(), p.size * disk.logical_sector)
            for p in disk.partitions
        ]
        entries += [(kid, desc, sizes.get(kid)) for kid, desc in children.get(disk.name, [])]
        for i, (name, desc, size) in enumerate(entries):
            node(name, desc, size, "", i == len(entries) - 1, seen)
    boot = ", ".join(
        f"{b.kind}" + (f" on {b.disk}" if b.disk else "") + (f" (ESP {b.esp})" if b.esp else "")
        for b in layout.boot
    )
    lines.append(f"boot: {boot or 'none'}")
    return lines
