"""Restore engine decisions without writing anything: sfdisk dumps, resize maths, disk mapping and
target safety (on real lsblk output), exact command lines, the journal's resume logic, fstab fixes."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from mkrec.backup.catalog import CatalogEntry
from mkrec.errors import MkrecError
from mkrec.layout.model import (
    BootKind,
    BootLoader,
    LogicalVolume,
    LuksContainer,
    PhysicalVolume,
    RaidArray,
    VolumeGroup,
)
from mkrec.progress import Progress
from mkrec.restore import restorefs
from mkrec.restore.apply import argv as cmd
from mkrec.restore.apply import bootloader, engine, layers, mounts, unpack
from mkrec.restore.apply.fstab import fix_crypttab, fix_fstab
from mkrec.restore.apply.journal import Journal, read_steps
from mkrec.restore.apply.mounts import mounts_below
from mkrec.restore.apply.steps import Steps
from mkrec.restore.decide import stack
from mkrec.restore.decide.mapping import map_disks, parse_map
from mkrec.restore.decide.model import SavedDisk, SavedFs, SavedSystem
from mkrec.restore.decide.plan import Plan, edit_clone_tables, make_plan, render_plan
from mkrec.restore.decide.present import PresentDisk, parse_lsblk, protected_disks, swap_devices
from mkrec.restore.decide.resize import (
    MD_RESERVE,
    clone_layout,
    member_need,
    min_fs_bytes,
    need_bytes,
    render_rows,
    scale_volumes,
)
from mkrec.restore.decide.sfdisk import MIB, parse_dump, partition_node, render_script, same_table
from mkrec.restore.decide.source import Damage, RestoreSet

FIX = Path(__file__).parent / "fixtures" / "restore"
GIB = 1024 * MIB


def gpt() -> SavedDisk:
    return SavedDisk("/dev/sda", 256 * MIB, parse_dump((FIX / "gpt.dump").read_text()))


def gpt_fs(used_root: int = 50 * MIB, used_data: int = 10 * MIB) -> dict[int, SavedFs]:
    return {
        2: SavedFs("/dev/sda2", "vfat", "ABCD-1234", "ESP", "", 32 * MIB, 1 * MIB, raw="sda2.vfat.img.zst"),
        3: SavedFs("/dev/sda3", "ext4", "u3", "root", "/", 160 * MIB, used_root, stream="sda3.ext4.tar.zst"),
        4: SavedFs(
            "/dev/sda4", "ext4", "u4", "data", "/data", 61 * MIB, used_data, stream="sda4.ext4.tar.zst"
        ),
    }


def system(disk: SavedDisk | None = None, fss: dict[int, SavedFs] | None = None) -> SavedSystem:
    return SavedSystem((disk or gpt(),), tuple((fss or gpt_fs()).values()), set_id="set1")


# ---- sfdisk dumps ----


def test_gpt_dump_parses_every_field() -> None:
    t = parse_dump((FIX / "gpt.dump").read_text())
    assert (t.label, t.label_id, t.first_lba, t.sector_size) == (
        "gpt",
        "5B5F19E8-2EAE-0F41-BE06-89BBFA5BBEF7",
        2048,
        512,
    )
    assert [(p.number, p.start, p.size, p.name) for p in t.partitions] == [
        (1, 2048, 2048, "bios"),
        (2, 4096, 65536, "esp"),
        (3, 69632, 327680, "root"),
        (4, 397312, 124928, "data"),
    ]
    assert t.partitions[0].uuid == "985758C6-0C51-A24B-81A7-3009DCAB28D0"


def test_script_for_another_device_keeps_ids_and_drops_old_device_facts() -> None:
    t = parse_dump((FIX / "gpt.dump").read_text())
    script = render_script(t, "/dev/loop7")
    assert "device:" not in script and "last-lba" not in script  # sfdisk computes them for the new disk
    assert "label-id: 5B5F19E8-2EAE-0F41-BE06-89BBFA5BBEF7" in script
    assert "/dev/loop7p3 : start=       69632, size=      327680, type=0FC63DAF" in script
    assert same_table(parse_dump(script), t)
    # the flags BIOS boot code looks for must come back too (gptmbr.bin, mbr.bin)
    flagged = t.with_partitions((dataclasses.replace(t.partitions[0], attrs="LegacyBIOSBootable"),
                                 *t.partitions[1:]))  # fmt: skip
    assert 'attrs="LegacyBIOSBootable"' in render_script(flagged, "/dev/loop7")
    assert not same_table(flagged, t)
    assert not same_table(t.with_partitions((dataclasses.replace(t.partitions[0], bootable=True),
                                             *t.partitions[1:])), t)  # fmt: skip


def test_mbr_with_extended_and_logical_partitions() -> None:
    t = parse_dump((FIX / "mbr-extended.dump").read_text())
    assert t.label == "dos" and t.label_id == "0xdd6ff9e2"
    assert [p.number for p in t.partitions] == [1, 2, 3, 5, 6]
    assert t.partitions[0].bootable and t.partition(3).is_extended
    assert "bootable" in render_script(t, "/dev/sdb").splitlines()[5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("label: sun\n", "label is 'sun'"),
        ("label: gpt\n/dev/sda1 : size=5\n", "sfdisk dump:2: a partition needs numeric start= and size="),
        ("label: gpt\nwhat is this\n", "sfdisk dump:2: cannot read 'what is this'"),
    ],
)
def test_bad_dumps_say_where(text: str, message: str) -> None:
    with pytest.raises(MkrecError, match=message):
        parse_dump(text)


def test_partition_node_names() -> None:
    assert partition_node("/dev/sda", 2) == "/dev/sda2"
    assert partition_node("/dev/nvme0n1", 2) == "/dev/nvme0n1p2"
    assert partition_node("/dev/loop3", 1) == "/dev/loop3p1"


# ---- resize maths ----


def test_clone_larger_scales_only_the_flexible_partitions_aligned() -> None:
    d = gpt()
    out = clone_layout(d.table, d.size, int(d.size * 1.4), gpt_fs())
    new = {p.number: p for p in out.table.partitions}
    old = {p.number: p for p in d.table.partitions}
    assert new[1].size == old[1].size and new[2].size == old[2].size  # BIOS boot and ESP kept
    assert new[3].size > old[3].size and new[4].size > old[4].size
    for p in out.table.partitions:
        assert p.start % 2048 == 0, "every start on a 1 MiB boundary"
    starts = sorted(out.table.partitions, key=lambda p: p.start)
    assert all(a.end <= b.start for a, b in itertools.pairwise(starts))
    # the last partition filled the old disk, so it fills the new one (up to the backup GPT)
    assert new[4].end <= int(d.size * 1.4) // 512 - 34
    assert new[4].end > int(d.size * 1.4) // 512 - 34 - 2048
    # ids are kept: a clone boots with the same fstab/GRUB references
    assert [p.uuid for p in out.table.partitions] == [p.uuid for p in d.table.partitions]
    assert out.table.label_id == d.table.label_id


def test_clone_proportions() -> None:
    d = gpt()
    out = clone_layout(d.table, d.size, 2 * d.size, gpt_fs())
    old = {p.number: p.size for p in d.table.partitions}
    new = {p.number: p.size for p in out.table.partitions}
    # root got about (2*256 - 33 fixed) / (256 - 33) times its size, within alignment
    ratio = new[3] / old[3]
    assert 2.1 < ratio < 2.2


def imaged_data(fstype: str) -> dict[int, SavedFs]:
    """gpt_fs with the data partition saved as an image (e.g. NTFS, or in [source] raw)."""
    data = SavedFs("/dev/sda4", fstype, "u4", "data", "", 61 * MIB, 10 * MIB, raw=f"sda4.{fstype}.img.zst")
    return {**gpt_fs(), 4: data}


@pytest.mark.parametrize("fstype", ["ntfs", "ext4"])
def test_growable_images_grow_with_a_larger_disk_and_never_shrink(fstype: str) -> None:
    d = gpt()
    old = {p.number: p.size for p in d.table.partitions}
    larger = clone_layout(d.table, d.size, 2 * d.size, imaged_data(fstype))
    new = {p.number: p.size for p in larger.table.partitions}
    assert new[4] > 2 * old[4] and new[3] > 2 * old[3]  # the restore grows the image's file system
    assert "kept" not in render_rows(larger.rows).splitlines()[-1]
    smaller = clone_layout(d.table, d.size, 200 * MIB, imaged_data(fstype))
    assert {p.number: p.size for p in smaller.table.partitions}[4] == old[4]
    assert "kept (raw image)" in render_rows(smaller.rows)


def test_images_the_restore_cannot_grow_keep_their_size() -> None:
    d = gpt()
    out = clone_layout(d.table, d.size, 2 * d.size, imaged_data("xfs"))
    assert {p.number: p.size for p in out.table.partitions}[4] == d.table.partition(4).size
    assert "kept (raw image)" in render_rows(out.rows)


def test_clone_smaller_but_fits() -> None:
    d = gpt()
    out = clone_layout(d.table, d.size, 200 * MIB, gpt_fs(used_root=20 * MIB, used_data=2 * MIB))
    total = max(p.end for p in out.table.partitions) * 512
    assert total <= 200 * MIB - 34 * 512
    assert "kept (ESP)" in render_rows(out.rows)


def test_clone_refuses_when_data_does_not_fit() -> None:
    d = gpt()
    with pytest.raises(MkrecError, match=r"partition 3 \(/\): .* < ") as exc:
        clone_layout(d.table, d.size, 128 * MIB, gpt_fs(used_root=100 * MIB))
    assert "data will not fit" in str(exc.value)


def test_clone_refuses_a_disk_too_small_for_the_fixed_partitions() -> None:
    d = gpt()
    with pytest.raises(MkrecError, match="cannot hold the fixed-size partitions"):
        clone_layout(d.table, d.size, 30 * MIB, gpt_fs())


def test_swap_and_boot_are_fixed_unless_asked() -> None:
    d = gpt()
    fss = gpt_fs()
    fss[4] = SavedFs("/dev/sda4", "swap", "u4")
    kept = clone_layout(d.table, d.size, 2 * d.size, fss)
    assert kept.table.partition(4).size == d.table.partition(4).size
    scaled = clone_layout(d.table, d.size, 2 * d.size, fss, resize_swap=True)
    assert scaled.table.partition(4).size > d.table.partition(4).size
    fss[3] = SavedFs("/dev/sda3", "ext4", "u3", mountpoint="/boot", used=MIB)
    assert clone_layout(d.table, d.size, 2 * d.size, fss).table.partition(3).size == d.table.partition(3).size


RAID_DUMP = """label: gpt
label-id: 7E0C1F3A-27B4-4C4B-9D35-2C1C8F2B5E11
device: /dev/{disk}
unit: sectors
first-lba: 2048
last-lba: 6291422
sector-size: 512

