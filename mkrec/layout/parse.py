"""Pure parsers of the tools' output (lsblk, sfdisk, blkid, tune2fs, xfs_info, mdadm, cryptsetup,
lvm, fstab) into plain values and model items. No commands run here: tests feed saved real output."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkrec.layout.model import (
    MBR_EXTENDED,
    FstabEntry,
    LogicalVolume,
    Partition,
    PartitionKind,
    PhysicalVolume,
    RaidArray,
    VolumeGroup,
)


def blank(value: Any) -> str | None:
    """lsblk/lvm print null or "" for "not known"; the model says None."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# ---------------------------------------------------------------- lsblk

RAID_MEMBER = "linux_raid_member"
SYS_BLOCK = Path("/sys/class/block")


@dataclass
class BlockDev:
    """One row of `lsblk -J -b -O -l`, with all its parents (list mode repeats a row per parent)."""

    kname: str
    name: str
    type: str
    size: int
    majmin: str
    log_sec: int = 512
    phy_sec: int = 512
    model: str | None = None
    serial: str | None = None
    wwn: str | None = None
    fstype: str | None = None
    uuid: str | None = None  # a RAID member's: its array's UUID
    parents: list[str] = field(default_factory=list)
    mountpoints: list[str] = field(default_factory=list)


def parse_lsblk(data: dict[str, Any]) -> dict[str, BlockDev]:
    """kname -> BlockDev, in lsblk's order."""
    devs: dict[str, BlockDev] = {}
    for row in data.get("blockdevices", []):
        kname = row["kname"]
        dev = devs.get(kname)
        if dev is None:
            dev = devs[kname] = BlockDev(
                kname=kname,
                name=row.get("name") or kname,
                type=row.get("type") or "",
                size=int(row.get("size") or 0),
                majmin=row.get("maj:min") or "",
                log_sec=int(row.get("log-sec") or 512),
                phy_sec=int(row.get("phy-sec") or 512),
                model=blank(row.get("model")),
                serial=blank(row.get("serial")),
                wwn=blank(row.get("wwn")),
                fstype=blank(row.get("fstype")),
                uuid=blank(row.get("uuid")),
                mountpoints=[m for m in row.get("mountpoints") or [] if isinstance(m, str)],
            )
        pk = row.get("pkname")
        if pk and pk not in dev.parents:
            dev.parents.append(pk)
    return devs


def add_slaves(devs: dict[str, BlockDev], sysfs: Path = SYS_BLOCK) -> None:
    """Complete every device's parents from the kernel's own list (<sysfs>/<kname>/slaves):
    `lsblk -l` names only one parent of a device stacked on several (md0 over two disks)."""
    for dev in devs.values():
        try:
            slaves = sorted(p.name for p in (sysfs / dev.kname / "slaves").iterdir())
        except OSError:
            continue
        dev.parents += [s for s in slaves if s in devs and s not in dev.parents]


def md_degraded(kname: str, sysfs: Path = SYS_BLOCK) -> int:
    """How many members an MD array lacks; 0 for anything else (and RAID0, linear: no redundancy)."""
    try:
        return int((sysfs / kname / "md" / "degraded").read_text())
    except (OSError, ValueError):
        return 0


def add_absent_members(devs: dict[str, BlockDev], sysfs: Path = SYS_BLOCK) -> list[str]:
    """Give a degraded array the members it lacks but that are here: devices marked as members of
    the same array (a disk late at boot, a member kicked out) that nothing holds. They become its
    parents, so their disks are captured and the restore rebuilds the array whole. Returns them."""
    held = {p for dev in devs.values() for p in dev.parents}
    added: list[str] = []
    for md in devs.values():
        degraded = md_degraded(md.kname, sysfs)
        uuids = {devs[p].uuid for p in md.parents if devs[p].fstype == RAID_MEMBER} - {None}
        if not degraded or len(uuids) != 1:
            continue
        absent = [
            d.kname
            for d in devs.values()
            if d.fstype == RAID_MEMBER and d.uuid in uuids and d.kname not in held and d.kname != md.kname
        ]
        md.parents += absent[:degraded]
        added += absent[:degraded]
    return added


def descendants(devs: dict[str, BlockDev], roots: list[str]) -> list[str]:
    """roots and every device stacked on them (partitions, RAID, LVM, LUKS), in lsblk order."""
    wanted = set(roots)
    changed = True
    while changed:
        changed = False
        for dev in devs.values():
            if dev.kname not in wanted and any(p in wanted for p in dev.parents):
                wanted.add(dev.kname)
                changed = True
    return [k for k in devs if k in wanted]


