"""The RAID/LVM/LUKS stack of the saved system as the plan sees it: saved device names ("sda1",
"md0", "vg0/root", "cryptroot") mapped to the nodes they have now, and the order the layers are made
in. Stacks can be layered in any order (LUKS on RAID, LVM on LUKS ...): `layers()` orders them so
that each is made after what it sits on. Making them: mkrec.restore.apply.layers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mkrec.errors import MkrecError
from mkrec.layout.model import LuksContainer, RaidArray, VolumeGroup

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
