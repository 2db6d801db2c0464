"""MD RAID, LVM and LUKS recreated from the layout model (mkrec.layout.model), between the partition
tables and the filesystems: arrays with their saved UUID, level, metadata and members; PVs with their
saved UUIDs, VGs and LVs with their saved names, extent size and sizes (or, on start-restore, the VG's
saved LVM metadata given back with vgcfgrestore: the VG and LV UUIDs too); LUKS containers with their
saved UUID, cipher and label and a new passphrase (a key file for unattended runs).

Stacks can be layered in any order (LUKS on RAID, LVM on LUKS ...): `layers()` orders them so that
each is made after what it sits on. udev is not assumed: LVM makes its own device nodes."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.layout.model import LuksContainer, RaidArray, VolumeGroup
from mkrec.layout.vgcfg import file_name

# No udev in the rescue system (nor in the tests): LVM creates /dev/mapper nodes itself and does not
# consult a devices file written for another machine.
LVM_CONFIG = "devices { use_devicesfile=0 } activation { udev_sync=0 udev_rules=0 }"

# ... and libdevmapper (cryptsetup) must not wait for udev to confirm the nodes it makes.
NO_UDEV = {"DM_DISABLE_UDEV": "1"}

Layer = RaidArray | VolumeGroup | LuksContainer


def dm_name(name: str) -> str:
    """The device-mapper name of an LV: vg0/my-lv -> vg0-my--lv."""
    vg, _, lv = name.partition("/")
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


@dataclass(frozen=True)
class Nodes:
    """Saved device names (the layout's: "sda1", "md0", "vg0/root", "cryptroot") -> nodes now."""

    partitions: Mapping[str, str]  # "/dev/sda1" (saved) -> "/dev/vdb1"
    lvs: frozenset[str] = frozenset()
    luks: frozenset[str] = frozenset()

    def __call__(self, name: str) -> str:
        if f"/dev/{name}" in self.partitions:
            return self.partitions[f"/dev/{name}"]
        if name in self.luks:
            return f"/dev/mapper/{name}"
        if name in self.lvs:
            return f"/dev/mapper/{dm_name(name)}"
        return f"/dev/{name}"  # an MD array keeps its name: /dev/md0


def layer_name(layer: Layer) -> str:
    return layer.name


def below(layer: Layer) -> list[str]:
    """The device names a layer is made on."""
    if isinstance(layer, RaidArray):
        return list(layer.members)
    if isinstance(layer, VolumeGroup):
        return [pv.device for pv in layer.pvs]
    return [layer.device]


def provides(layer: Layer) -> list[str]:
    if isinstance(layer, VolumeGroup):
        return [f"{layer.name}/{lv.name}" for lv in layer.lvs]
    return [layer.name]


def layers(
    raids: tuple[RaidArray, ...], vgs: tuple[VolumeGroup, ...], luks: tuple[LuksContainer, ...]
) -> list[Layer]:
    """Every layer, each after the layers it sits on."""
    todo: list[Layer] = [*raids, *vgs, *luks]
    made = {n for layer in todo for n in provides(layer)}
    ready: set[str] = set()
    ordered: list[Layer] = []
    while todo:
        doable = [x for x in todo if all(d not in made or d in ready for d in below(x))]
        if not doable:
            raise MkrecError(
                f"the saved layout's RAID/LVM/LUKS devices depend on each other in a circle: {todo[0].name}"
            )
        for x in doable:
            ordered.append(x)
            ready.update(provides(x))
            todo.remove(x)
    return ordered


# ---- the commands ----


def mdadm_create_argv(raid: RaidArray, members: list[str]) -> list[str]:
    argv = ["mdadm", "--create", f"/dev/{raid.name}", "--run", f"--level={raid.level}"]
    argv.append(f"--raid-devices={raid.raid_devices or len(members)}")
    if raid.metadata:
        argv.append(f"--metadata={raid.metadata}")
    if raid.uuid:
        argv.append(f"--uuid={raid.uuid}")
    if raid.md_name:
        argv.append(f"--name={raid.md_name}")
    if raid.chunk_size:
        argv.append(f"--chunk={raid.chunk_size // 1024}K")
    return [*argv, *members]


def mdadm_assemble_argv(raid: RaidArray, members: list[str]) -> list[str]:
    return ["mdadm", "--assemble", "--run", f"/dev/{raid.name}", *members]


def pvcreate_argv(uuid: str | None, node: str, restorefile: str = "") -> list[str]:
    """restorefile: the VG's saved metadata, whose header and extent layout the PV gets."""
    argv = ["pvcreate", "--config", LVM_CONFIG, "-ff", "-y"]
    if uuid and restorefile:
        argv += ["--uuid", uuid, "--restorefile", restorefile]
    elif uuid:
        # --norestorefile: the UUID is taken as it is, without a metadata backup to check it against
        argv += ["--uuid", uuid, "--norestorefile"]
    return [*argv, node]


def vgcfgrestore_argv(vg: VolumeGroup, restorefile: str) -> list[str]:
    return ["vgcfgrestore", "--config", LVM_CONFIG, "-y", "-f", restorefile, vg.name]


def vgcreate_argv(vg: VolumeGroup, nodes: list[str]) -> list[str]:
    return [
        "vgcreate",
        "--config",
        LVM_CONFIG,
        "-y",
        "--physicalextentsize",
        f"{vg.extent_size // 1024}k",
        vg.name,
        *nodes,
    ]


def lvcreate_argv(vg: VolumeGroup, lv_index: int) -> list[str]:
    lv = vg.lvs[lv_index]
    argv = [
        "lvcreate",
        "--config",
        LVM_CONFIG,
        "-y",
        "-W",
        "y",
        "-Z",
        "y",
        "--name",
        lv.name,
        "--size",
        f"{lv.size}b",
    ]
    if lv.stripes and lv.stripes > 1:
        argv += ["--stripes", str(lv.stripes)]
    return [*argv, vg.name]


def vgchange_argv(vg: VolumeGroup, active: bool = True) -> list[str]:
    return ["vgchange", "--config", LVM_CONFIG, "-ay" if active else "-an", vg.name]


def luks_format_argv(c: LuksContainer, node: str, key_file: str, pbkdf_iterations: int = 0) -> list[str]:
    """luksFormat with the saved UUID, cipher, key size and label; the key from key_file ("-": stdin)."""
    argv = ["cryptsetup", "luksFormat", "--batch-mode", f"--type=luks{c.version}"]
    if c.uuid:
        argv.append(f"--uuid={c.uuid}")
    if c.cipher:
        argv.append(f"--cipher={c.cipher}")
    if c.key_size:
        argv.append(f"--key-size={c.key_size}")
    if c.label and c.version >= 2:
        argv.append(f"--label={c.label}")
    if pbkdf_iterations:
        # slow machines and tests: a fixed-cost PBKDF2 instead of memory-hard argon2id benchmarking
        argv += ["--pbkdf=pbkdf2", f"--pbkdf-force-iterations={pbkdf_iterations}"]
    return [*argv, f"--key-file={key_file}", node]


def luks_open_argv(c: LuksContainer, node: str, key_file: str) -> list[str]:
    return ["cryptsetup", "open", f"--key-file={key_file}", node, c.name]


# ---- the steps ----


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