/dev/{disk}1 : start=        2048, size=        2048, type=21686148-6449-6E6F-744E-656564454649, uuid={u}1
/dev/{disk}2 : start=        4096, size=     6287327, type=A19D880F-05FC-4D3B-A006-743F0F84911E, uuid={u}2
"""


def stacked_system(holds: str, level: str = "raid1") -> SavedSystem:
    """Two 3 GiB disks, a BIOS boot partition and one RAID member each; md0 holds / (1 GiB used) or
    an LVM physical volume with / (1 GiB used) and a 384 MiB swap; holds "luks": no RAID, each
    second partition a LUKS2 container holding a PV of that VG, as Debian's installer makes it."""
    disks = tuple(
        SavedDisk(
            f"/dev/{d}",
            3 * GIB,
            parse_dump(RAID_DUMP.format(disk=d, u=f"0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F{i}")),
        )
        for i, d in enumerate(("vda", "vdb"))
    )
    raid = RaidArray("md0", level, ("vda2", "vdb2"), metadata="1.2", raid_devices=2)
    root = SavedFs("/dev/md0", "ext4", "u-root", "", "/", 3 * GIB, GIB, stream="md0.ext4.tar.zst")
    if holds == "fs":
        return SavedSystem(disks, (root,), raids=(raid,))
    lvs = (LogicalVolume("root", 2 * GIB), LogicalVolume("swap_1", 384 * MIB))
    root = dataclasses.replace(root, device="/dev/vg0/root", size=2 * GIB)
    swap = SavedFs("/dev/vg0/swap_1", "swap", "u-swap", size=384 * MIB)
    if holds == "pv":
        vg = VolumeGroup("vg0", 4 * MIB, pvs=(PhysicalVolume("md0", size=3 * GIB - 132 * MIB),), lvs=lvs)
        return SavedSystem(disks, (root, swap), raids=(raid,), vgs=(vg,))
    luks = tuple(LuksContainer(f"{d}2", f"{d}2_crypt", 2) for d in ("vda", "vdb"))
    pvs = tuple(PhysicalVolume(c.name, size=3 * GIB - 20 * MIB) for c in luks)
    vg = VolumeGroup("vg0", 4 * MIB, pvs=pvs, lvs=lvs)
    return SavedSystem(disks, (root, swap), vgs=(vg,), luks=luks)


EXPLICIT = {"vda": "/dev/vda", "vdb": "/dev/vdb"}


def two_disks(size: int) -> list[PresentDisk]:
    return [PresentDisk("/dev/vda", size), PresentDisk("/dev/vdb", size)]


def test_raid_members_shrink_with_the_array_when_its_file_system_fits() -> None:
    plan = make_plan(stacked_system("fs"), "clone", two_disks(2 * GIB), EXPLICIT, {})
    for d in plan.disks:
        assert 1.9 * GIB < d.table.partition(2).size * 512 < 2 * GIB  # scaled to fill the smaller disk
        (row,) = [r for r in d.rows if r.number == 2]
        assert row.what == "raid md0" and row.fixed == ""
        assert row.need == min_fs_bytes("ext4", GIB) + MD_RESERVE
    with pytest.raises(MkrecError, match=r"partition 2 \(raid md0\): .* < "):
        make_plan(stacked_system("fs"), "clone", two_disks(GIB), EXPLICIT, {})


