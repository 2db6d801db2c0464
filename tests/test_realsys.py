"""The real-system restore matrix (tests/realsys): its naming and choices checked quickly, and a
covering subset run for real (marked vm): a debootstrapped Debian 12 installed onto virtual disks,
backed up by mkrec running inside it, restored from the rescue disc, booted, same marker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from realsys import cells, install, rootfs
from realsys.matrix import main

# What `make check` runs for real: every value of every dimension once (firmware bios/uefi/uefisb,
# table gpt/mbr, stack plain/lvm/raid1/luks, size same/larger/smaller) in four source systems, each
# installed and backed up once, one guest per core side by side (~15 min on the 2-core TCG machines).
COVERING = ["bios-mbr-plain-larger", "bios-gpt-raid1-smaller", "uefi-gpt-lvm-smaller", "uefisb-gpt-luks-same"]


def test_the_covering_subset_has_every_value_of_every_dimension() -> None:
    chosen = [cells.parse_cell(name) for name in COVERING]
    assert {c.system.firmware for c in chosen} == {"bios", "uefi", "uefisb"}
    assert {c.system.label for c in chosen} == set(cells.LABELS)
    assert {c.system.stack for c in chosen} == set(cells.STACKS)
    assert {c.size for c in chosen} == set(cells.SIZES)


def test_cells_are_named_and_selected_by_shell_pattern() -> None:
    names = [c.name for c in cells.all_cells()]
    assert len(names) == 52 and len(set(names)) == 52  # 48 + 4 Secure Boot cells
    assert "uefisb-gpt-luks-same" in names and "uefisb-gpt-luks-larger" not in names
    chosen = [c.name for c in cells.select(["uefi-gpt-*-same", "bios-mbr-raid1-smaller"])]
    assert chosen == [  # in matrix order
        "bios-mbr-raid1-smaller",
        "uefi-gpt-plain-same",
        "uefi-gpt-lvm-same",
        "uefi-gpt-raid1-same",
        "uefi-gpt-luks-same",
    ]
    with pytest.raises(ValueError, match="no cell matches"):
        cells.select(["bios-gpt-zfs-*"])


def test_mirror_comes_from_the_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert rootfs.mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://old.example/debian bookworm main\n")
    assert rootfs.mirror(tmp_path) == "http://old.example/debian"


def test_cache_key_follows_the_package_list() -> None:
    assert rootfs.cache_key("bios") != rootfs.cache_key("uefi")
    assert "grub-pc" in rootfs.packages("bios") and "shim-signed" in rootfs.packages("uefi")
    assert rootfs.tarball_path("bios").parent == rootfs.CACHE


def test_partitions_as_the_installer_makes_them() -> None:
    assert install.sfdisk_script(cells.System("bios", "gpt", "plain")) == (
        "label: gpt\n"
        f"size=1MiB, type={install.GPT['bios']}\n"
        f"size=2799MiB, type={install.GPT['linux']}\n"
        f"type={install.GPT['swap']}\n"
    )
    assert install.sfdisk_script(cells.System("uefi", "mbr", "luks")) == (
        "label: dos\nsize=256MiB, type=ef\nsize=512MiB, type=83\ntype=83\n"
    )
    assert install.sfdisk_script(cells.System("bios", "mbr", "raid1")) == "label: dos\ntype=fd, bootable\n"


@pytest.mark.vm
def test_real_debian_systems_restore_and_boot(tmp_path: Path) -> None:
    if os.system("command -v debootstrap >/dev/null") != 0:
        pytest.skip("needs debootstrap (make deps)")
    out = tmp_path / "matrix.json"
    code = main(["--workdir", str(tmp_path), "--json", str(out), *COVERING])
    results = json.loads(out.read_text())
    failed = [f"{r['cell']}: {r['step']}: {r['line']} ({r['log']})" for r in results if r["status"] != "PASS"]
    assert code == 0 and not failed, "\n".join(failed)
