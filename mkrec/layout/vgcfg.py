"""vgcfg-<vg>.txt: a volume group's LVM metadata as `vgcfgbackup` wrote it, kept beside layout.toml.

start-restore gives it to `pvcreate --restorefile` and `vgcfgrestore`, so the VG and LV UUIDs (and
where each LV's extents lie) come back exactly. The file is LVM's own text format, readable and
editable; it is only used while it still describes the VG of layout.toml (same name, extent size, PV
UUIDs, LV names and sizes): `mismatch()` says why not, and the VG is then made from layout.toml.

This module reads the format far enough for that check; LVM itself reads the whole file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mkrec.errors import MkrecError
from mkrec.layout.model import VolumeGroup

SECTOR = 512  # extent_size and the sizes in LVM metadata count 512-byte sectors
_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|[{}\[\]=,]|[^\s{}\[\]=,#"]+')

Section = dict[str, Any]


def file_name(vg: str) -> str:
    return f"vgcfg-{vg}.txt"


@dataclass(frozen=True)
class LvMeta:
    name: str
    uuid: str
    size: int  # bytes


@dataclass(frozen=True)
class VgMeta:
    name: str
    uuid: str
    extent_size: int  # bytes
    pv_uuids: tuple[str, ...]
    lvs: tuple[LvMeta, ...]


def _tokens(text: str, where: str) -> list[tuple[str, int]]:
    out = []
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise MkrecError(f"{where}:{line}: cannot read {text[pos : pos + 20]!r}")
        tok = m.group(0)
        if not tok[0].isspace() and tok[0] != "#":
            out.append((tok, line))
        line += tok.count("\n")
        pos = m.end()
    return out


def _value(tok: str) -> Any:
    if tok.startswith('"'):
        return tok[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return int(tok) if re.fullmatch(r"-?\d+", tok) else tok


def parse_text(text: str, where: str) -> Section:
    """The metadata as nested dicts: `name { ... }` a dict, `key = value` a str, int or list."""
    toks = _tokens(text, where)
    stack: list[Section] = [{}]
    opened: list[tuple[str, int]] = []  # name and line of each section not closed yet
    i = 0

    def fail(msg: str) -> MkrecError:
        line = toks[min(i, len(toks) - 1)][1] if toks else 1
        return MkrecError(f"{where}:{line}: {msg}", hint="compare it with the output of vgcfgbackup")

    while i < len(toks):
        tok, _ = toks[i]
        nxt = toks[i + 1][0] if i + 1 < len(toks) else ""
        if tok == "}":
            if len(stack) == 1:
                raise fail("'}' without a section")
            stack.pop()
            opened.pop()
            i += 1
        elif nxt == "{":
            section: Section = {}
            stack[-1][tok] = section
            stack.append(section)
            opened.append((tok, toks[i][1]))
            i += 2
        elif nxt == "=":
            i += 2
            if i >= len(toks):
                raise fail(f"{tok} has no value")
            if toks[i][0] == "[":
                items = []
                i += 1
                while i < len(toks) and toks[i][0] != "]":
                    if toks[i][0] != ",":
                        items.append(_value(toks[i][0]))
                    i += 1
                if i >= len(toks):
                    raise fail(f"the list of {tok} is not closed")
                stack[-1][tok] = items
            else:
                stack[-1][tok] = _value(toks[i][0])
            i += 1
        else:
            raise fail(f"expected '=' or '{{' after {tok!r}")
    if opened:
        name, line = opened[-1]
        raise MkrecError(f"{where}:{line}: section {name} is not closed", hint="a '}' is missing")
    return stack[0]


def _int(section: Section, key: str, where: str) -> int:
    value = section.get(key)
    if not isinstance(value, int):
        raise MkrecError(f"{where}: {key} is missing or not a number", hint="compare it with vgcfgbackup")
    return value


def parse_vgcfg(text: str, where: str) -> VgMeta:
    data = parse_text(text, where)
    groups = [(name, v) for name, v in data.items() if isinstance(v, dict)]
    if len(groups) != 1:
        raise MkrecError(f"{where}: expected one volume group, found {len(groups)}")
    name, vg = groups[0]
    extent = _int(vg, "extent_size", where) * SECTOR
    pvs = [pv for pv in (vg.get("physical_volumes") or {}).values() if isinstance(pv, dict)]
    lvs = []
    for lv_name, lv in (vg.get("logical_volumes") or {}).items():
        if not isinstance(lv, dict):
            continue
        extents = sum(
            _int(seg, "extent_count", f"{where}: {lv_name}")
            for key, seg in lv.items()
            if key.startswith("segment") and isinstance(seg, dict)
        )
        lvs.append(LvMeta(lv_name, str(lv.get("id", "")), extents * extent))
    return VgMeta(name, str(vg.get("id", "")), extent, tuple(str(pv.get("id", "")) for pv in pvs), tuple(lvs))


def mismatch(meta: VgMeta, vg: VolumeGroup) -> str:
    """Why the saved metadata does not describe this VG of the layout ("" when it does)."""
    if meta.name != vg.name:
        return f"it describes volume group {meta.name}"
    if vg.uuid and vg.uuid != meta.uuid:
        return f"its VG UUID is {meta.uuid}, layout.toml says {vg.uuid}"
    if meta.extent_size != vg.extent_size:
        return f"its extent size is {meta.extent_size}, layout.toml says {vg.extent_size}"
    pv_uuids = [pv.uuid for pv in vg.pvs]
    if None in pv_uuids or sorted(meta.pv_uuids) != sorted(u for u in pv_uuids if u):
        return "its PV UUIDs are not those of layout.toml"
    saved = {lv.name: lv for lv in meta.lvs}
    if set(saved) != {lv.name for lv in vg.lvs}:
        return f"its LVs are {', '.join(sorted(saved)) or 'none'}, layout.toml has others"
    for lv in vg.lvs:
        if saved[lv.name].size != lv.size:
            return f"LV {lv.name} is {saved[lv.name].size} bytes there, {lv.size} in layout.toml"
        if lv.uuid and lv.uuid != saved[lv.name].uuid:
            return f"LV {lv.name} has another UUID there"
    return ""