@pytest.mark.parametrize("holds", ["pv", "luks"])
def test_a_volume_group_on_raid1_or_luks_shrinks_with_its_partitions(holds: str) -> None:
    plan = make_plan(stacked_system(holds), "clone", two_disks(2 * GIB), EXPLICIT, {})
    rows = {r.name: r for r in plan.lv_rows}
    # Each PV: its partition's new size less what the saved PV lacked of its saved partition.
    member = plan.disks[0].table.partition(2).size * 512
    saved = stacked_system(holds)
    reserve = saved.disks[0].table.partition(2).size * 512 - (saved.vgs[0].pvs[0].size or 0)
    expected = len(saved.vgs[0].pvs) * (member - reserve)
    assert member < 2 * GIB and expected - 8 * MIB < rows["vg0/root"].vg_size <= expected
    vg_size = rows["vg0/root"].vg_size
    assert rows["vg0/swap_1"].new_size == 384 * MIB  # kept (swap)
    assert GIB < rows["vg0/root"].new_size <= vg_size - 384 * MIB
    with pytest.raises(MkrecError, match=r"LV vg0/root .* needs"):
        make_plan(stacked_system(holds), "clone", two_disks(1200 * MIB), EXPLICIT, {})


def test_a_volume_group_on_striped_raid_only_grows() -> None:
    plan = make_plan(stacked_system("pv", level="raid0"), "clone", two_disks(5 * GIB), EXPLICIT, {})
    assert all(d.table.partition(2).size * 512 > 4.9 * GIB for d in plan.disks)
    with pytest.raises(MkrecError, match="cannot hold the fixed-size partitions"):
        make_plan(stacked_system("pv", level="raid0"), "clone", two_disks(2 * GIB), EXPLICIT, {})


def test_what_each_raid_member_needs_follows_the_level() -> None:
    assert member_need("raid1", 2, 10 * GIB) == 10 * GIB + MD_RESERVE
    assert member_need("raid0", 2, 10 * GIB) == 5 * GIB + MD_RESERVE
    assert member_need("raid5", 3, 10 * GIB) == 5 * GIB + MD_RESERVE
    assert member_need("raid6", 4, 10 * GIB) == 5 * GIB + MD_RESERVE
    assert member_need("raid10", 4, 10 * GIB) == 5 * GIB + MD_RESERVE


def test_clone_refuses_extended_partitions() -> None:
    t = parse_dump((FIX / "mbr-extended.dump").read_text())
    with pytest.raises(MkrecError, match="extended"):
        clone_layout(t, 512 * MIB, GIB, {})


def test_min_fs_bytes() -> None:
    assert min_fs_bytes("ext4", 100 * MIB) == 100 * MIB + 10 * MIB + 16 * MIB
    assert min_fs_bytes("xfs", 1 * MIB) == 300 * MIB


def test_scale_volumes_keeps_fixed_and_whole_extents() -> None:
    ext = 4 * MIB
    out = scale_volumes([(1 * GIB, False), (512 * MIB, True), (2 * GIB, False)], 4 * GIB, 8 * GIB, ext)
    assert out[1] == 512 * MIB
    assert all(s % ext == 0 for s in out)
    assert sum(out) <= 8 * GIB
    assert abs(out[2] - 2 * out[0]) <= ext
    with pytest.raises(MkrecError):
        scale_volumes([(1 * GIB, True)], 2 * GIB, 512 * MIB, ext)


# ---- present disks, protected disks, mapping ----


def host_disks() -> list[PresentDisk]:
    return parse_lsblk(json.loads((FIX / "lsblk-host.json").read_text()))


def test_lsblk_host_fixture() -> None:
    disks = {d.path: d for d in host_disks()}
    assert disks["/dev/vda"].type == "disk" and "/" in disks["/dev/vda"].mountpoints


def test_lsblk_mounted_loop_partition() -> None:
    (disk,) = parse_lsblk(json.loads((FIX / "lsblk-loop-mounted.json").read_text()))
    assert disk.type == "loop" and disk.size == 256 * MIB
    assert disk.path + "p3" in disk.nodes and disk.mountpoints == ("/tmp/fxm",)


def test_protected_disks() -> None:
    disks = [
        PresentDisk("/dev/sda", 10 * GIB, nodes=("/dev/sda", "/dev/sda1"), mountpoints=("/run/backup",)),
        PresentDisk("/dev/sdb", 10 * GIB, nodes=("/dev/sdb", "/dev/sdb1")),
        PresentDisk("/dev/sdc", 10 * GIB, nodes=("/dev/sdc",)),
        PresentDisk("/dev/sdd", 10 * GIB, nodes=("/dev/sdd", "/dev/sdd2"), mountpoints=("/mnt/target/data",)),
        PresentDisk("/dev/sde", 10 * GIB, nodes=("/dev/sde", "/dev/sde1")),
    ]
    why = protected_disks(
        disks,
        source_node="/dev/sda1",
        boot_node="/dev/sdc",
        swaps=swap_devices("Filename Type Size Used Priority\n/dev/sde1 partition 1 0 -2\n"),
        allowed_mount_root="/mnt/target",
    )
    assert why == {
        "/dev/sda": "holds the backup set",
        "/dev/sdc": "the rescue system booted from it",
        "/dev/sde": "swap is active on /dev/sde1",
    }


def test_host_root_disk_is_protected() -> None:
    assert "/dev/vda" in protected_disks(host_disks())


def test_parse_map() -> None:
    assert parse_map(["sda=/dev/vdb", "/dev/sdb=/dev/vdc"]) == {"sda": "/dev/vdb", "sdb": "/dev/vdc"}
    with pytest.raises(MkrecError, match="SAVED=DEV"):
        parse_map(["sda"])


def saved(name: str, size: int, serial: str = "", wwn: str = "") -> SavedDisk:
    return SavedDisk(name, size, gpt().table, serial=serial, wwn=wwn)


def test_mapping_by_wwn_ignores_names() -> None:
    present = [
        PresentDisk("/dev/sda", 20 * GIB, wwn="0x1"),
        PresentDisk("/dev/sdb", 20 * GIB, wwn="0x2"),
    ]
    (c,) = map_disks([saved("/dev/sda", 20 * GIB, wwn="0x2")], present, {}, {}, need_same_size=True)
    assert (c.target.path, c.how) == ("/dev/sdb", "same WWN")


def test_mapping_by_size_when_one_fits() -> None:
    present = [PresentDisk("/dev/vda", 10 * GIB), PresentDisk("/dev/vdb", 30 * GIB)]
    (c,) = map_disks([saved("/dev/sda", 20 * GIB)], present, {}, {}, need_same_size=True)
    assert (c.target.path, c.how) == ("/dev/vdb", "only disk large enough")


def test_mapping_ambiguous_is_refused_without_a_person() -> None:
    present = [PresentDisk("/dev/vdb", 30 * GIB), PresentDisk("/dev/vdc", 40 * GIB)]
    with pytest.raises(MkrecError, match="could go to any of /dev/vdb, /dev/vdc") as exc:
        map_disks([saved("/dev/sda", 20 * GIB)], present, {}, {}, need_same_size=True)
    assert exc.value.hint == "name the target with --map sda=DEV"


def test_mapping_identical_disks_go_back_by_name() -> None:
    """A RAID1's two same-size disks on two blank same-size disks: no WWN or serial to tell them
    apart, so each goes to the disk of its own name (unattended restores must not stop there)."""
    present = [PresentDisk("/dev/vda", 3 * GIB), PresentDisk("/dev/vdb", 3 * GIB)]
    choices = map_disks(
        [saved("/dev/vda", 3 * GIB), saved("/dev/vdb", 3 * GIB)], present, {}, {}, need_same_size=True
    )
    assert [(c.target.path, c.how) for c in choices] == [("/dev/vda", "same name"), ("/dev/vdb", "same size")]
    # larger disks (clone): the same
    present = [PresentDisk("/dev/vdb", 5 * GIB), PresentDisk("/dev/vda", 5 * GIB)]
    (c,) = map_disks([saved("/dev/vda", 3 * GIB)], present, {}, {}, need_same_size=False)
    assert (c.target.path, c.how) == ("/dev/vda", "same name")


