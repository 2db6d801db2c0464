"""`sfdisk --dump` text <-> a Table, and the script that writes a Table onto another device.

The dump is what the capture saves per disk; the script keeps the disk id and every partition's
start, size, type, UUID, name and attributes, so the restored table is identical. What belongs to
the old device (its name, its last usable LBA) is left out so sfdisk computes it for the new one."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mkrec.errors import MkrecError

MIB = 1024 * 1024
EXTENDED_TYPES = frozenset({"5", "f", "85"})


def partition_node(disk: str, number: int) -> str:
    """/dev/sda + 1 -> /dev/sda1; /dev/nvme0n1, /dev/loop3, /dev/md0 -> ...p1 (the kernel's rule)."""
    return f"{disk}p{number}" if disk[-1:].isdigit() else f"{disk}{number}"


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # sectors
    size: int  # sectors
    type: str
    uuid: str = ""
    name: str = ""
    attrs: str = ""
    bootable: bool = False

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def is_extended(self) -> bool:
        return self.type.lower().lstrip("0x") in EXTENDED_TYPES


@dataclass(frozen=True)
class Table:
    label: str  # gpt | dos
    label_id: str = ""
    sector_size: int = 512
    first_lba: int | None = None
    table_length: int | None = None
    partitions: tuple[Partition, ...] = ()

    def partition(self, number: int) -> Partition:
        for part in self.partitions:
            if part.number == number:
                return part
        raise KeyError(number)

    def end_bytes(self) -> int:
        """Where the last partition ends: the least a target disk must hold for this table."""
        end = max((p.end for p in self.partitions), default=0)
        return end * self.sector_size

    def with_partitions(self, partitions: tuple[Partition, ...]) -> Table:
        return replace(self, partitions=partitions)


_HEADER = re.compile(r"^([a-z-]+):\s*(.*)$")
_NUMBER = re.compile(r"(\d+)$")


def _field_value(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def parse_dump(text: str, source: str = "sfdisk dump") -> Table:
    """Parse `sfdisk --dump` output. Errors name the source and the line."""
    headers: dict[str, str] = {}
    parts: list[Partition] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if " : " in line or line.startswith("/dev/"):
            node, _, rest = line.partition(":")
            match = _NUMBER.search(node.strip())
            if not match:
                raise MkrecError(f"{source}:{lineno}: no partition number in {node.strip()!r}")
            fields: dict[str, str] = {}
            bootable = False
            for item in rest.split(","):
                item = item.strip()
                if not item:
                    continue
                if item == "bootable":
                    bootable = True
                    continue
                key, eq, value = item.partition("=")
                if not eq:
                    raise MkrecError(f"{source}:{lineno}: cannot read {item!r}")
                fields[key.strip()] = _field_value(value)
            try:
                parts.append(
                    Partition(
                        number=int(match.group(1)),
                        start=int(fields["start"]),
                        size=int(fields["size"]),
                        type=fields.get("type", ""),
                        uuid=fields.get("uuid", ""),
                        name=fields.get("name", ""),
                        attrs=fields.get("attrs", ""),
                        bootable=bootable,
                    )
                )
            except (KeyError, ValueError):
                raise MkrecError(f"{source}:{lineno}: a partition needs numeric start= and size=") from None
            continue
        match = _HEADER.match(line)
        if not match:
            raise MkrecError(f"{source}:{lineno}: cannot read {line!r}")
        headers[match.group(1)] = match.group(2).strip()
    label = headers.get("label", "")
    if label not in ("gpt", "dos"):
        raise MkrecError(f"{source}: label is {label!r}; only gpt and dos tables can be restored")
    if headers.get("unit", "sectors") != "sectors":
        raise MkrecError(f"{source}: unit must be sectors")
    return Table(
        label=label,
        label_id=headers.get("label-id", ""),
        sector_size=int(headers.get("sector-size", "512")),
        first_lba=int(headers["first-lba"]) if "first-lba" in headers else None,
        table_length=int(headers["table-length"]) if "table-length" in headers else None,
        partitions=tuple(sorted(parts, key=lambda p: p.number)),
    )


def render_script(table: Table, device: str) -> str:
    """The sfdisk script that writes `table` onto `device` (a dump-shaped text a person can edit)."""
    lines = [f"label: {table.label}"]
    if table.label_id:
        lines.append(f"label-id: {table.label_id}")
    lines.append("unit: sectors")
    if table.first_lba is not None:
        lines.append(f"first-lba: {table.first_lba}")
    if table.table_length is not None:
        lines.append(f"table-length: {table.table_length}")
    lines.append(f"sector-size: {table.sector_size}")
    lines.append("")
    for p in table.partitions:
        fields = [f"start={p.start:>12}", f"size={p.size:>12}", f"type={p.type}"]
        if p.uuid:
            fields.append(f"uuid={p.uuid}")
        if p.name:
            fields.append(f'name="{p.name}"')
        if p.attrs:
            fields.append(f'attrs="{p.attrs}"')
        if p.bootable:
            fields.append("bootable")
        lines.append(f"{partition_node(device, p.number)} : {', '.join(fields)}")
    return "\n".join(lines) + "\n"


def same_table(a: Table, b: Table) -> bool:
    """Equal where it matters for a restore: label, disk id and every partition, with the flags a
    BIOS boot code looks for (the active flag, LegacyBIOSBootable). Ids are compared
    case-insensitively: sfdisk prints GPT UUIDs in upper case whatever was written."""

    def key(t: Table) -> tuple[object, ...]:
        return (
            t.label,
            t.label_id.lower(),
            tuple(
                (p.number, p.start, p.size, p.type.lower(), p.uuid.lower(), p.name, p.attrs, p.bootable)
                for p in t.partitions
            ),
        )

    return key(a) == key(b)