# ---------------------------------------------------------------- sfdisk


@dataclass(frozen=True)
class Table:
    label: str
    id: str | None
    first_lba: int | None
    last_lba: int | None
    sector_size: int
    partitions: tuple[Partition, ...]


def _part_number(node: str) -> int:
    m = re.search(r"(\d+)$", node)
    if not m:
        raise ValueError(f"sfdisk partition node without a number: {node}")
    return int(m.group(1))


def parse_sfdisk(data: dict[str, Any]) -> Table:
    """`sfdisk -J DEV` -> Table. MBR numbers 5 and up are logical; types 5/f/85 are extended."""
    pt = data["partitiontable"]
    label = pt["label"]
    parts = []
    for row in pt.get("partitions", []):
        node = row["node"]
        number = _part_number(node)
        ptype = str(row["type"])
        if label == "gpt":
            kind, ptype = PartitionKind.PRIMARY, ptype.upper()
        elif number >= 5:
            kind = PartitionKind.LOGICAL
        elif ptype.lower() in MBR_EXTENDED:
            kind = PartitionKind.EXTENDED
        else:
            kind = PartitionKind.PRIMARY
        parts.append(
            Partition(
                name=node.removeprefix("/dev/"),
                number=number,
                start=int(row["start"]),
                size=int(row["size"]),
                type=ptype if label == "gpt" else ptype.lower(),
                kind=kind,
                uuid=blank(row.get("uuid")),
                gpt_name=blank(row.get("name")),
                attrs=blank(row.get("attrs")),
                bootable=bool(row.get("bootable", False)),
            )
        )
    return Table(
        label=label,
        id=blank(pt.get("id")),
        first_lba=pt.get("firstlba"),
        last_lba=pt.get("lastlba"),
        sector_size=int(pt.get("sectorsize", 512)),
        partitions=tuple(parts),
    )


# ---------------------------------------------------------------- blkid, mdadm: KEY=value lines