def test_mapping_ambiguous_asks() -> None:
    present = [PresentDisk("/dev/vdb", 30 * GIB), PresentDisk("/dev/vdc", 40 * GIB)]
    (c,) = map_disks(
        [saved("/dev/sda", 20 * GIB)], present, {}, {}, need_same_size=True, choose=lambda s, cands: cands[1]
    )
    assert (c.target.path, c.how) == ("/dev/vdc", "chosen")


def test_mapping_never_picks_loop_or_protected_disks_by_itself() -> None:
    present = [
        PresentDisk("/dev/loop0", 30 * GIB, type="loop"),
        PresentDisk("/dev/vda", 30 * GIB),
        PresentDisk("/dev/vdb", 30 * GIB),
    ]
    (c,) = map_disks(
        [saved("/dev/sda", 20 * GIB)], present, {}, {"/dev/vda": "holds the backup set"}, need_same_size=True
    )
    assert c.target.path == "/dev/vdb"


def test_explicit_map_to_a_protected_disk_is_refused() -> None:
    present = [PresentDisk("/dev/vda", 30 * GIB)]
    with pytest.raises(MkrecError, match=r"refusing to write /dev/vda: / is mounted from it"):
        map_disks(
            [saved("/dev/sda", 20 * GIB)],
            present,
            {"sda": "/dev/vda"},
            {"/dev/vda": "/ is mounted from it"},
            need_same_size=True,
        )


def test_start_refuses_a_smaller_disk_clone_accepts_it() -> None:
    present = [PresentDisk("/dev/loop9", 200 * MIB, type="loop")]
    with pytest.raises(MkrecError, match="smaller than saved disk sda") as exc:
        make_plan(system(), "start", present, {"sda": "/dev/loop9"}, {})
    assert "clone" in (exc.value.hint or "")
    plan = make_plan(
        system(fss=gpt_fs(used_root=20 * MIB, used_data=1 * MIB)), "clone", present, {"sda": "/dev/loop9"}, {}
    )
    assert plan.disks[0].rows and "ERASE /dev/loop9" in render_plan(plan)


def test_unknown_saved_disk_in_map() -> None:
    with pytest.raises(MkrecError, match="there is no saved disk sdz"):
        make_plan(system(), "start", [PresentDisk("/dev/vdb", GIB)], {"sdz": "/dev/vdb"}, {})


def test_plan_maps_nodes_and_has_a_stable_id() -> None:
    present = [PresentDisk("/dev/loop9", 300 * MIB, type="loop")]
    a = make_plan(system(), "start", present, {"sda": "/dev/loop9"}, {})
    b = make_plan(system(), "start", present, {"sda": "/dev/loop9"}, {})
    assert a.id == b.id
    assert a.node_map()["/dev/sda3"] == "/dev/loop9p3"
    assert [f.node for f in a.filesystems] == ["/dev/loop9p2", "/dev/loop9p3", "/dev/loop9p4"]
    other = make_plan(system(), "start", [PresentDisk("/dev/loop8", 300 * MIB)], {"sda": "/dev/loop8"}, {})
    assert other.id != a.id


