"""layout.toml: the one place the layout is written as text and read back.

The writer emits TOML by hand (Python only reads TOML) with comments a person restoring can follow:
units, human sizes, partition type names. The reader turns the TOML back into the model, checking
every key and type against the dataclasses, then checks what a hand edit can break: overlapping or
oversized partitions, unknown filesystem types, references to devices that do not exist. Every error
is one line naming the file, the item and the problem.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import tomllib
import types
import typing
from enum import StrEnum
from pathlib import Path
from typing import Any

from mkrec.errors import MkrecError
from mkrec.layout.model import FS_TYPES, Disk, Layout, Partition, PartitionKind
from mkrec.sizes import format_size

FORMAT_VERSION = 1
LAYOUT_FILE = "layout.toml"

# Model field -> TOML array-of-tables key (singular, as a person reads "[[disk.partition]]").
TABLE_KEY = {
    "disks": "disk",
    "partitions": "partition",
    "raids": "raid",
    "vgs": "vg",
    "pvs": "pv",
    "lvs": "lv",
    "luks": "luks",
    "filesystems": "filesystem",
    "swaps": "swap",
    "fstab": "fstab",
    "boot": "boot",
}
FIELD_OF = {key: name for name, key in TABLE_KEY.items()}

# Well-known partition types, only for the comments.
TYPE_NAMES = {
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
    "0FC63DAF-8483-4772-8E79-3D47DE47C478": "Linux filesystem",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
    "CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
    "83": "Linux",
    "82": "Linux swap",
    "8e": "Linux LVM",
    "fd": "Linux RAID autodetect",
    "ef": "EFI System",
    "5": "Extended",
    "f": "W95 Extended (LBA)",
    "85": "Linux extended",
    "b": "W95 FAT32",
    "c": "W95 FAT32 (LBA)",
    "7": "HPFS/NTFS/exFAT",
}

HEADER = """\
# mkrec disk layout — read by `mkrec restore` to rebuild the disks before the files come back.
# You may edit it (see README.txt next to it): shrink or move a partition, rename a device
# (search and replace the name everywhere), drop a disk you will not restore.
# Units: disk, filesystem and logical volume sizes are bytes; partition start and size are
# sectors of the disk's logical_sector size. A missing optional key means "not known".
"""

# Trailing comments for fixed keys, where the unit or meaning is not obvious.
KEY_COMMENTS = {
    ("disk", "name"): "kernel name at capture; the restore maps disks by the identity below",
    ("disk", "label"): "partition table: gpt | dos",
    ("disk", "readable"): "false: the disk could not be opened; details come from lsblk/sysfs",
    ("partition", "kind"): "primary | extended | logical",
    ("vg", "extent_size"): "bytes",
    ("lv", "segtype"): "linear | striped | raid1 | ...",
    ("luks", "name"): "the opened mapping: the device the contents refer to",
    ("luks", "key_size"): "bits; no key is ever stored",
    ("filesystem", "type"): "one of " + " ".join(FS_TYPES),
    ("boot", "kind"): "grub-bios | grub-efi | extlinux | none",
    ("boot", "directory"): "where ldlinux.sys is: extlinux --install goes there",
}


# ---------------------------------------------------------------- writing


def _toml_str(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes; TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):  # StrEnum too
        return _toml_str(str(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _dynamic_comment(key: str, name: str, value: Any, obj: Any) -> str | None:
    if key == "partition" and name == "size" and isinstance(obj, Partition):
        return f"sectors; ends at sector {obj.end}"
    if key == "partition" and name == "type":
        return TYPE_NAMES.get(str(value).upper()) or TYPE_NAMES.get(str(value).lower())
    if name in ("size", "used") and isinstance(value, int) and key != "partition":
        return f"bytes, {format_size(value)}"
    return KEY_COMMENTS.get((key, name))


def _write_table(lines: list[str], path: str, obj: Any, key: str) -> None:
    lines.append(f"[[{path}]]")
    nested = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in TABLE_KEY and isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            nested.append((f.name, value))
            continue
        if value is None or (f.name in TABLE_KEY and value == ()):
            continue
        line = f"{f.name} = {_toml_value(value)}"
        comment = _dynamic_comment(key, f.name, value, obj)
        lines.append(f"{line:<40} # {comment}" if comment else line)
    lines.append("")
    for name, children in nested:
        for child in children:
            _write_table(lines, f"{path}.{TABLE_KEY[name]}", child, TABLE_KEY[name])


def write_layout(layout: Layout) -> str:
    """The layout as commented TOML; parse_layout(write_layout(x)) == x."""
    lines = [HEADER]
    lines.append(f"version = {FORMAT_VERSION}")
    for f in dataclasses.fields(layout):
        value = getattr(layout, f.name)
        if f.name not in TABLE_KEY:
            lines.append(f"{f.name} = {_toml_value(value)}")
    lines.append("")
    sections = {
        "disks": "Disks and their partition tables",
        "raids": "MD RAID arrays",
        "vgs": "LVM volume groups, their physical volumes (pv) and logical volumes (lv)",
        "luks": "LUKS containers (the passphrase is asked for at restore; no key is stored)",
        "filesystems": "Filesystems, by the device they live on",
        "swaps": "Swap areas",
        "fstab": "The source system's /etc/fstab (a copy of the file is kept as fstab)",
        "boot": "Boot loaders found",
    }
    for f in dataclasses.fields(layout):
        if f.name not in TABLE_KEY:
            continue
        items = getattr(layout, f.name)
        lines.append(f"# ---- {sections[f.name]}{'' if items else ': none'}")
        lines.append("")
        for item in items:
            _write_table(lines, TABLE_KEY[f.name], item, TABLE_KEY[f.name])
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------- reading


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, item: str | None, problem: str, hint: str | None = None) -> MkrecError:
        where = f"{self.source}: {item}: " if item else f"{self.source}: "
        return MkrecError(where + problem, hint)

    def build(self, cls: type, table: Any, item: str | None, key: str) -> Any:
        if not isinstance(table, dict):
            raise self.error(item, f"must be a table ([[{key}]]), got {_shown(table)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        toml_names = {TABLE_KEY.get(name, name): name for name in fields}
        values: dict[str, Any] = {}
        for tkey, raw in table.items():
            if tkey not in toml_names:
                known = ", ".join(toml_names)
                raise self.error(item, f'unknown key "{tkey}"', hint=f"known keys: {known}")
            name = toml_names[tkey]
            values[name] = self.convert(hints[name], raw, item, tkey)
        for name, f in fields.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and name not in values:
                raise self.error(item, f'missing key "{TABLE_KEY.get(name, name)}"')
        return cls(**values)

    def convert(self, hint: Any, raw: Any, item: str | None, key: str) -> Any:
        args = typing.get_args(hint)
        if isinstance(hint, types.UnionType):  # "X | None": a missing key is None, a present one is X
            (inner,) = [a for a in args if a is not type(None)]
            return self.convert(inner, raw, item, key)
        if typing.get_origin(hint) is tuple:
            elem = args[0]
            if not isinstance(raw, list):
                raise self.error(item, f"{key} must be a list, got {_shown(raw)}")
            if dataclasses.is_dataclass(elem):
                return tuple(
                    self.build(elem, t, _item_label(key, t, i, item), key)  # type: ignore[arg-type]
                    for i, t in enumerate(raw)
                )
            return tuple(self.convert(elem, v, item, key) for v in raw)
        if isinstance(hint, type) and issubclass(hint, StrEnum):
            allowed = [m.value for m in hint]
            if raw not in allowed:
                raise self.error(item, f"{key} must be one of {', '.join(allowed)}, got {_shown(raw)}")
            return hint(raw)
        if hint is bool:
            if not isinstance(raw, bool):
                raise self.error(item, f"{key} must be true or false, got {_shown(raw)}")
            return raw
        if hint is int:
            if not isinstance(raw, int) or isinstance(raw, bool):
                raise self.error(item, f"{key} must be a whole number, got {_shown(raw)}")
            return raw
        if hint is str:
            if not isinstance(raw, str):
                raise self.error(item, f"{key} must be a string in quotes, got {_shown(raw)}")
            return raw
        raise TypeError(f"no reader for {hint!r}")


def _shown(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _item_label(key: str, table: Any, index: int, parent: str | None) -> str:
    """How an error names an item: by its name or device where it has one, else by position."""
    if isinstance(table, dict):
        if key in ("filesystem", "swap") and isinstance(table.get("device"), str):
            return f'{key} on "{table["device"]}"'
        if key == "lv" and isinstance(table.get("name"), str) and parent:
            vg = parent.removeprefix('vg "').rstrip('"')
            return f'lv "{vg}/{table["name"]}"'
        for ident in ("name", "device", "file", "kind"):
            if isinstance(table.get(ident), str):
                return f'{key} "{table[ident]}"'
    return f"{key} #{index + 1}"


def parse_layout(text: str, source: str = LAYOUT_FILE) -> Layout:
    """TOML text -> Layout, with every check a hand edit needs. Errors are MkrecError, one line."""
    reader = _Reader(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise reader.error(None, f"not valid TOML: {exc}", hint="compare with the README's example") from None
    version = data.pop("version", None)
    if version is None:
        raise reader.error(None, 'missing key "version"')
    if version != FORMAT_VERSION:
        raise reader.error(
            None, f"format version {_shown(version)} is not known", hint=f"this mkrec reads {FORMAT_VERSION}"
        )
    layout: Layout = reader.build(Layout, data, None, "layout")
    _check(layout, reader)
    return layout


def read_layout(path: Path) -> Layout:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MkrecError(f"{path}: no such layout file", hint="run 'mkrec layout capture' first") from None
    return parse_layout(text, str(path))


# ---------------------------------------------------------------- checks a hand edit can break


def _check(layout: Layout, r: _Reader) -> None:
    seen: set[str] = set()
    for name in layout.device_names():
        if name in seen:
            raise r.error(f'device "{name}"', "the name is used twice", hint="device names must be unique")
        seen.add(name)
    for disk in layout.disks:
        _check_disk(disk, r)
    known = set(seen)
    hint = "devices in this file: " + ", ".join(layout.device_names())

    def ref(item: str, device: str) -> None:
        if device not in known:
            raise r.error(item, f'unknown device "{device}"', hint=hint)

    users: dict[str, str] = {}

    def use(item: str, device: str) -> None:
        ref(item, device)
        if device in users:
            raise r.error(item, f'device "{device}" is already used by {users[device]}')
        users[device] = item

    for raid in layout.raids:
        for member in raid.members:
            use(f'raid "{raid.name}"', member)
    for vg in layout.vgs:
        for pv in vg.pvs:
            use(f'vg "{vg.name}" pv "{pv.device}"', pv.device)
    for c in layout.luks:
        use(f'luks "{c.name}"', c.device)
    for fs in layout.filesystems:
        item = f'filesystem on "{fs.device}"'
        use(item, fs.device)
        if fs.type not in FS_TYPES:
            raise r.error(
                item, f'unknown filesystem type "{fs.type}"', hint="known types: " + ", ".join(FS_TYPES)
            )
    for sw in layout.swaps:
        use(f'swap on "{sw.device}"', sw.device)
    for boot in layout.boot:
        for device in (boot.disk, boot.esp):
            if device is not None:
                ref(f'boot "{boot.kind}"', device)
        if boot.directory is not None and not boot.directory.startswith("/"):
            raise r.error(
                f'boot "{boot.kind}"',
                f'directory must be an absolute path, got "{boot.directory}"',
                hint="a path like the mount points above, e.g. /boot/extlinux",
            )


def _span(p: Partition) -> str:
    return f"sectors {p.start}-{p.end}"


def _check_disk(disk: Disk, r: _Reader) -> None:
    for value, what in ((disk.size, "size"), (disk.logical_sector, "logical_sector")):
        if value <= 0:
            raise r.error(f'disk "{disk.name}"', f"{what} must be larger than 0")
    if disk.label not in (None, "gpt", "dos"):
        raise r.error(f'disk "{disk.name}"', f'label must be "gpt" or "dos", got "{disk.label}"')
    first = disk.first_lba if disk.first_lba is not None else 1
    last = disk.last_usable()
    numbers: set[int] = set()
    extended = [p for p in disk.partitions if p.kind is PartitionKind.EXTENDED]
    for p in disk.partitions:
        item = f'partition "{p.name}"'
        if p.number in numbers:
            raise r.error(item, f'number {p.number} is used twice on disk "{disk.name}"')
        numbers.add(p.number)
        if p.size <= 0:
            raise r.error(item, "size must be larger than 0")
        if p.start < first:
            raise r.error(item, f"starts at sector {p.start}, before the first usable sector {first}")
        if p.end > last:
            raise r.error(
                item,
                f'ends at sector {p.end}, beyond the last usable sector {last} of disk "{disk.name}"',
                hint="shrink it or move it",
            )
        if p.kind is PartitionKind.LOGICAL:
            if not extended:
                raise r.error(item, f'is logical but disk "{disk.name}" has no extended partition')
            ext = extended[0]
            if p.start <= ext.start or p.end > ext.end:
                raise r.error(item, f'lies outside the extended partition "{ext.name}" ({_span(ext)})')
        elif p.kind is not PartitionKind.PRIMARY and disk.label == "gpt":
            raise r.error(item, f"a GPT disk has only primary partitions, not {p.kind}")
    # Primaries and the extended share the disk; logicals share the extended partition.
    for group in (
        [p for p in disk.partitions if p.kind is not PartitionKind.LOGICAL],
        [p for p in disk.partitions if p.kind is PartitionKind.LOGICAL],
    ):
        ordered = sorted(group, key=lambda p: p.start)
        for before, after in itertools.pairwise(ordered):
            if after.start <= before.end:
                raise r.error(
                    f'partition "{after.name}"',
                    f'overlaps partition "{before.name}" ({_span(before)})',
                    hint="shrink or move one of them",
                )
