"""The modules.dep resolver: dependencies first, each module once, names as the kernel compares
them, built-in modules skipped, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkrec.errors import MkrecError
from mkrec.kernel import find_kernel
from mkrec.rescue import modules

FIXTURES = Path(__file__).parent / "fixtures" / "rescue"


@pytest.fixture
def index() -> modules.ModuleIndex:
    return modules.parse_modules_dep(
        (FIXTURES / "modules.dep").read_text(), (FIXTURES / "modules.builtin").read_text()
    )


def test_dependencies_come_first_and_once(index: modules.ModuleIndex) -> None:
    order = modules.resolve(index, ["sr_mod", "usb_storage"])
    assert order == [
        "kernel/drivers/scsi/scsi_common.ko",
        "kernel/drivers/scsi/scsi_mod.ko",
        "kernel/drivers/cdrom/cdrom.ko",
        "kernel/drivers/scsi/sr_mod.ko",
        "kernel/drivers/usb/common/usb-common.ko.xz",
        "kernel/drivers/usb/core/usbcore.ko.xz",
        "kernel/drivers/usb/storage/usb-storage.ko.xz",
    ]


def test_dash_and_underscore_are_the_same_name(index: modules.ModuleIndex) -> None:
    assert modules.resolve(index, ["usb-storage"]) == modules.resolve(index, ["usb_storage"])
    assert modules.module_name("kernel/drivers/usb/storage/usb-storage.ko.xz") == "usb_storage"


def test_builtin_and_unknown_wanted_modules_are_skipped(index: modules.ModuleIndex) -> None:
    assert modules.resolve(index, ["ext4", "virtio-blk", "no_such_driver"]) == []


def test_required_module_must_exist(index: modules.ModuleIndex) -> None:
    assert modules.resolve(index, [], ["ext4"]) == []  # built in: fine
    with pytest.raises(MkrecError) as err:
        modules.resolve(index, [], ["no_such_driver"])
    assert err.value.message == "[rescue] modules: no kernel module 'no_such_driver' for this kernel"
    assert "modinfo" in (err.value.hint or "")


def test_dependency_loop_is_reported(index: modules.ModuleIndex) -> None:
    with pytest.raises(MkrecError, match="dependency loop loopa -> loopb -> loopa"):
        modules.resolve(index, ["loopa"])


def test_bad_line_names_the_line() -> None:
    with pytest.raises(MkrecError, match=r"modules\.dep line 2: no ':'"):
        modules.parse_modules_dep("a.ko:\nbroken line\n")


def test_real_kernel_reaches_disks_cdroms_and_usb_sticks() -> None:
    kernel = find_kernel()
    index = modules.load_index(kernel.modules)
    order = modules.resolve(index, modules.DEFAULT_MODULES)
    names = [modules.module_name(p) for p in order]
    for needed in (
        "ahci",
        "sd_mod",
        "sr_mod",
        "virtio_blk",
        "virtio_scsi",
        "nvme",
        "usb_storage",
        "uas",
        "isofs",
    ):
        assert needed in names or needed in index.builtin, needed
    # Every module's dependencies were placed before it.
    for i, path in enumerate(order):
        for dep in index.deps[modules.module_name(path)]:
            assert names.index(dep) < i, f"{dep} after {path}"


def test_real_kernel_soft_dependencies_load_first() -> None:
    """ext4 with metadata_csum asks for crc32c by alias at mount time (modules.softdep): without it
    in the initrd the restore cannot mount what it just formatted. Every "pre:" soft dependency of a
    packed module must be packed, as a module or built in, ahead of it."""
    kernel = find_kernel()
    index = modules.load_index(kernel.modules)
    names = [modules.module_name(p) for p in modules.resolve(index, modules.DEFAULT_MODULES)]
    aliases: dict[str, set[str]] = {}
    for line in (kernel.modules / "modules.alias").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias":
            aliases.setdefault(parts[1], set()).add(parts[2].replace("-", "_"))
    checked = 0
    for line in (kernel.modules / "modules.softdep").read_text().splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] != "softdep" or parts[2] != "pre:":
            continue
        module = parts[1].replace("-", "_")
        if module not in names:
            continue
        for wanted in parts[3:]:
            # A crypto algorithm is also satisfied by its built-in generic implementation.
            base = wanted.removeprefix("crypto-").replace("-", "_")
            candidates = aliases.get(wanted, set()) | {base, f"{base}_generic"}
            if candidates & index.builtin:
                continue
            packed = [names.index(c) for c in candidates if c in names]
            assert packed, f"{module} needs {wanted} ({sorted(candidates)}): not in the initrd"
            assert min(packed) < names.index(module), f"{wanted} loads after {module}"
            checked += 1
    assert checked >= 2  # ext4 and jbd2 at least


def test_parse_softdeps_resolves_aliases_and_merges_lines() -> None:
    softdep = (
        "# comment\n"
        "softdep ext4 pre: crypto-crc32c\n"
        "softdep btrfs pre: blake2b-256\n"
        "softdep btrfs pre: sha256 post: late_mod\n"
        "softdep cifs gcm\n"  # no pre: section
    )
    alias = (
        "alias crypto-crc32c crc32c_generic\n"
        "alias crypto-crc32c crc32c-intel\n"
        "alias blake2b-256 blake2b_generic\n"
        "alias sha256 sha256_ssse3\n"
    )
    known = ["crc32c_generic", "crc32c_intel", "blake2b_generic", "late_mod"]  # sha256_ssse3 absent
    assert modules.parse_softdeps(softdep, alias, known) == {
        "ext4": ("crc32c_generic", "crc32c_intel"),
        "btrfs": ("blake2b_generic",),
        "cifs": (),
    }


def test_resolve_loads_soft_dependencies_first() -> None:
    index = modules.parse_modules_dep("fs/ext4.ko: fs/jbd2.ko\nfs/jbd2.ko:\ncrypto/crc32c_generic.ko:\n")
    index = modules.replace(index, softdeps={"ext4": ("crc32c_generic",)})
    assert modules.resolve(index, ["ext4"]) == ["crypto/crc32c_generic.ko", "fs/jbd2.ko", "fs/ext4.ko"]