def test_one_fit_rule_for_planned_and_edited_tables() -> None:
    """need_bytes is the rule: an image needs its whole file system, files a new one with room for
    them. make_plan and a table a person edited are checked by it alike (an edited table once let
    an image through: the check for edits looked only at tar streams)."""
    fss = imaged_data("xfs")
    assert need_bytes(fss[4]) == 61 * MIB
    assert need_bytes(fss[3]) == min_fs_bytes("ext4", 50 * MIB)
    assert need_bytes(SavedFs("/dev/sda5", "swap")) == 0
    present = [PresentDisk("/dev/loop9", 2 * 256 * MIB, type="loop")]
    plan = make_plan(system(fss=fss), "clone", present, {"sda": "/dev/loop9"}, {})

    def shrink(number: int) -> Callable[[str], str]:
        def person(prompt: str) -> str:
            path = Path(prompt.split(" is in ", 1)[1].split(";", 1)[0])
            table = parse_dump(path.read_text())
            parts = tuple(
                dataclasses.replace(q, size=8 * MIB // 512) if q.number == number else q
                for q in table.partitions
            )
            path.write_text(render_script(table.with_partitions(parts), "/dev/loop9"))
            return ""

        return person

    with pytest.raises(
        MkrecError, match=r"^/dev/sda4 \(xfs, 10.0 MiB used\) does not fit in 8.0 MiB at /dev/loop9p4"
    ):
        edit_clone_tables(plan, shrink(4))
    with pytest.raises(MkrecError, match=r"^/dev/sda3 \(/, 50.0 MiB used\) does not fit in 8.0 MiB") as exc:
        edit_clone_tables(plan, shrink(3))
    assert exc.value.hint == "edit the table again with more room"
    assert edit_clone_tables(plan, lambda prompt: "").disks == plan.disks


# ---- exact command lines ----


def test_mkfs_argv() -> None:
    u = "0b7a5e5c-3d2a-4f3c-9a0b-1c2d3e4f5a6b"
    assert cmd.mkfs_argv("ext4", "/dev/vdb3", u, "root") == [
        "mkfs.ext4",
        "-F",
        "-q",
        "-U",
        u,
        "-L",
        "root",
        "/dev/vdb3",
    ]
    assert cmd.mkfs_argv("ext3", "/dev/x", u) == ["mkfs.ext3", "-F", "-q", "-U", u, "/dev/x"]
    assert cmd.mkfs_argv("xfs", "/dev/x", u, "data") == [
        "mkfs.xfs",
        "-f",
        "-q",
        "-m",
        f"uuid={u}",
        "-L",
        "data",
        "/dev/x",
    ]
    assert cmd.mkfs_argv("vfat", "/dev/x", "ABCD-1234", "ESP") == [
        "mkfs.vfat",
        "-i",
        "ABCD1234",
        "-n",
        "ESP",
        "/dev/x",
    ]
    assert cmd.mkfs_argv("swap", "/dev/x", u, "sw") == ["mkswap", "-f", "-U", u, "-L", "sw", "/dev/x"]
    assert cmd.mkfs_argv("btrfs", "/dev/x", u) == ["mkfs.btrfs", "-f", "-q", "-U", u, "/dev/x"]
    assert cmd.mkfs_argv("ext4", "/dev/x") == ["mkfs.ext4", "-F", "-q", "/dev/x"]
    with pytest.raises(MkrecError, match="cannot make a ntfs filesystem"):
        cmd.mkfs_argv("ntfs", "/dev/x")


def test_partition_argv() -> None:
    assert cmd.sfdisk_argv("/dev/vdb") == [
        "sfdisk", "-q", "--wipe", "always", "--wipe-partitions", "always", "/dev/vdb"
    ]  # fmt: skip


def test_secure_boot_when_the_restored_system_has_the_signed_chain(tmp_path: Path) -> None:
    """A Debian installed for Secure Boot (shim-signed + grub-efi-amd64-signed) gets the signed
    chain back; one with only grub-efi-amd64 gets plain GRUB (its grub-install has no shim to copy)."""
    assert not bootloader.has_signed_chain(tmp_path)
    for rel in (bootloader.SIGNED_SHIM, bootloader.SIGNED_GRUB_EFI):
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_bytes(b"MZ")
        assert bootloader.has_signed_chain(tmp_path) == (rel == bootloader.SIGNED_GRUB_EFI)


def test_bootloader_argv() -> None:
    assert cmd.grub_bios_argv("/dev/vdb") == ["grub-install", "--target=i386-pc", "--recheck", "/dev/vdb"]
    assert cmd.grub_bios_argv("/dev/vdb", Path("/mnt/target/boot"), "part_gpt ext2") == [
        "grub-install",
        "--target=i386-pc",
        "--recheck",
        "--boot-directory=/mnt/target/boot",
        "--modules=part_gpt ext2",
        "/dev/vdb",
    ]
    assert cmd.grub_efi_argv(Path("/boot/efi")) == [
        "grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi", "--removable", "--no-nvram"
    ]  # fmt: skip
    assert cmd.grub_efi_argv(Path("/boot/efi"), secure_boot=True)[-1] == "--uefi-secure-boot"
    assert cmd.efibootmgr_argv("/dev/vdb", 2, "\\EFI\\BOOT\\BOOTX64.EFI") == [
        "efibootmgr", "--create", "--disk", "/dev/vdb", "--part", "2", "--label", "mkrec restored",
        "--loader", "\\EFI\\BOOT\\BOOTX64.EFI",
    ]  # fmt: skip
    assert cmd.chroot_argv(Path("/mnt/t"), ["grub-install", "/dev/vdb"]) == [
        "chroot",
        "/mnt/t",
        "grub-install",
        "/dev/vdb",
    ]
    assert cmd.grub_modules_for("xfs", "dos") == "part_msdos xfs"
    assert cmd.extlinux_argv(Path("/mnt/t/boot/syslinux")) == [
        "extlinux",
        "--install",
        "/mnt/t/boot/syslinux",
    ]


# ---- extlinux: where it goes, which MBR code ----

SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr")
EXTLINUX = BootLoader(
    BootKind.EXTLINUX, "sda", detail="/boot/extlinux/ldlinux.sys", directory="/boot/extlinux"
)


def extlinux_plan(mbr: bytes, *boots: BootLoader) -> Plan:
    disk = dataclasses.replace(gpt(), mbr=mbr)
    saved = dataclasses.replace(system(disk), boots=boots or (EXTLINUX,))
    return make_plan(
        saved, "start", [PresentDisk("/dev/loop9", 300 * MIB, type="loop")], {"sda": "/dev/loop9"}, {}
    )


def restored_root(tmp_path: Path, own_extlinux: bool = False) -> Path:
    root = tmp_path / "target"
    (root / "boot" / "extlinux").mkdir(parents=True)
    if own_extlinux:
        (root / "usr" / "bin").mkdir(parents=True)
        (root / "usr" / "bin" / "extlinux").touch()
    return root


class Recorder:
    """Stands in for run() and write_boot_code(): records what would have run and been written."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.argvs: list[list[str]] = []
        self.written: list[tuple[str, bytes]] = []
        monkeypatch.setattr(bootloader, "run", self.run)
        monkeypatch.setattr(mounts, "run", self.run)
        monkeypatch.setattr(bootloader, "write_boot_code", lambda dev, code: self.written.append((dev, code)))

    def run(self, argv: list[str | Path], check: bool = True) -> None:
        self.argvs.append([str(a) for a in argv])


def test_extlinux_from_the_rescue_system_into_the_saved_directory_and_the_saved_mbr_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved_mbr = (SYSLINUX_MBR / "gptmbr.bin").read_bytes() + bytes(72)  # the sector as captured
    rec = Recorder(monkeypatch)
    root = restored_root(tmp_path)
    bootloader.install_boot(extlinux_plan(saved_mbr), EXTLINUX, root)
    assert rec.argvs == [["extlinux", "--install", f"{root}/boot/extlinux"]]
    assert rec.written == [("/dev/loop9", saved_mbr[:440])]


def test_extlinux_in_the_restored_systems_chroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(monkeypatch)
    root = restored_root(tmp_path, own_extlinux=True)
    bootloader.install_boot(extlinux_plan(bytes(512)), EXTLINUX, root)
    assert ["chroot", str(root), "extlinux", "--install", "/boot/extlinux"] in rec.argvs
    assert rec.argvs[:3] == [["mount", "--bind", f"/{d}", str(root / d)] for d in ("dev", "proc", "sys")]


def test_mbr_code_saved_when_syslinux_else_the_rescue_systems(tmp_path: Path) -> None:
    mbr, gptmbr = (SYSLINUX_MBR / "mbr.bin").read_bytes(), (SYSLINUX_MBR / "gptmbr.bin").read_bytes()
    altmbr = (SYSLINUX_MBR / "altmbr.bin").read_bytes() + b"\x02"  # boots partition 2
    assert bootloader.mbr_code(altmbr + bytes(72), "dos") == (altmbr, "the saved MBR")
    grub = Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()
    for saved in (bytes(512), grub, b""):  # no code, GRUB's, nothing saved: syslinux's own file
        assert bootloader.mbr_code(saved, "dos") == (mbr, str(SYSLINUX_MBR / "mbr.bin"))
        assert bootloader.mbr_code(saved, "gpt") == (gptmbr, str(SYSLINUX_MBR / "gptmbr.bin"))
    with pytest.raises(MkrecError, match=r"syslinux's gptmbr\.bin is not here") as err:
        bootloader.mbr_code(bytes(512), "gpt", (tmp_path,))
    assert "syslinux-common" in (err.value.hint or "")


def test_no_syslinux_code_and_no_bootable_partition_is_warned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder(monkeypatch)
    bootloader.install_boot(extlinux_plan(bytes(512)), EXTLINUX, restored_root(tmp_path))
    assert rec.written == [("/dev/loop9", (SYSLINUX_MBR / "gptmbr.bin").read_bytes())]
    assert "no partition has the LegacyBIOSBootable attribute" in caplog.text


def test_grub_keeps_the_mbr_when_it_boots_the_same_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(monkeypatch)
    plan = extlinux_plan(bytes(512), BootLoader(BootKind.GRUB_BIOS, "sda"), EXTLINUX)
    bootloader.install_boot(plan, EXTLINUX, restored_root(tmp_path))
    assert rec.argvs[-1][:2] == ["extlinux", "--install"] and rec.written == []


def grub_plan() -> Plan:
    """A GPT system booting GRUB on BIOS and on UEFI, its ESP backed up as files (mounted at /boot/efi)."""
    fss = gpt_fs()
    fss[2] = SavedFs(
        "/dev/sda2", "vfat", "ABCD-1234", "ESP", "/boot/efi", 32 * MIB, MIB, stream="sda2.vfat.tar.zst"
    )
    boots = (
        BootLoader(BootKind.GRUB_BIOS, "sda"),
        BootLoader(BootKind.GRUB_EFI, "sda", "sda2", "EFI/debian/grubx64.efi"),
    )
    saved = dataclasses.replace(system(fss=fss), boots=boots)
    return make_plan(
        saved, "start", [PresentDisk("/dev/loop9", 300 * MIB, type="loop")], {"sda": "/dev/loop9"}, {}
    )


def install_grub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *platforms: str) -> tuple[Path, Recorder]:
    """Run both GRUB installs of grub_plan() on a restored root that has grub-install with the modules of
    `platforms` (none: no grub-install at all), outside UEFI."""
    rec = Recorder(monkeypatch)
    monkeypatch.setattr(bootloader, "EFIVARS", tmp_path / "no-efivars")
    root = tmp_path / "target"
    (root / "usr" / "sbin").mkdir(parents=True)
    if platforms:
        (root / "usr" / "sbin" / "grub-install").touch()
    for platform in platforms:
        (root / "usr" / "lib" / "grub" / platform).mkdir(parents=True)
    plan = grub_plan()
    for boot in plan.system.boots:
        bootloader.install_boot(plan, boot, root)
    return root, rec


def bios_from_rescue(root: Path) -> list[str]:
    return ["grub-install", "--target=i386-pc", "--recheck", f"--boot-directory={root}/boot",
            "--modules=part_gpt ext2", "/dev/loop9"]  # fmt: skip


EFI_IN_CHROOT = [
    "grub-install",
    "--target=x86_64-efi",
    "--efi-directory=/boot/efi",
    "--removable",
    "--no-nvram",
]


def test_grub_from_the_rescue_system_onto_a_mounted_esp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, rec = install_grub(tmp_path, monkeypatch)
    assert rec.argvs == [
        bios_from_rescue(root),
        ["grub-install", "--target=x86_64-efi", f"--efi-directory={root}/boot/efi", "--removable",
         "--no-nvram", f"--boot-directory={root}/boot"],
    ]  # fmt: skip


def test_grub_in_the_chroot_only_for_a_platform_it_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, rec = install_grub(tmp_path, monkeypatch, "x86_64-efi")  # a UEFI system without grub-pc-bin
    binds = [["mount", "--bind", f"/{d}", str(root / d)] for d in ("dev", "proc", "sys")]
    unbinds = [["umount", "-l", str(root / d)] for d in ("sys", "proc", "dev")]
    assert rec.argvs == [bios_from_rescue(root), *binds, ["chroot", str(root), *EFI_IN_CHROOT], *unbinds]
    root, rec = install_grub(tmp_path / "both", monkeypatch, "i386-pc", "x86_64-efi")
    assert [a for a in rec.argvs if a[0] == "chroot"] == [
        ["chroot", str(root), "grub-install", "--target=i386-pc", "--recheck", "/dev/loop9"],
        ["chroot", str(root), *EFI_IN_CHROOT],
    ]


def test_extlinux_directory_recorded_or_found_or_asked_for(tmp_path: Path) -> None:
    root = restored_root(tmp_path)
    assert bootloader.extlinux_dir(EXTLINUX, root) == "/boot/extlinux"
    old = dataclasses.replace(EXTLINUX, directory=None)  # a layout from before the directory was recorded
    (root / "boot" / "syslinux").mkdir()
    (root / "boot" / "syslinux" / "ldlinux.sys").touch()
    assert bootloader.extlinux_dir(old, root) == "/boot/syslinux"
    with pytest.raises(
        MkrecError, match=r"^extlinux: its directory \(/extlinux\) is not in the restored"
    ) as e:
        bootloader.extlinux_dir(dataclasses.replace(EXTLINUX, directory="/extlinux"), root)
    assert 'directory = "/boot/extlinux"' in (e.value.hint or "")


def test_boot_code_is_written_without_touching_the_table(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    sector = bytes(range(256)) * 2
    disk.write_bytes(sector + bytes(4096))
    code = b"\xeb\x3c" + b"code" * 100
    bootloader.write_boot_code(str(disk), code)
    data = disk.read_bytes()
    assert data[: len(code)] == code and data[len(code) : 512] == sector[len(code) :]
    assert len(data) == 512 + 4096
    with pytest.raises(MkrecError, match="441 bytes of boot code, more than the 440"):
        bootloader.write_boot_code(str(disk), bytes(441))


def test_each_disk_booting_with_extlinux_is_its_own_step() -> None:
    second = dataclasses.replace(
        EXTLINUX, disk="sdb", detail="/data/boot/ldlinux.sys", directory="/data/boot"
    )
    grub_efi = BootLoader(BootKind.GRUB_EFI, "sda", esp="sda1")
    assert [engine.boot_step(b) for b in (EXTLINUX, second, grub_efi)] == [
        ("boot:extlinux:sda", "Boot loader extlinux on sda"),
        ("boot:extlinux:sdb", "Boot loader extlinux on sdb"),
        ("boot:grub-efi:sda", "Boot loader grub-efi on sda"),
    ]


# ---- journal ----


def test_journal_resumes_and_ignores_other_plans(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = Journal("plan-a", [path])
    j.finish("table:/dev/loop1")
    j.finish("mkfs:/dev/loop1p3")
    Journal("plan-b", [path]).finish("table:/dev/loop1")
    with open(path, "a") as fh:
        fh.write('{"plan": "plan-a", "step": "unpack:/"')  # cut by a power loss: not finished
    again = Journal("plan-a", [path])
    assert again.steps == ["table:/dev/loop1", "mkfs:/dev/loop1p3"]
    assert again.done("mkfs:/dev/loop1p3") and not again.done("unpack:/")


def test_journal_copies_itself_to_the_target_and_ends(tmp_path: Path) -> None:
    j = Journal("p", [tmp_path / "tmp.j"])
    j.finish("a")
    on_disk = tmp_path / "root" / "var" / "log" / "mkrec-restore.journal"
    j.add_path(on_disk)
    j.finish("b")
    assert read_steps(on_disk, "p") == ["a", "b"]
    j.complete()
    assert (
        read_steps(on_disk, "p") == [] and read_steps(tmp_path / "tmp.j", "p") == []
    )  # a finished restore is not resumed


def test_journal_merges_what_the_disk_knows(tmp_path: Path) -> None:
    j = Journal("p", [tmp_path / "tmp.j"], resumed=["table:x", "mkfs:y"])
    assert j.done("mkfs:y")


def test_mounts_below() -> None:
    text = (
        "/dev/vda / ext4 rw 0 0\n/dev/l1p3 /mnt/t ext4 rw 0 0\n"
        "/dev/l1p4 /mnt/t/data ext4 rw 0 0\n/dev/x /mnt/tt ext4 rw 0 0\n"
    )
    assert mounts_below(Path("/mnt/t"), text) == ["/mnt/t/data", "/mnt/t"]


# ---- fstab / crypttab ----


def test_fstab_device_names_become_uuids_and_comments_stay() -> None:
    text = "# static\n/dev/sda3  /  ext4  errors=remount-ro  0 1\nUUID=abc /data ext4 defaults 0 2\n"
    new, changes = fix_fstab(text, {"/dev/sda3": "UUID=u3"})
    assert new == "# static\nUUID=u3\t/\text4\terrors=remount-ro\t0\t1\nUUID=abc /data ext4 defaults 0 2\n"
    assert len(changes) == 1


def test_fstab_type_change_drops_fs_specific_options() -> None:
    text = "UUID=old /data ext4 defaults,noatime,errors=remount-ro,data=ordered 0 2\n"
    new, _ = fix_fstab(text, {"UUID=old": "UUID=new"}, {"/data": "xfs"})
    assert new == "UUID=new\t/data\txfs\tdefaults,noatime\t0\t2\n"


def test_crypttab() -> None:
    new, changes = fix_crypttab("cryptroot /dev/sda3 none luks\n", {"/dev/sda3": "UUID=l1"})
    assert new == "cryptroot\tUUID=l1\tnone\tluks\n" and changes


# ---- RAID / LVM / LUKS from the layout model ----


MD_UUID = "0a1b2c3d:4e5f6a7b:8c9d0e1f:2a3b4c5d"
PV_UUID = "Pv0AbC-dEfG-hIjK-lMnO-pQrS-tUvW-xYz012"
LUKS_UUID = "11111111-2222-3333-4444-555555555555"


def _stack_layout() -> tuple[RaidArray, VolumeGroup, LuksContainer]:
    raid = RaidArray("md0", "raid1", ("vda2", "vdb2"), metadata="1.2", uuid=MD_UUID, md_name="host:0",
                     raid_devices=2)  # fmt: skip
    lvs = (LogicalVolume("root", 64 * MIB), LogicalVolume("my-home", 32 * MIB, stripes=1))
    vg = VolumeGroup("vg-0", 4 * MIB, pvs=(PhysicalVolume("md0", uuid=PV_UUID),), lvs=lvs)
    luks = LuksContainer("vg-0/my-home", "crypthome", 2, uuid=LUKS_UUID, cipher="aes-xts-plain64",
                         key_size=512, label="home")  # fmt: skip
    return raid, vg, luks


def test_stack_layers_are_ordered_and_named() -> None:
    raid, vg, luks = _stack_layout()
    assert [x.name for x in stack.layers((raid,), (vg,), (luks,))] == ["md0", "vg-0", "crypthome"]
    assert [x.name for x in stack.layers((), (vg,), (luks,))] == ["vg-0", "crypthome"]
    nodes = stack.Nodes(
        {"/dev/vda2": "/dev/sdb2"}, frozenset({"vg-0/my-home", "vg-0/root"}), frozenset({"crypthome"})
    )
    assert [nodes(n) for n in ("vda2", "md0", "vg-0/my-home", "crypthome")] == [
        "/dev/sdb2", "/dev/md0", "/dev/mapper/vg--0-my--home", "/dev/mapper/crypthome"
    ]  # fmt: skip


def test_stack_argv() -> None:
    raid, vg, luks = _stack_layout()
    conf = ["--config", "devices { use_devicesfile=0 } activation { udev_sync=0 udev_rules=0 }"]
    assert cmd.mdadm_create_argv(raid, ["/dev/sdb2", "/dev/sdc2"]) == [
        "mdadm", "--create", "/dev/md0", "--run", "--level=raid1", "--raid-devices=2", "--metadata=1.2",
        f"--uuid={MD_UUID}", "--name=host:0", "/dev/sdb2", "/dev/sdc2",
    ]  # fmt: skip
    # saved degraded, its second disk gone: it comes back degraded, not refused by mdadm
    assert cmd.mdadm_create_argv(raid, ["/dev/sdb2"])[-3:] == ["--name=host:0", "/dev/sdb2", "missing"]
    assert cmd.pvcreate_argv(vg.pvs[0].uuid, "/dev/md0") == [
        "pvcreate", *conf, "-ff", "-y", "--uuid", PV_UUID, "--norestorefile",
        "/dev/md0",
    ]  # fmt: skip
    assert cmd.vgcreate_argv(vg, ["/dev/md0"]) == [
        "vgcreate", *conf, "-y", "--physicalextentsize", "4096k", "vg-0", "/dev/md0"
    ]  # fmt: skip
    assert cmd.lvcreate_argv(vg, 1) == [
        "lvcreate", *conf, "-y", "-W", "y", "-Z", "y", "--name", "my-home", "--size", f"{32 * MIB}b", "vg-0"
    ]  # fmt: skip
    assert cmd.luks_format_argv(luks, "/dev/mapper/vg--0-my--home", "/root/key") == [
        "cryptsetup", "luksFormat", "--batch-mode", "--type=luks2", f"--uuid={LUKS_UUID}",
        "--cipher=aes-xts-plain64", "--key-size=512", "--label=home", "--key-file=/root/key",
        "/dev/mapper/vg--0-my--home",
    ]  # fmt: skip
    assert cmd.luks_format_argv(luks, "/dev/x", "-", 1000)[-4:] == [
        "--pbkdf=pbkdf2", "--pbkdf-force-iterations=1000", "--key-file=-", "/dev/x"
    ]  # fmt: skip
    assert cmd.luks_open_argv(luks, "/dev/x", "-") == [
        "cryptsetup",
        "open",
        "--key-file=-",
        "/dev/x",
        "crypthome",
    ]


def test_a_luks_container_without_a_key_stops_with_what_to_do() -> None:
    _raid, _vg, luks = _stack_layout()
    ran: list[list[str]] = []
    nodes = stack.Nodes({}, frozenset({"vg-0/my-home"}))
    with pytest.raises(
        MkrecError, match="LUKS container crypthome on /dev/mapper/vg--0-my--home needs a new"
    ):
        layers.make_layer(luks, nodes, None, lambda argv, **kw: ran.append(argv))
    assert ran == [["wipefs", "-a", "-q", "/dev/mapper/vg--0-my--home"]]


# ---- feeding a stream to tar or an imaging tool ----


class DamagedSet:
    """A RestoreSet whose stream gives one chunk and then fails as a damaged frame does."""

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[io.BytesIO]:
        class Reader(io.BytesIO):
            def read(self, size: int | None = -1) -> bytes:
                if self.tell():
                    raise MkrecError(f"{name}: frame 2 is damaged")
                return super().read(size)

        yield Reader(b"x" * 1000)


def test_a_damaged_stream_kills_the_tool_it_was_feeding() -> None:
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    with pytest.raises(MkrecError, match="frame 2 is damaged"), DamagedSet().open("s.tar.zst") as src:
        unpack._stream_into(src, proc, Progress("test", 0))  # type: ignore[arg-type]
    assert proc.returncode == -signal.SIGKILL, "tar must not go on to finish a truncated stream"


def test_restore_fs_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """restore-fs runs as journaled steps: a rerun after a failed unpack does not make the filesystem
    again, and fstab gets the UUID it was made with (here a new one: the saved UUID is taken)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the journal goes
    argvs: list[list[str]] = []
    made: dict[str, str] = {}
    monkeypatch.setattr(restorefs, "run", lambda argv, **kw: argvs.append([str(a) for a in argv]))
    monkeypatch.setattr(restorefs, "check_target", lambda node, sources: None)
    monkeypatch.setattr(restorefs, "device_size", lambda node: GIB)
    monkeypatch.setattr(restorefs, "present_uuids", lambda node: {"u4"})
    monkeypatch.setattr(restorefs, "fs_identity", lambda node: ("xfs", made["uuid"]))
    unpacked: list[str] = []

    def unpack(reader: object, stream: str, dest: Path, lost: list[str]) -> int:
        unpacked.append(stream)
        if len(unpacked) == 1:
            raise MkrecError("volume 2 of 2 of S is missing")
        return 0

    monkeypatch.setattr(restorefs, "unpack_tar", unpack)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "fstab").write_text("UUID=u4 /data ext4 errors=remount-ro 0 2\n")
    reader = cast(RestoreSet, SimpleNamespace(set_id="set1", nodes=lambda: []))
    saved = gpt_fs()[4]

    def again() -> None:
        restorefs._restore_files(reader, saved, "sda4", "/dev/vdb4", root, "xfs", True, None)

    with pytest.raises(MkrecError, match=r"^step 'Unpack sda4\.ext4\.tar\.zst' failed") as exc:
        again()
    assert "run 'mkrec restore fs' again" in (exc.value.hint or "")
    mkfs = next(a for a in argvs if a[0] == "mkfs.xfs")
    made["uuid"] = mkfs[mkfs.index("uuid=u4") if "uuid=u4" in mkfs else mkfs.index("-m") + 1].removeprefix(
        "uuid="
    )
    assert made["uuid"] != "u4"
    argvs.clear()
    again()
    assert [a[0] for a in argvs] == ["mount", "umount"] and len(unpacked) == 2
    assert (root / "etc" / "fstab").read_text() == f"UUID={made['uuid']}\t/data\txfs\tdefaults\t0\t2\n"


