"""The matrix's cells: `<bios|uefi>-<gpt|mbr>-<plain|lvm|raid1|luks>-<same|larger|smaller>` and
`uefisb-gpt-<stack>-same`. A cell is a source system (firmware, table, stack) and a target size;
the three sizes of one system share one source install and one backup."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

FIRMWARES = ("bios", "uefi")
LABELS = ("gpt", "mbr")
STACKS = ("plain", "lvm", "raid1", "luks")
SIZES = ("same", "larger", "smaller")

MIB = 1024**2
SOURCE_DISK = 3072 * MIB  # each source disk; the root tree is ~1 GiB, so "smaller" still fits
TARGET_DISK = {"same": SOURCE_DISK, "larger": SOURCE_DISK * 3 // 2, "smaller": 2048 * MIB}


@dataclass(frozen=True)
class System:
    """One source install: what the installer was asked for."""

    firmware: str  # bios | uefi | uefisb (UEFI with Secure Boot enforced)
    label: str  # gpt | mbr
    stack: str  # plain | lvm | raid1 | luks

    @property
    def name(self) -> str:
        return f"{self.firmware}-{self.label}-{self.stack}"

    @property
    def hostname(self) -> str:
        return f"rs-{self.name}"

    @property
    def uefi(self) -> bool:
        return self.firmware != "bios"

    @property
    def boot_loader(self) -> str:
        """Which cached root: grub-pc, or grub-efi-amd64 with shim."""
        return "uefi" if self.uefi else "bios"

    @property
    def disks(self) -> int:
        return 2 if self.stack == "raid1" else 1


@dataclass(frozen=True)
class Cell:
    system: System
    size: str  # same | larger | smaller

    @property
    def name(self) -> str:
        return f"{self.system.name}-{self.size}"

    @property
    def target_bytes(self) -> int:
        return TARGET_DISK[self.size]


def all_cells() -> list[Cell]:
    cells = [
        Cell(System(fw, label, stack), size)
        for fw in FIRMWARES
        for label in LABELS
        for stack in STACKS
        for size in SIZES
    ]
    return cells + [Cell(System("uefisb", "gpt", stack), "same") for stack in STACKS]


def parse_cell(name: str) -> Cell:
    for cell in all_cells():
        if cell.name == name:
            return cell
    raise ValueError(f"{name!r} is not a matrix cell (e.g. bios-gpt-plain-same)")


def select(patterns: list[str]) -> list[Cell]:
    """Cells matching any shell pattern (all when none given), in matrix order."""
    cells = all_cells()
    if not patterns:
        return cells
    chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"no cell matches {' '.join(patterns)} (e.g. 'bios-gpt-*')")
    return chosen
