"""LVM in the restore, without writing anything: clone-disk's LV sizes (exact numbers), the editable
LV file and the edit flow, when start-restore gives the saved vgcfgbackup text back, the exact LVM
command lines, and a VG step that fails half-way and is run again."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from test_layout_vgcfg import PV1, PV2, VGCFG, saved_vg

from mkrec.errors import MkrecError
from mkrec.layout.model import LogicalVolume, LuksContainer, PhysicalVolume, VolumeGroup
from mkrec.restore.apply import layers
from mkrec.restore.apply.argv import LVM_CONFIG
from mkrec.restore.apply.journal import Journal
from mkrec.restore.apply.steps import Steps
from mkrec.restore.decide.lvresize import parse_lv_file, render_lv_file, scale_vg, vg_bytes
from mkrec.restore.decide.model import SavedDisk, SavedFs, SavedSystem
from mkrec.restore.decide.plan import Plan, edit_clone_tables, make_plan, render_plan
from mkrec.restore.decide.present import PresentDisk
from mkrec.restore.decide.resize import render_rows, scale_volumes
from mkrec.restore.decide.sfdisk import MIB, parse_dump
from mkrec.restore.decide.stack import Nodes

LINUX = "0FC63DAF-8483-4772-8E79-3D47DE47C478"
LVM_TYPE = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
CONF = ["--config", LVM_CONFIG]

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
    assert plan.vg_metadata == {}  # clone makes VGs anew


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
    # layout.toml does not say where the extents start: the header may be all 2 MiB the PV did not
    # use, so 249 MiB counts 244 (LVM, starting at 1 MiB, may make 248): never more than there is
    assert vg_bytes(vg, {"sda2": (166 * MIB, 249 * MIB)}) == (164 * MIB, 244 * MIB)
    assert vg_bytes(vg, {"sda2": (166 * MIB, 250 * MIB)}) == (164 * MIB, 248 * MIB)
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


# ---- start-restore: the saved LVM metadata (vgcfg-vg0.txt, see test_layout_vgcfg) ----


def test_start_plan_takes_the_metadata_that_matches(caplog: pytest.LogCaptureFixture) -> None:
    vg = saved_vg()
    disk = SavedDisk("/dev/loop0", 200 * MIB, parse_dump(DUMP.replace("/dev/sda", "/dev/loop0p")))
    system = SavedSystem((disk,), (), vgs=(vg,), set_id="set1")
    present = [PresentDisk("/dev/loop9", 300 * MIB, type="loop")]
    plan = make_plan(system, "start", present, {"loop0": "/dev/loop9"}, {}, vg_metadata={"vg0": VGCFG})
    assert plan.vg_metadata == {"vg0": VGCFG}
    assert (
        "CREATE VolumeGroup vg0/home, vg0/root on /dev/loop9p1, /dev/loop9p2 (from vgcfg-vg0.txt: VG and LV "
        "UUIDs kept)" in render_plan(plan)
    )
    edited = VGCFG.replace("extent_count = 12", "extent_count = 13")
    caplog.set_level(logging.WARNING)
    plan = make_plan(system, "start", present, {"loop0": "/dev/loop9"}, {}, vg_metadata={"vg0": edited})
    assert plan.vg_metadata == {}
    assert (
        "warning: vgcfg-vg0.txt does not match layout.toml "
        f"(LV root is {52 * MIB} bytes there, {48 * MIB} in layout.toml): "
        "volume group vg0 is made from layout.toml, with new VG and LV UUIDs"
    ) in caplog.text
    broken = make_plan(system, "start", present, {"loop0": "/dev/loop9"}, {}, vg_metadata={"vg0": "vg0 {"})
    assert broken.vg_metadata == {} and "vgcfg-vg0.txt:1: section vg0 is not closed" in caplog.text


# ---- the commands ----


class Recorder:
    def __init__(self, fail_on: str = "") -> None:
        self.argvs: list[list[str]] = []
        self.checks: list[bool] = []
        self.files: dict[str, str] = {}
        self.fail_on = fail_on

    def __call__(self, argv: list[str], check: bool = True, **kw: object) -> None:
        self.argvs.append(argv)
        self.checks.append(check)
        for arg in argv:
            if arg.endswith("vgcfg-vg0.txt"):
                self.files[arg] = Path(arg).read_text()
        if self.fail_on and argv[0] == self.fail_on:
            self.fail_on = ""
            raise MkrecError(f"{argv[0]} failed")


def _nodes() -> Nodes:
    return Nodes(
        {"/dev/loop0p1": "/dev/vdb1", "/dev/loop0p2": "/dev/vdb2"}, frozenset({"vg0/home", "vg0/root"})
    )


def test_a_vg_with_saved_metadata_is_restored_with_vgcfgrestore() -> None:
    run = Recorder()
    layers.make_layer(saved_vg(), _nodes(), None, run, VGCFG)
    (path,) = run.files
    assert run.files[path] == VGCFG and not Path(path).exists(), "the file is given, then removed"
    assert run.argvs == [
        ["vgchange", *CONF, "-an", "vg0"],
        ["wipefs", "-a", "-q", "/dev/vdb1"],
        ["wipefs", "-a", "-q", "/dev/vdb2"],
        ["pvcreate", *CONF, "-ff", "-y", "--uuid", PV1, "--restorefile", path, "/dev/vdb1"],
        ["pvcreate", *CONF, "-ff", "-y", "--uuid", PV2, "--restorefile", path, "/dev/vdb2"],
        ["vgcfgrestore", *CONF, "-y", "-f", path, "vg0"],
        ["vgchange", *CONF, "-ay", "vg0"],
        ["wipefs", "-a", "-q", "/dev/mapper/vg0-home"],
        ["wipefs", "-a", "-q", "/dev/mapper/vg0-root"],
    ]
    assert run.checks[0] is False and all(run.checks[1:]), "only the deactivation may fail"


def test_a_vg_without_metadata_is_created() -> None:
    run = Recorder()
    layers.make_layer(saved_vg(), _nodes(), None, run)
    assert [a[0] for a in run.argvs] == ["vgchange", "wipefs", "wipefs", "pvcreate", "pvcreate", "vgcreate",
                                         "lvcreate", "lvcreate"]  # fmt: skip
    assert run.argvs[3][-3:] == [PV1, "--norestorefile", "/dev/vdb1"]


def test_a_vg_step_that_failed_half_way_runs_again_then_is_only_activated(tmp_path: Path) -> None:
    """The journal of the engine's VG step: vgcfgrestore fails -> not journaled; the rerun starts the
    step again from the deactivation; a third run only activates what the second made."""
    journal_file = tmp_path / "j"
    run = Recorder(fail_on="vgcfgrestore")

    def vg_step() -> None:
        steps = Steps(Journal("plan1", [journal_file]), "start")
        steps.run(
            "layer:VolumeGroup:vg0",
            "VolumeGroup vg0",
            lambda: layers.make_layer(saved_vg(), _nodes(), None, run, VGCFG),
            again=lambda: layers.activate_layer(saved_vg(), _nodes(), None, run),
        )

    with pytest.raises(MkrecError, match="step 'VolumeGroup vg0' failed: vgcfgrestore failed"):
        vg_step()
    assert not journal_file.exists()
    run.argvs.clear()
    vg_step()
    assert run.argvs[0] == ["vgchange", *CONF, "-an", "vg0"] and run.argvs[5][0] == "vgcfgrestore"
    run.argvs.clear()
    vg_step()
    assert run.argvs == [["vgchange", *CONF, "-ay", "vg0"]]


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