def test_the_restores_own_mounts_of_xfs_take_nouuid() -> None:
    """Issue 15: a copy of a mounted xfs has its UUID, which the kernel refuses twice without nouuid."""
    from mkrec.restore.apply.mounts import mount_argv

    assert mount_argv("xfs", "/dev/sdb2", "/mnt/target/data") == [
        "mount", "-o", "nouuid", "-t", "xfs", "/dev/sdb2", "/mnt/target/data"
    ]  # fmt: skip
    assert mount_argv("xfs", "/dev/sdb2", "/tmp/j", "ro") == [
        "mount",
        "-o",
        "ro,nouuid",
        "-t",
        "xfs",
        "/dev/sdb2",
        "/tmp/j",
    ]
    assert mount_argv("ext4", "/dev/sdb1", "/mnt/target") == [
        "mount",
        "-t",
        "ext4",
        "/dev/sdb1",
        "/mnt/target",
    ]


def test_a_btrfs_copy_beside_a_device_with_its_fsid_is_refused() -> None:
    from mkrec.restore.decide.present import refuse_duplicate_btrfs

    targets = [("/dev/sda2", "/dev/sdb2", "u-1")]
    refuse_duplicate_btrfs(targets, {"u-1": ["/dev/sdb2"]})  # only the target itself: restoring in place
    with pytest.raises(MkrecError, match=r"btrfs u-1 \(/dev/sda2\) is already on /dev/sda2 here"):
        refuse_duplicate_btrfs(targets, {"u-1": ["/dev/sda2", "/dev/sdb2"]})


