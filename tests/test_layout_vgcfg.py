"""vgcfg-<vg>.txt: LVM's own metadata text (a real vgcfgbackup output, captured in a guest: vg0 on two
PVs with an LV on each) read far enough to tell whether it still describes layout.toml's VG, the
exact errors on a broken file, and the capture's vgcfgbackup command."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_subprocess import FakeProcess
from pytest_subprocess.fake_popen import FakePopen

from mkrec.errors import MkrecError
from mkrec.layout import probe
from mkrec.layout.model import LogicalVolume, PhysicalVolume, VolumeGroup
from mkrec.layout.vgcfg import mismatch, parse_vgcfg

MIB = 1024**2
VGCFG = (Path(__file__).parent / "fixtures" / "restore" / "vgcfg-vg0.txt").read_text()
VG_UUID = "pprnRT-sAPd-SQO3-uTiW-9qRd-7Ytm-LRozCh"
PV1, PV2 = "plWxfU-qyB1-tuea-hnKv-HJ1P-BOkj-qnCW5q", "u9ZVEH-bdzq-xYO7-X0w6-rekJ-2eAE-fEpo5C"


def saved_vg() -> VolumeGroup:
    """vg0 as layout.toml records it (from the pvs/vgs/lvs of the same guest run)."""
    return VolumeGroup(
        "vg0",
        4 * MIB,
        VG_UUID,
        pvs=(PhysicalVolume("loop0p1", PV1, 56 * MIB), PhysicalVolume("loop0p2", PV2, 56 * MIB)),
        lvs=(
            LogicalVolume("home", 32 * MIB, uuid="p64imU-S9YM-hVFK-nrtI-gtxG-faPZ-MSlJh5"),
            LogicalVolume("root", 48 * MIB, uuid="02ecww-Dlkk-lMp5-a0OC-vwC4-gEdb-QHR3C8"),
        ),
    )


def test_vgcfgbackup_text_is_read() -> None:
    meta = parse_vgcfg(VGCFG, "vgcfg-vg0.txt")
    assert (meta.name, meta.uuid, meta.extent_size, meta.pv_uuids) == ("vg0", VG_UUID, 4 * MIB, (PV1, PV2))
    assert [(lv.name, lv.size) for lv in meta.lvs] == [("root", 48 * MIB), ("home", 32 * MIB)]
    assert mismatch(meta, saved_vg()) == ""


def test_an_edited_layout_no_longer_matches_the_metadata() -> None:
    meta = parse_vgcfg(VGCFG, "vgcfg-vg0.txt")
    vg = saved_vg()
    grown = VolumeGroup(
        vg.name, vg.extent_size, vg.uuid, vg.pvs, (vg.lvs[0], LogicalVolume("root", 64 * MIB))
    )
    assert mismatch(meta, grown) == f"LV root is {48 * MIB} bytes there, {64 * MIB} in layout.toml"
    other_pv = VolumeGroup(
        vg.name, vg.extent_size, vg.uuid, (vg.pvs[0], PhysicalVolume("sdb1", "NEW")), vg.lvs
    )
    assert mismatch(meta, other_pv) == "its PV UUIDs are not those of layout.toml"
    assert mismatch(meta, VolumeGroup("vg9", 4 * MIB)) == "it describes volume group vg0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            VGCFG.replace("\t\t\tsegment_count = 1\n", "\t\t\tsegment_count\n", 1),
            "f.txt:55: expected '=' or '{' after 'segment_count'",
        ),
        (VGCFG.rsplit("}", 1)[0], "f.txt:11: section vg0 is not closed"),
        (VGCFG.replace("extent_size = 8192", "extent_size = big"), "f.txt: extent_size is missing or not a"),
    ],
)
def test_broken_metadata_says_where(text: str, message: str) -> None:
    with pytest.raises(MkrecError, match=message):
        parse_vgcfg(text, "f.txt")


def test_capture_keeps_the_vgcfgbackup_text(fp: FakeProcess) -> None:
    def write(process: FakePopen) -> None:
        Path(str(process.args[4])).write_text(VGCFG)

    fp.register(
        ["vgcfgbackup", "--config", probe.LVM_CONFIG, "-f", fp.any(min=1, max=1), "vg0"], callback=write
    )
    assert probe.vgcfgbackup("vg0") == VGCFG
