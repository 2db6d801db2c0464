"""Making the RAID arrays, volume groups (with their LVs) and LUKS containers of the plan, between
the partition tables and the filesystems: arrays with their saved UUID, level, metadata and members;
PVs with their saved UUIDs, VGs and LVs with their saved names, extent size and sizes (or, on
start-restore, the VG's saved LVM metadata given back with vgcfgrestore: the VG and LV UUIDs too);
LUKS containers with their saved UUID, cipher and label and a new passphrase (a key file for
unattended runs). The order and the node names: mkrec.restore.decide.stack. udev is not assumed:
LVM makes its own device nodes."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.layout.model import RaidArray, VolumeGroup
from mkrec.layout.vgcfg import file_name
from mkrec.restore.apply.argv import (
    luks_format_argv,
    luks_open_argv,
    lvcreate_argv,
    mdadm_assemble_argv,
    mdadm_create_argv,
    pvcreate_argv,
    vgcfgrestore_argv,
    vgchange_argv,
    vgcreate_argv,
)
from mkrec.restore.decide.stack import Layer, Nodes, below, provides

# libdevmapper (cryptsetup) must not wait for udev to confirm the nodes it makes.
NO_UDEV = {"DM_DISABLE_UDEV": "1"}


@dataclass(frozen=True)
class LuksKey:
    """The new passphrase: a key file (unattended), or a passphrase asked on the terminal."""

    file: Path | None = None
    passphrase: str = ""
    pbkdf_iterations: int = 0

    def argv_file(self) -> str:
        return str(self.file) if self.file else "-"

    def stdin(self) -> str | None:
        return None if self.file else self.passphrase


Runner = Callable[..., object]


def make_layer(layer: Layer, nodes: Nodes, key: LuksKey | None, run: Runner, metadata: str = "") -> None:
    """Create one RAID array, volume group (with its LVs) or LUKS container (opened). metadata: a
    VG's saved vgcfgbackup text, to restore instead of creating the VG anew."""
    devs = [nodes(n) for n in below(layer)]
    if isinstance(layer, VolumeGroup):
        # A rerun after a failure half-way: LVs made then would keep the PVs busy.
        run(vgchange_argv(layer, active=False), check=False)
    for dev in devs:
        run(["wipefs", "-a", "-q", dev])
    if isinstance(layer, RaidArray):
        run(mdadm_create_argv(layer, devs))
    elif isinstance(layer, VolumeGroup) and metadata:
        restore_vg(layer, devs, metadata, nodes, run)
    elif isinstance(layer, VolumeGroup):
        for pv, dev in zip(layer.pvs, devs, strict=True):
            run(pvcreate_argv(pv.uuid, dev))
        run(vgcreate_argv(layer, devs))
        for i in range(len(layer.lvs)):
            run(lvcreate_argv(layer, i))
    else:
        if key is None:
            raise MkrecError(
                f"LUKS container {layer.name} on {devs[0]} needs a new passphrase",
                hint="give a key file with --luks-key FILE, or run it on a terminal",
            )
        run(
            luks_format_argv(layer, devs[0], key.argv_file(), key.pbkdf_iterations),
            input=key.stdin(),
            env=NO_UDEV,
        )
        run(luks_open_argv(layer, devs[0], key.argv_file()), input=key.stdin(), env=NO_UDEV)


def restore_vg(vg: VolumeGroup, devs: list[str], metadata: str, nodes: Nodes, run: Runner) -> None:
    """The VG exactly as saved: PVs with their UUIDs and headers, then the metadata (VG and LV UUIDs,
    every LV's extents where they were). The LVs are then cleared as lvcreate -W y -Z y would."""
    with tempfile.TemporaryDirectory(prefix="mkrec-vgcfg-") as tmp:
        path = Path(tmp) / file_name(vg.name)
        path.write_text(metadata)
        for pv, dev in zip(vg.pvs, devs, strict=True):
            run(pvcreate_argv(pv.uuid, dev, str(path)))
        run(vgcfgrestore_argv(vg, str(path)))
    run(vgchange_argv(vg))
    for name in provides(vg):
        run(["wipefs", "-a", "-q", nodes(name)])


def activate_layer(layer: Layer, nodes: Nodes, key: LuksKey | None, run: Runner) -> None:
    """A resumed run: what an earlier run made is made active again (after a reboot it is not)."""
    if all(Path(nodes(n)).exists() for n in provides(layer)):
        return
    devs = [nodes(n) for n in below(layer)]
    if isinstance(layer, RaidArray):
        run(mdadm_assemble_argv(layer, devs))
    elif isinstance(layer, VolumeGroup):
        run(vgchange_argv(layer))
    elif key is not None:
        run(luks_open_argv(layer, devs[0], key.argv_file()), input=key.stdin(), env=NO_UDEV)
    else:
        raise MkrecError(f"LUKS container {layer.name} must be opened again", hint="give --luks-key FILE")