# efibootmgr 17 under OVMF, after one earlier restore
EFIBOOTMGR_LISTING = (Path(__file__).parent / "fixtures" / "restore" / "efibootmgr-ovmf.txt").read_text()


def test_efibootmgr_listing_is_read_as_numbers_and_labels() -> None:
    from mkrec.restore.apply.argv import efi_entries

    assert efi_entries(EFIBOOTMGR_LISTING) == [
        ("0000", "UiApp"), ("0001", "UEFI QEMU DVD-ROM QM00003"), ("0002", "EFI Internal Shell"),
        ("0004", "mkrec restored"),
    ]  # fmt: skip


def test_a_second_restore_replaces_its_nvram_entry(fp, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """Issue 13: exactly one firmware entry for the restored system, however often it is restored."""
    import logging

    from mkrec.restore.apply.bootloader import make_nvram_entry

    after = EFIBOOTMGR_LISTING.replace("Boot0004* mkrec restored", "Boot0005* mkrec restored")
    fp.register(["efibootmgr"], stdout=EFIBOOTMGR_LISTING)
    fp.register(["efibootmgr", "--quiet", "--bootnum", "0004", "--delete-bootnum"])
    fp.register(["efibootmgr", "--create", fp.any()], stdout=after)
    caplog.set_level(logging.INFO, logger="mkrec.restore")
    make_nvram_entry("/dev/vda", 2)
    assert fp.call_count(["efibootmgr", "--quiet", "--bootnum", "0004", "--delete-bootnum"]) == 1
    assert "Boot0004 (mkrec restored) of an earlier restore removed" in caplog.text
    assert "entries labelled 'mkrec restored': Boot0005)" in caplog.text


def test_yes_still_asks_the_console_for_a_new_luks_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: 'start-restore --yes' (the unattended boot entry) could never restore a LUKS system
    without a key file; --yes skips confirmations, it cannot make up a passphrase."""
    import dataclasses

    from mkrec.restore import rebuild
    from mkrec.restore.apply.layers import LuksKey

    _raid, _vg, luks = _stack_layout()
    plan = make_plan(system(), "start", [PresentDisk("/dev/loop9", 4 * GIB)], {"sda": "/dev/loop9"}, {})
    plan = dataclasses.replace(plan, system=dataclasses.replace(plan.system, luks=(luks,)))
    typed = iter(["s3cret", "s3cret"])
    monkeypatch.setattr(rebuild.getpass, "getpass", lambda prompt: next(typed))
    key = rebuild.new_luks_key(plan, LuksKey(), console=True)
    assert key is not None and key.passphrase == "s3cret"
    assert (
        rebuild.new_luks_key(plan, LuksKey(), console=False) is None
    )  # nobody there: the step says what to do


# ---- a damaged frame in a tar stream ----


def _member(path: str, offset: int, end: int) -> CatalogEntry:
    return CatalogEntry("s", path, "file", end - offset - 512, 0o644, 0, 0, 0.0, "", offset, end)


def test_a_damaged_frame_leaves_out_the_members_it_touches() -> None:
    members = [
        _member("a", 0, 1024),
        _member("b", 1024, 5120),
        _member("c", 5120, 6144),
        _member("d", 6144, 9216),
    ]
    damage = Damage()
    # good up to 2048 (inside b, which tar has begun), bad up to 6000 (inside c)
    assert damage.skip(members, 2048, 6000) == (5120 - 2048, 6144)  # zeros to b's end; on at d
    assert damage.lost == ["b", "c"] and damage.zeroed == ["b"]
    assert damage


def test_damage_at_a_member_boundary_sends_no_zeros_and_past_the_end_costs_nothing() -> None:
    members = [_member("a", 0, 1024), _member("b", 1024, 5120)]
    damage = Damage()
    assert damage.skip(members, 1024, 2048) == (0, 5120)
    assert damage.lost == ["b"] and damage.zeroed == []
    tail = Damage()
    assert tail.skip(members, 5120, 7168) == (0, 7168)  # the end-of-archive blocks
    assert not tail


def test_a_step_meeting_an_os_error_fails_with_one_line_and_is_not_journaled(tmp_path: Path) -> None:
    journal = Journal("plan-1", [tmp_path / "journal"])
    steps = Steps(journal, "start")

    def pulled() -> None:
        raise OSError(5, "Input/output error", "/mnt/target/usr/lib/x.so")

    with pytest.raises(
        MkrecError, match=r"^step 'Unpack /' failed: Input/output error: /mnt/target/usr/lib/x\.so "
    ):
        steps.run("unpack:/", "Unpack /", pulled)
    assert not journal.done("unpack:/")