def parse_export(text: str) -> dict[str, str]:
    """`blkid -o export` / `mdadm --export` lines. blkid escapes spaces and such with a backslash."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = re.sub(r"\\(.)", r"\1", value.strip())
    return out


# ---------------------------------------------------------------- filesystem details


@dataclass(frozen=True)
class FsDetail:
    block_size: int | None = None
    features: tuple[str, ...] = ()
    size: int | None = None
    used: int | None = None


def _field(text: str, name: str) -> str | None:
    m = re.search(rf"^{re.escape(name)}:\s*(.*)$", text, re.MULTILINE)
    return m.group(1).strip() if m else None


def parse_tune2fs(text: str) -> FsDetail:
    """`tune2fs -l`: block size, the feature list, size and used from the block counts."""
    bs = int(_field(text, "Block size") or 0) or None
    blocks = int(_field(text, "Block count") or 0)
    free = int(_field(text, "Free blocks") or 0)
    # needs_recovery only says the filesystem is mounted (journal in use): not a feature to recreate
    features = tuple(f for f in (_field(text, "Filesystem features") or "").split() if f != "needs_recovery")
    size = blocks * bs if bs and blocks else None
    used = (blocks - free) * bs if bs and blocks else None
    return FsDetail(bs, features, size, used)


def parse_xfs_info(text: str) -> FsDetail:
    """`xfs_info`: data block size and blocks, and the on-disk features switched on (crc=1 ...)."""
    m = re.search(r"^data\s+=.*?bsize=(\d+)\s+blocks=(\d+)", text, re.MULTILINE)
    bs, blocks = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    names = ("crc", "finobt", "sparse", "rmapbt", "reflink", "bigtime", "inobtcount", "nrext64")
    features = tuple(n for n in names if re.search(rf"\b{n}=1\b", text))
    return FsDetail(bs, features, bs * blocks if bs and blocks else None, None)


# ---------------------------------------------------------------- mdadm


def parse_mdadm_export(text: str, name: str, member_name: dict[str, str]) -> RaidArray:
    """`mdadm --detail --export /dev/mdX`. member_name maps /dev/... paths to our device names."""
    kv = parse_export(text)
    ranked = []
    for key, dev in kv.items():
        if key.startswith("MD_DEVICE_") and key.endswith("_DEV"):
            role = kv.get(key.removesuffix("_DEV") + "_ROLE", "")
            ranked.append((int(role) if role.isdigit() else 1_000, dev))  # spares last
    members = [dev for _, dev in sorted(ranked, key=lambda r: r[0])]
    devices = kv.get("MD_DEVICES")
    return RaidArray(
        name=name,
        level=kv.get("MD_LEVEL", "unknown"),
        members=tuple(member_name.get(m, m.removeprefix("/dev/")) for m in members),
        metadata=blank(kv.get("MD_METADATA")),
        uuid=blank(kv.get("MD_UUID")),
        md_name=blank(kv.get("MD_NAME")),
        raid_devices=int(devices) if devices and devices.isdigit() else None,
    )


# ---------------------------------------------------------------- cryptsetup


@dataclass(frozen=True)
class LuksInfo:
    version: int
    uuid: str | None
    cipher: str | None
    key_size: int | None
    label: str | None


def parse_luksdump(text: str) -> LuksInfo:
    """`cryptsetup luksDump` for LUKS1 ("Cipher name", "MK bits") and LUKS2 (segment "cipher",
    keyslot "Key: 512 bits")."""
    version = int(_field(text, "Version") or 0)
    uuid = blank(_field(text, "UUID"))
    if version == 1:
        name, mode = _field(text, "Cipher name"), _field(text, "Cipher mode")
        cipher = f"{name}-{mode}" if name and mode else name
        bits = _field(text, "MK bits")
        return LuksInfo(1, uuid, cipher, int(bits) if bits else None, None)
    m = re.search(r"^\s+cipher:\s*(\S+)", text, re.MULTILINE)
    k = re.search(r"^\s+Key:\s*(\d+) bits", text, re.MULTILINE)
    label = _field(text, "Label")
    return LuksInfo(
        version,
        uuid,
        m.group(1) if m else None,
        int(k.group(1)) if k else None,
        None if label in (None, "(no label)") else label,
    )


# ---------------------------------------------------------------- lvm


def _report(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for report in data.get("report", []):
        rows += report.get(kind, [])
    return rows


def _num(value: Any) -> int:
    # `--units b --nosuffix` prints "4194304"; older lvm may append "B".
    return int(str(value).strip().rstrip("Bb") or 0)


def parse_lvm(
    pvs: dict[str, Any], vgs: dict[str, Any], lvs: dict[str, Any], pv_name: dict[str, str]
) -> list[VolumeGroup]:
    """`pvs/vgs/lvs --reportformat json --units b --nosuffix` -> volume groups with PVs and LVs.
    pv_name maps /dev/... paths to our device names."""
    groups = []
    for vg in _report(vgs, "vg"):
        name = vg["vg_name"]
        groups.append(
            VolumeGroup(
                name=name,
                extent_size=_num(vg["vg_extent_size"]),
                uuid=blank(vg.get("vg_uuid")),
                pvs=tuple(
                    PhysicalVolume(
                        device=pv_name.get(pv["pv_name"], pv["pv_name"].removeprefix("/dev/")),
                        uuid=blank(pv.get("pv_uuid")),
                        size=_num(pv["pv_size"]) if pv.get("pv_size") else None,
                    )
                    for pv in _report(pvs, "pv")
                    if pv.get("vg_name") == name
                ),
                lvs=tuple(
                    LogicalVolume(
                        name=lv["lv_name"],
                        size=_num(lv["lv_size"]),
                        segtype=lv.get("segtype") or "linear",
                        uuid=blank(lv.get("lv_uuid")),
                        stripes=int(lv["stripes"]) if str(lv.get("stripes") or "").isdigit() else None,
                    )
                    for lv in _report(lvs, "lv")
                    if lv.get("vg_name") == name
                ),
            )
        )
    return groups


# ---------------------------------------------------------------- fstab


def parse_fstab(text: str) -> tuple[FstabEntry, ...]:
    """/etc/fstab lines; octal escapes (\\040 for a space) are decoded as mount does."""

    def unescape(s: str) -> str:
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)

    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3:
            continue
        words += ["defaults", "0", "0"][len(words) - 3 :]
        entries.append(
            FstabEntry(
                spec=unescape(words[0]),
                file=unescape(words[1]),
                vfstype=words[2],
                mntops=words[3],
                freq=int(words[4]) if words[4].isdigit() else 0,
                passno=int(words[5]) if words[5].isdigit() else 0,
            )
        )
    return tuple(entries)
