"""LVM in the restore, without writing anything: clone-disk's LV sizes (exact numbers), the editable
LV file and the edit flow, when start-restore gives the saved vgcfgbackup text back, the exact LVM
command lines, and a VG step that fails half-way and is run again."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mkrec.errors import MkrecError
from mkrec.layout.model import LogicalVolume, LuksContainer, PhysicalVolume, VolumeGroup
from mkrec.restore import stack
from mkrec.restore.command import edit_clone_tables
from mkrec.restore.devices import PresentDisk
from mkrec.restore.lvresize import parse_lv_file, render_lv_file, scale_vg, vg_bytes
from mkrec.restore.model import SavedDisk, SavedFs, SavedSystem
from mkrec.restore.plan import Plan, make_plan, render_plan
from mkrec.restore.resize import render_rows, scale_volumes
from mkrec.restore.sfdisk import MIB, parse_dump

LINUX = "0FC63DAF-8483-4772-8E79-3D47DE47C478"
LVM_TYPE = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
CONF = ["--config", stack.LVM_CONFIG]

# A 200 MiB GPT disk: /boot (32 MiB) and a PV (166 MiB) holding root, swap and home (164 MiB of
# 4 MiB extents: the PV's first MiB is its header, the last 1 MiB did not fill an extent).
DUMP = f"""label: gpt
label-id: 11111111-2222-3333-4444-555555555555
first-lba: 2048
/dev/sda1 : start=2048, size=65536, type={LINUX}, uuid=AAAAAAAA-0000-4000-8000-000000000001, name="boot"
/dev/sda2 : start=67584, size=339968, type={LVM_TYPE}, uuid=AAAAAAAA-0000-4000-8000-000000000002, name="pv"
"""


def lvm_system(root_used: int = 40 * MIB, lvs: tuple[LogicalVolume, ...] | None = None) -> SavedSystem:
    disk = SavedDisk("/dev/sda", 200 * MIB, parse_dump(DUMP))
    lvs = lvs or (
        LogicalVolume("root", 100 * MIB),
        LogicalVolume("swap", 16 * MIB),
        LogicalVolume("home", 40 * MIB),
    )
    vg = VolumeGroup("vg0", 4 * MIB, pvs=(PhysicalVolume("sda2", "PVUUID", 164 * MIB),), lvs=lvs)
    fss = (
        SavedFs("/dev/sda1", "ext4", "u1", mountpoint="/boot", used=MIB, stream="sda1.ext4.tar.zst"),
        SavedFs("/dev/vg0/root", "ext4", "u2", mountpoint="/", used=root_used, stream="root.ext4.tar.zst"),
        SavedFs("/dev/vg0/home", "ext4", "u3", mountpoint="/home", used=10 * MIB, stream="home.ext4.tar.zst"),
        SavedFs("/dev/vg0/swap", "swap", "u4"),
    )
    return SavedSystem((disk,), fss, vgs=(vg,), set_id="set1")


def clone(system: SavedSystem, size: int, resize_swap: bool = False) -> Plan:
    present = [PresentDisk("/dev/loop9", size, type="loop")]
    return make_plan(system, "clone", present, {"sda": "/dev/loop9"}, {}, resize_swap=resize_swap)


def lv_sizes(plan: Plan) -> dict[str, int]:
    return {f"{vg.name}/{lv.name}": lv.size // MIB for vg in plan.vgs for lv in vg.lvs}


# ---- clone-disk: LVs follow their PV ----


def test_clone_1_4x_grows_the_pv_partition_and_the_lvs_in_proportion() -> None:
    plan = clone(lvm_system(), 280 * MIB)
    # the PV partition fills the larger disk: 280 MiB - 1 MiB head - 32 MiB /boot - the backup GPT
    (disk,) = plan.disks
    assert disk.table.partition(2).size * 512 == 246 * MIB
    assert "pv vg0" in render_rows(disk.rows) and "scaled" in render_rows(disk.rows)
    # the VG grows from 164 to 244 MiB (the PV keeps its 2 MiB of header and tail); swap keeps 16 MiB,
    # root and home share 228 instead of 148 MiB: 100 -> 154.05 and 40 -> 61.6, down to whole extents
    assert lv_sizes(plan) == {"vg0/root": 152, "vg0/swap": 16, "vg0/home": 60}
    rows = {r.name: r for r in plan.lv_rows}
    assert rows["vg0/swap"].fixed == "swap" and rows["vg0/root"].vg_size == 244 * MIB
    assert rows["vg0/root"].need == 40 * MIB + 4 * MIB + 16 * MIB
    text = render_plan(plan)
    assert "vg0/root         /                 100.0 MiB  152.0 MiB  needs 60.0 MiB" in text
    assert "vg0/swap         swap               16.0 MiB   16.0 MiB  kept (swap)" in text


def test_clone_scales_swap_lvs_when_asked() -> None:
    plan = clone(lvm_system(), 280 * MIB, resize_swap=True)
    # all three share 244 of 164 MiB: 100 -> 148.8, 16 -> 23.8, 40 -> 59.5
    assert lv_sizes(plan) == {"vg0/root": 148, "vg0/swap": 20, "vg0/home": 56}


def test_clone_smaller_shrinks_the_lvs_while_the_data_fits() -> None:
    plan = clone(lvm_system(root_used=20 * MIB), 160 * MIB)
    # PV 126 MiB -> VG 124 MiB; root and home share 108 of 148 MiB: 73.0 and 29.2 MiB (home needs 27)
    assert lv_sizes(plan) == {"vg0/root": 72, "vg0/swap": 16, "vg0/home": 28}


def test_clone_refuses_an_lv_whose_data_would_not_fit_before_writing() -> None:
    with pytest.raises(MkrecError) as exc:
        clone(lvm_system(root_used=90 * MIB), 150 * MIB)
    assert exc.value.message == (
        "LV vg0/root (/, 90.0 MiB used) needs 115.0 MiB, but gets 64.0 MiB of the 112.0 MiB volume "
        "group vg0; nothing was written"
    )
    assert "\n" not in exc.value.message


def test_fixed_lvs_that_no_longer_fit_are_refused_naming_the_vg() -> None:
    lvs = (LogicalVolume("swap", 120 * MIB), LogicalVolume("root", 40 * MIB))
    with pytest.raises(MkrecError, match=r"volume group vg0 would have 112\.0 MiB .* \(120\.0 MiB\)"):
        clone(lvm_system(root_used=MIB, lvs=lvs), 150 * MIB)


def test_lvs_of_a_vg_whose_pvs_keep_their_size_keep_theirs() -> None:
    system = lvm_system()
    vg = VolumeGroup(
        "vg1", 4 * MIB, pvs=(PhysicalVolume("md0", "X", 60 * MIB),), lvs=(LogicalVolume("a", 52 * MIB),)
    )
    luks = LuksContainer("vg1/a", "crypta", 2)
    new, rows = scale_vg(vg, SavedSystem(system.disks, (), vgs=(vg,), luks=(luks,)), {"sda2": (1, 2)})
    assert new == vg
    assert [(r.what, r.fixed, r.new_size) for r in rows] == [("luks crypta", "LUKS", 52 * MIB)]


def test_vg_bytes_counts_only_whole_extents_of_what_the_partition_gains() -> None:
    vg = lvm_system().vgs[0]
    assert vg_bytes(vg, {"sda2": (166 * MIB, 247 * MIB)}) == (164 * MIB, 244 * MIB)
    assert vg_bytes(vg, {"sdb1": (166 * MIB, 247 * MIB)}) == (164 * MIB, 164 * MIB)
    assert vg_bytes(VolumeGroup("v", 4 * MIB, pvs=(PhysicalVolume("sda2"),)), {}) is None


def test_scale_volumes_of_a_full_vg_of_fixed_lvs() -> None:
    assert scale_volumes([(64 * MIB, True)], 64 * MIB, 128 * MIB, 4 * MIB) == [64 * MIB]


# ---- the editable LV file ----


def test_lv_file_round_trip_and_edits() -> None:
    plan = clone(lvm_system(), 280 * MIB)
    rows = plan.lv_rows
    text = render_lv_file(rows)
    assert "# volume group vg0: 255852544 bytes (244.0 MiB), extents of 4.0 MiB" in text
    assert "vg0/root                      104857600      159383552   # /, needs 60.0 MiB" in text
    assert parse_lv_file(text, "lv.txt", rows) == rows
    edited = text.replace("159383552", "100M").replace("62914560", "100000001")
    new = {r.name: r.new_size for r in parse_lv_file(edited, "lv.txt", rows)}
    assert new == {"vg0/root": 100 * MIB, "vg0/swap": 16 * MIB, "vg0/home": 96 * MIB}  # whole extents


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("159383552", "50M"), "lv.txt: LV vg0/root (/, 40.0 MiB used) needs 60.0 MiB, but gets 52.0 MiB"),
        (("159383552", "200M"), "lv.txt: the LVs of volume group vg0 take 276.0 MiB, it has 244.0 MiB"),
        (("159383552", "lots"), "lv.txt:6: vg0/root: 'lots' is not a size"),
        (("vg0/home", "vg0/data"), "lv.txt:8: there is no LV vg0/data"),
        (("  62914560", ""), "lv.txt:8: expected 'vg/lv before after', got "),
    ],
)
def test_lv_file_errors_say_where(edit: tuple[str, str], message: str) -> None:
    rows = clone(lvm_system(), 280 * MIB).lv_rows
    with pytest.raises(MkrecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_lv_file(render_lv_file(rows).replace(*edit), "lv.txt", rows)


def test_on_a_terminal_the_lvs_follow_the_edited_table_then_their_own_edits() -> None:
    """clone-disk's edit flow: the person shrinks the PV partition in the table file; the LV sizes are
    proposed again for it; the person then gives root 100 MiB in the LV file."""
    plan = clone(lvm_system(), 280 * MIB)
    prompts: list[str] = []

    def person(prompt: str) -> str:
        prompts.append(prompt)
        path = Path(re.split(r" (?:is|are) in |; ", prompt)[1])
        if path.suffix == ".sfdisk":  # 246 MiB -> 206 MiB
            path.write_text(path.read_text().replace("size=      503808", "size=      421888"))
        else:
            text = path.read_text()
            assert "# volume group vg0: 213909504 bytes (204.0 MiB)" in text
            path.write_text(text.replace("130023424", "100M"))  # root: 100 * 188 / 148 = 127 -> 124 MiB
        return ""

    edited = edit_clone_tables(plan, person)
    assert [re.split(r" (?:is|are) in ", p)[0] for p in prompts] == [
        "The new table for /dev/loop9",
        "The new LV sizes",
    ]
    assert lv_sizes(edited) == {"vg0/root": 100, "vg0/swap": 16, "vg0/home": 48}
    assert edited.id != plan.id and "100.0 MiB  100.0 MiB  needs 60.0 MiB" in render_plan(edited)
    with pytest.raises(MkrecError, match="stopped before the LV sizes were applied"):
        edit_clone_tables(plan, lambda prompt: "q" if "LV sizes" in prompt else "")
