"""The netboot tree: its menus rendered from the disc's templates and entries (compared with
expected files), the tree written from a staged rescue system with the real boot loaders, and the
README's dnsmasq configuration checked by dnsmasq itself."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from mkrec.config import config_from_dict
from mkrec.context import REPO_ROOT, Context
from mkrec.rescue import bootcfg, modules, netboot
from mkrec.rescue.netboot import GRUB_NET_MODULES, grub_net_argv, write_netboot

FIXTURES = Path(__file__).parent / "fixtures" / "rescue"
SERIAL = {"console": "ttyS0,115200", "timeout": 1}
AUTORUN = {"autorun": "start-restore", "timeout": 10}


def make_ctx(tmp: Path | None = None, /, **rescue: object) -> Context:
    data: dict[str, object] = {"rescue": rescue}
    if tmp is not None:
        data["build"] = {"mode": "rescue", "output": str(tmp / "out")}
    staging = tmp / "isofs" if tmp is not None else REPO_ROOT / "isofs"
    return Context(
        config_from_dict(data), hostname="pc1", started=datetime(2026, 11, 23, 7, 12), staging=staging
    )


def pxelinux(ctx: Context, memtest: bool) -> str:
    return bootcfg.render_isolinux(ctx, memtest=memtest, medium=bootcfg.PXELINUX)


def grub_net(ctx: Context, memtest: bool) -> str:
    return bootcfg.render_grub(ctx, memtest=memtest, medium=bootcfg.GRUB_NET)


def ipxe(ctx: Context, memtest: bool) -> str:
    return bootcfg.render_ipxe(ctx, memtest_bios=memtest, memtest_efi=memtest)


@pytest.mark.parametrize(
    ("render_fn", "rescue", "memtest", "expected"),
    [
        (pxelinux, SERIAL, True, "pxelinux-serial-memtest.cfg"),
        (grub_net, AUTORUN, False, "grub-net-autorun.cfg"),
        (ipxe, SERIAL, True, "netboot-serial-memtest.ipxe"),
    ],
)
def test_network_menus_match_expected_files(
    render_fn: Callable[[Context, bool], str], rescue: dict[str, object], memtest: bool, expected: str
) -> None:
    assert render_fn(make_ctx(**rescue), memtest) == (FIXTURES / expected).read_text()


def test_network_menus_offer_the_discs_entries_and_default_and_pass_the_booting_nic() -> None:
    ctx = make_ctx(**AUTORUN)
    menus = {"pxelinux": pxelinux(ctx, True), "grub": grub_net(ctx, True), "ipxe": ipxe(ctx, True)}
    disc = bootcfg.render_isolinux(ctx, memtest=True)
    for name, text in menus.items():
        for entry in bootcfg.ENTRIES:
            assert f"mkrec.run={entry.run}" in text and entry.title in text, name
        assert "unattended" in text.split("mkrec.run=")[0], f"{name}: the default entry comes first"
        assert "memtest" in text, name
    assert menus["pxelinux"].count("IPAPPEND 2") == len(bootcfg.ENTRIES)
    assert menus["grub"].count("BOOTIF=01-${net_default_mac}") == len(bootcfg.ENTRIES)
    assert menus["ipxe"].count("BOOTIF=01-${netX/mac:hexhyp}") == len(bootcfg.ENTRIES)
    assert "BOOTIF" not in disc and "IPAPPEND" not in disc, "the disc's menu is unchanged"
    assert "/boot/" not in menus["pxelinux"] + menus["ipxe"], "names relative to the boot loader"


def test_zero_timeout_boots_at_once_in_ipxe() -> None:
    assert "--timeout 1 " in ipxe(make_ctx(timeout=0), False)  # iPXE waits forever on 0


def test_grub_network_image_argv() -> None:
    argv = grub_net_argv(Path("/t/bootx64.efi"), Path("/w/embedded.cfg"))
    assert argv == [
        "grub-mkimage", "-O", "x86_64-efi", "-o", "/t/bootx64.efi", "-p", "/", "-c", "/w/embedded.cfg",
        *GRUB_NET_MODULES,
    ]  # fmt: skip
    assert {"efinet", "tftp", "http", "linux", "normal"} <= set(GRUB_NET_MODULES)


def test_embedded_grub_config_reads_the_menu_beside_the_image() -> None:
    text = bootcfg.render_grub_net_embedded(make_ctx())
    assert "set mkrec_dir=$cmdpath\nexport mkrec_dir\n" in text
    assert text.rstrip().endswith("configfile $cmdpath/grub.cfg")


def test_host_nic_modules_come_from_sysfs(tmp_path: Path) -> None:
    drivers = tmp_path / "bus" / "pci" / "drivers"
    for nic, module in (("enp1s0", "igb"), ("enp2s0", "igb"), ("eth2", "bnx2")):
        (drivers / module).mkdir(parents=True, exist_ok=True)
        (tmp_path / "module" / module).mkdir(parents=True, exist_ok=True)
        (drivers / module / "module").unlink(missing_ok=True)
        (drivers / module / "module").symlink_to(tmp_path / "module" / module)
        (tmp_path / "net" / nic / "device").mkdir(parents=True)
        (tmp_path / "net" / nic / "device" / "driver").symlink_to(drivers / module)
    (tmp_path / "net" / "br0").mkdir()  # a bridge: no device, no driver
    assert modules.host_nic_modules(tmp_path / "net") == ("igb", "bnx2")
    assert {"virtio_net", "e1000", "af_packet"} <= set(modules.NET_MODULES)


def _stage(ctx: Context, memtest: bool) -> None:
    boot = ctx.staging / "boot"
    boot.mkdir(parents=True)
    names = [bootcfg.KERNEL_NAME, bootcfg.INITRD_NAME, bootcfg.RDBASE_NAME]
    for name in names + ([bootcfg.MEMTEST_BIOS_NAME] if memtest else []):
        (boot / name).write_text(f"staged {name}\n")
    (ctx.staging / ".work").mkdir()


def test_the_tree_has_the_boot_loaders_menus_and_files_at_the_top(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, **SERIAL)
    _stage(ctx, memtest=True)
    tree = write_netboot(ctx)
    assert tree == tmp_path / "out" / "pc1" / "20261123" / "netboot"
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")) == [
        "bootx64.efi", "grub.cfg", "initrd.img", "ldlinux.c32", "libcom32.c32", "libutil.c32",
        "memtest.bin", "menu.c32", "netboot.ipxe", "pxelinux.0", "pxelinux.cfg", "pxelinux.cfg/default",
        "rdbase.img", "vmlinuz",
    ]  # fmt: skip
    assert (tree / "rdbase.img").read_text() == "staged rdbase.img\n"
    assert {p.stat().st_mode & 0o777 for p in tree.rglob("*")} == {0o600, 0o700}, "private like the set"
    assert (tree / "pxelinux.cfg" / "default").read_text() == pxelinux(ctx, True)
    assert (tree / "grub.cfg").read_text() == grub_net(ctx, False), "no EFI memtest staged"
    assert (tree / "netboot.ipxe").read_text() == bootcfg.render_ipxe(ctx, memtest_bios=True)
    image = (tree / "bootx64.efi").read_bytes()
    assert image[:2] == b"MZ" and b"configfile $cmdpath/grub.cfg" in image, "a PE image with its config"


def test_a_new_tree_replaces_the_old_one_only_when_complete(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    _stage(ctx, memtest=False)
    tree = write_netboot(ctx)
    (tree / "left-over").write_text("from the earlier build")
    (ctx.staging / "boot" / bootcfg.RDBASE_NAME).unlink()
    with pytest.raises(FileNotFoundError):
        write_netboot(ctx)
    assert (tree / "left-over").exists(), "a failed build keeps the earlier tree"
    assert sorted(p.name for p in tree.parent.iterdir()) == ["netboot"], "nothing half-written left"
    (ctx.staging / "boot" / bootcfg.RDBASE_NAME).write_text("new\n")
    write_netboot(ctx)
    assert not (tree / "left-over").exists() and (tree / "rdbase.img").read_text() == "new\n"


def test_a_machine_without_pxelinux_or_grub_efi_still_gets_a_tree_and_its_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A real Debian system that has neither pxelinux nor grub-efi-amd64-bin (the matrix found it):
    the build must not fail for the network boot; the ways it cannot offer are named."""
    monkeypatch.setattr(netboot, "PXELINUX", tmp_path / "none" / "pxelinux.0")
    monkeypatch.setattr(netboot, "GRUB_EFI_MODULES", tmp_path / "none" / "x86_64-efi")
    ctx = make_ctx(tmp_path)
    _stage(ctx, memtest=False)
    tree = write_netboot(ctx)
    assert sorted(p.name for p in tree.iterdir()) == ["initrd.img", "netboot.ipxe", "rdbase.img", "vmlinuz"]
    said = caplog.text
    assert "netboot tree without BIOS PXE" in said and "apt-get install pxelinux" in said
    assert "netboot tree without UEFI network boot" in said and "grub-efi-amd64-bin" in said


def readme_dnsmasq_conf() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    found = re.search(r"<!-- dnsmasq\.conf:[^\n]*-->\n```\n(.*?)```\n", readme, re.S)
    assert found, "README.md: the dnsmasq configuration block is gone"
    return found.group(1)


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq (apt-get install dnsmasq-base)")
def test_readme_dnsmasq_configuration_passes_dnsmasq_test(tmp_path: Path) -> None:
    conf = tmp_path / "mkrec.conf"
    text = readme_dnsmasq_conf()
    assert "dhcp-range=192.168.1.0,proxy" in text and "enable-tftp" in text and "bootx64.efi" in text
    conf.write_text(text)
    done = subprocess.run(["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "syntax check OK" in done.stderr, done.stderr
    conf.write_text(text + "pxe-servce=typo\n")  # the check can fail
    done = subprocess.run(["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "bad option" in done.stderr, done.stderr
