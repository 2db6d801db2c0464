"""Read the running system into a Layout: lsblk for the device tree, sfdisk for tables, blkid for
what each device holds, tune2fs/xfs_info for filesystem details, findmnt for mounts, mdadm, lvm and
cryptsetup for the stacked devices (and vgcfgbackup for each VG's metadata). Every command goes
through mkrec.runner.

A disk that cannot be opened (some VMs refuse even root: EPERM) is still described from lsblk, sysfs
and the mounted filesystems, with a note saying what is missing; capture never stops on it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkrec.errors import MkrecError
from mkrec.layout import parse
from mkrec.layout.model import (
    FS_TYPES,
    Disk,
    Filesystem,
    LuksContainer,
    Partition,
    RaidArray,
    Swap,
    VolumeGroup,
)
from mkrec.layout.sourcedisks import block_devices
from mkrec.runner import run, run_json

log = logging.getLogger("mkrec.layout")

# Without udev, or with an LVM devices file that does not list them, lvm would skip devices the
# capture must see; reporting is read-only, so scanning every device is safe.
LVM_CONFIG = "devices { use_devicesfile=0 }"
FINDMNT_COLUMNS = "SOURCE,TARGET,FSTYPE,OPTIONS,SIZE,USED,UUID,LABEL,MAJ:MIN,FSROOT"


@dataclass(frozen=True)
class Mount:
    target: str
    fstype: str
    options: str
    size: int | None
    used: int | None
    uuid: str | None
    label: str | None
    own_root: bool = True


@dataclass
class Probed:
    """What the probe found: the items of a Layout, plus what capture writes beside it."""

    disks: list[Disk] = field(default_factory=list)
    raids: list[RaidArray] = field(default_factory=list)
    vgs: list[VolumeGroup] = field(default_factory=list)
    luks: list[LuksContainer] = field(default_factory=list)
    filesystems: list[Filesystem] = field(default_factory=list)
    swaps: list[Swap] = field(default_factory=list)
    dumps: dict[str, str] = field(default_factory=dict)  # disk name -> `sfdisk --dump` text
    vg_metadata: dict[str, str] = field(default_factory=dict)  # VG name -> `vgcfgbackup` text
    paths: dict[str, str] = field(default_factory=dict)  # device name -> /dev path
    disk_of: dict[str, list[str]] = field(default_factory=dict)  # device name -> disks below it


def can_open(path: str) -> str | None:
    """None if the device can be read, else why not ("EPERM")."""
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return None


def parse_findmnt(data: dict[str, Any]) -> dict[str, Mount]:
    """maj:min -> its mount. A device mounted twice (bind mounts) keeps the mount of its own root."""
    mounts: dict[str, Mount] = {}
    for row in data.get("filesystems", []):
        majmin = row.get("maj:min") or ""
        if majmin in mounts and (row.get("fsroot") != "/" or mounts[majmin].own_root):
            continue
        mounts[majmin] = Mount(
            target=row["target"],
            fstype=row.get("fstype") or "",
            options=row.get("options") or "",
            size=row.get("size"),
            used=row.get("used"),
            uuid=parse.blank(row.get("uuid")),
            label=parse.blank(row.get("label")),
            own_root=row.get("fsroot") == "/",
        )
    return mounts


def resolve_disks(requested: list[str], devs: dict[str, parse.BlockDev]) -> list[str]:
    """/dev/sda, sda or a /dev/disk/by-* link -> kernel names, each checked against lsblk."""
    knames = []
    for item in requested:
        path = Path(item if item.startswith("/") else f"/dev/{item}")
        kname = path.resolve().name if path.exists() else path.name
        if kname not in devs:
            raise MkrecError(
                f"disk {item}: no such block device", hint="see lsblk for the disks, or fix [source] disks"
            )
        if devs[kname].type not in ("disk", "loop"):
            raise MkrecError(f"disk {item}: is a {devs[kname].type}, not a whole disk", hint="give the disk")
        knames.append(kname)
    return knames


def probe(requested: list[str]) -> Probed:
    devs = block_devices()
    knames = resolve_disks(requested, devs)
    relevant = parse.descendants(devs, knames)
    mounts = parse_findmnt(run_json(["findmnt", "-J", "-b", "-l", "-o", FINDMNT_COLUMNS]))
    out = Probed()

    vg_rows = _probe_lvm() if any(devs[k].type == "lvm" for k in relevant) else None
    lv_by_majmin = vg_rows[1] if vg_rows else {}
    names: dict[str, str] = {}
    for k in relevant:
        dev = devs[k]
        names[k] = lv_by_majmin.get(dev.majmin) or (dev.name if dev.type == "crypt" else k)
        out.paths[names[k]] = f"/dev/{k}"
    by_path = {f"/dev/{k}": names[k] for k in relevant}
    # lvm and mdadm may name a dm device by its /dev/mapper link
    by_path |= {f"/dev/mapper/{devs[k].name}": names[k] for k in relevant if devs[k].type == "crypt"}

    def disks_below(k: str) -> list[str]:
        ups = devs[k].parents
        if not ups or k in knames:
            return [names[k]]
        return sorted({d for up in ups if up in names for d in disks_below(up)})

    out.disk_of = {names[k]: disks_below(k) for k in relevant}
    unreadable: set[str] = set()
    for k in knames:
        disk = _probe_disk(devs, k, out)
        out.disks.append(disk)
        if not disk.readable:
            unreadable |= {c for c in relevant if disks_below(c) == [names[k]]}
    if vg_rows:
        wanted = set(names.values())
        out.vgs = [vg for vg in vg_rows[0](by_path) if any(pv.device in wanted for pv in vg.pvs)]
        out.vg_metadata = {vg.name: vgcfgbackup(vg.name) for vg in out.vgs}

    for k in relevant:
        dev = devs[k]
        name = names[k]
        if dev.type.startswith("raid") or dev.type == "linear":
            text = run(["mdadm", "--detail", "--export", f"/dev/{k}"]).stdout
            raid = with_absent_members(parse.parse_mdadm_export(text, name, by_path), dev.parents, names)
            out.raids.append(RaidArray(**{**raid.__dict__, "size": dev.size, "chunk_size": _chunk(k)}))
        if k in knames and out.disks[knames.index(k)].label is not None:
            continue  # a partitioned disk holds partitions, not a filesystem
        _probe_contents(dev, name, k in unreadable, mounts.get(dev.majmin), devs, names, out)
    return out


def with_absent_members(raid: RaidArray, parents: list[str], names: dict[str, str]) -> RaidArray:
    """A degraded array as it should be: the members lsblk found out of it (parse.add_absent_members)
    join the record, so the restore rebuilds it whole. The administrator is told either way."""
    absent = tuple(names[p] for p in parents if p in names and names[p] not in raid.members)
    missing = (raid.raid_devices or 0) - len(raid.members) - len(absent)
    if absent:
        log.warning(
            "warning: RAID %s is degraded: %s is out of it; the backup records it as a member, so the "
            "restore rebuilds %s whole (here: mdadm /dev/%s --add /dev/%s)",
            raid.name, ", ".join(absent), raid.name, raid.name, absent[0],
        )  # fmt: skip
    if missing > 0:
        log.warning(
            "warning: RAID %s is degraded: %d of %d members are missing; the restore recreates it "
            "degraded (add a disk with mdadm /dev/%s --add DEV afterwards)",
            raid.name, missing, raid.raid_devices, raid.name,
        )  # fmt: skip
    return RaidArray(**{**raid.__dict__, "members": raid.members + absent})


def _chunk(kname: str) -> int | None:
    try:
        value = int(Path(f"/sys/block/{kname}/md/chunk_size").read_text())
    except (OSError, ValueError):
        return None
    return value or None


def _probe_disk(devs: dict[str, parse.BlockDev], k: str, out: Probed) -> Disk:
    dev = devs[k]
    path = f"/dev/{k}"
    identity: dict[str, Any] = dict(
        name=k,
        size=dev.size,
        logical_sector=dev.log_sec,
        physical_sector=dev.phy_sec,
        model=dev.model,
        serial=dev.serial,
        wwn=dev.wwn,
    )
    why = can_open(path)
    if why is not None:
        parts = _sysfs_partitions(devs, k)
        note = (
            f"cannot be opened ({why}): partition table, boot sectors and filesystem details are "
            "missing; what is here comes from lsblk, sysfs and the mounted filesystems"
        )
        return Disk(**identity, readable=False, note=note, partitions=parts)
    proc = run(["sfdisk", "-J", path], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return Disk(**identity)  # no partition table: the disk itself holds a filesystem or a member
    table = parse.parse_sfdisk(json.loads(proc.stdout))
    out.dumps[k] = run(["sfdisk", "--dump", path]).stdout
    return Disk(
        **identity,
        label=table.label,
        id=table.id,
        first_lba=table.first_lba,
        last_lba=table.last_lba,
        partitions=table.partitions,
    )


def _sysfs_partitions(devs: dict[str, parse.BlockDev], k: str) -> tuple[Partition, ...]:
    """Start and size from sysfs (512-byte units) when the table itself cannot be read."""
    parts = []
    ls = devs[k].log_sec
    for child in devs.values():
        if child.type != "part" or k not in child.parents:
            continue
        sys = Path("/sys/class/block") / child.kname
        try:
            number = int((sys / "partition").read_text())
            start = int((sys / "start").read_text()) * 512 // ls
            size = int((sys / "size").read_text()) * 512 // ls
        except (OSError, ValueError):
            continue
        parts.append(Partition(name=child.kname, number=number, start=start, size=size, type="unknown"))
    return tuple(parts)


def _probe_contents(
    dev: parse.BlockDev,
    name: str,
    unreadable: bool,
    mount: Mount | None,
    devs: dict[str, parse.BlockDev],
    names: dict[str, str],
    out: Probed,
) -> None:
    """What a device holds: a filesystem, swap, a LUKS container (RAID and LVM members are
    described by their array and volume group)."""
    path = f"/dev/{dev.kname}"
    info: dict[str, str] = {}
    if not unreadable and can_open(path) is None:
        info = parse.parse_export(run(["blkid", "-p", "-o", "export", path], check=False).stdout)
    fstype = info.get("TYPE") or (mount.fstype if mount else "")
    if fstype == "swap":
        out.swaps.append(Swap(name, parse.blank(info.get("UUID")), parse.blank(info.get("LABEL")), dev.size))
    elif fstype == "crypto_LUKS":
        luks = parse.parse_luksdump(run(["cryptsetup", "luksDump", path]).stdout)
        opened = [c for c in devs.values() if c.type == "crypt" and dev.kname in c.parents]
        out.luks.append(
            LuksContainer(
                device=name,
                name=names[opened[0].kname] if opened else f"luks-{luks.uuid}",
                version=luks.version,
                uuid=luks.uuid,
                cipher=luks.cipher,
                key_size=luks.key_size,
                label=luks.label,
                opened=bool(opened),
            )
        )
    elif fstype in FS_TYPES:
        detail = _fs_detail(fstype, path, info) if info else parse.FsDetail()
        out.filesystems.append(
            Filesystem(
                device=name,
                type=fstype,
                uuid=parse.blank(info.get("UUID")) or (mount.uuid if mount else None),
                label=parse.blank(info.get("LABEL")) or (mount.label if mount else None),
                block_size=detail.block_size,
                features=detail.features,
                size=detail.size or (mount.size if mount else None) or dev.size,
                used=mount.used if mount else detail.used,
                mountpoint=mount.target if mount else None,
                options=mount.options if mount else None,
            )
        )


def _fs_detail(fstype: str, path: str, info: dict[str, str]) -> parse.FsDetail:
    if fstype in ("ext2", "ext3", "ext4"):
        return parse.parse_tune2fs(run(["tune2fs", "-l", path]).stdout)
    if fstype == "xfs":
        return parse.parse_xfs_info(run(["xfs_info", path]).stdout)
    if fstype == "vfat":
        # The FAT variant decides what mkfs.vfat -F must make again.
        version = info.get("VERSION")
        return parse.FsDetail(features=(version,) if version else ())
    return parse.FsDetail()


def vgcfgbackup(vg: str) -> str:
    """The VG's metadata in LVM's own text format: what vgcfgrestore takes back."""
    with tempfile.TemporaryDirectory(prefix="mkrec-vgcfg-") as tmp:
        path = Path(tmp) / f"{vg}.txt"
        run(["vgcfgbackup", "--config", LVM_CONFIG, "-f", str(path), vg])
        return path.read_text()


def _probe_lvm() -> tuple[Any, dict[str, str]]:
    """The lvm reports, and maj:min -> "vg/lv" for naming the LV devices lsblk lists."""
    common = ["--config", LVM_CONFIG, "--reportformat", "json", "--units", "b", "--nosuffix", "-o"]
    pvs = run_json(["pvs", *common, "pv_name,vg_name,pv_uuid,pv_size"])
    vgs = run_json(["vgs", *common, "vg_name,vg_uuid,vg_extent_size"])
    lvs = run_json(
        [
            "lvs",
            *common,
            "vg_name,lv_name,lv_size,segtype,lv_uuid,stripes,lv_kernel_major,lv_kernel_minor",
        ]
    )
    by_majmin = {
        f"{lv['lv_kernel_major']}:{lv['lv_kernel_minor']}": f"{lv['vg_name']}/{lv['lv_name']}"
        for report in lvs.get("report", [])
        for lv in report.get("lv", [])
        if str(lv.get("lv_kernel_major", "-1")).isdigit()
    }

    def groups(pv_name: dict[str, str]) -> list[VolumeGroup]:
        return parse.parse_lvm(pvs, vgs, lvs, pv_name)

    return groups, by_majmin
