"""Each preflight check with real probes where cheap; pytest-subprocess where a device is missing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from support import sh

from mkrec import preflight as pf
from mkrec import runner
from mkrec.config import Config, config_from_dict
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.layout.sourcedisks import LSBLK, disks_to_back_up
from mkrec.tools import CORE, PACKAGE

FIXTURES = Path(__file__).parent / "fixtures"


def ctx_with(tmp_path: Path, **sections: dict[str, object]) -> Context:
    data: dict[str, dict[str, object]] = {"build": {"output": str(tmp_path / "out")}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Context(config_from_dict(data))


def rows(check: pf.Callable[[Context], pf.Iterable[pf.Result]], ctx: Context) -> list[pf.Result]:  # type: ignore[name-defined]
    return list(check(ctx))


def only(results: list[pf.Result]) -> pf.Result:
    assert len(results) == 1, results
    return results[0]


def test_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = ctx_with(tmp_path)
    expected = pf.Status.PASS if os.geteuid() == 0 else pf.Status.FAIL
    assert only(rows(pf.check_root, ctx)).status is expected
    monkeypatch.setattr(pf.os, "geteuid", lambda: 1000)
    row = only(rows(pf.check_root, ctx))
    assert (row.status, row.fix) == (pf.Status.FAIL, "run as root (sudo make)")


def test_every_core_tool_has_a_package() -> None:
    assert all(tool in PACKAGE for tool in CORE)


def test_tools_present_here(tmp_path: Path) -> None:
    assert only(rows(pf.check_tools, ctx_with(tmp_path))).status is pf.Status.PASS


def test_a_removed_tool_fails_with_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A PATH holding every needed tool but sgdisk: the real lookup must notice.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in CORE:
        found = shutil.which(tool)
        if tool != "sgdisk" and found:
            (bindir / tool).symlink_to(found)
    monkeypatch.setattr(runner, "SAFE_PATH", str(bindir))
    failed = [r for r in rows(pf.check_tools, ctx_with(tmp_path)) if r.status is pf.Status.FAIL]
    assert [(r.check, r.fix) for r in failed if r.check == "tool sgdisk"] == [
        ("tool sgdisk", "apt-get install gdisk")
    ]


def test_burn_needs_xorriso(tmp_path: Path) -> None:
    ctx = ctx_with(tmp_path, media={"burn": True})
    assert "xorriso" in pf.needed_tools(ctx.config)
    assert "xorriso" not in pf.needed_tools(Config())


def test_kernel(tmp_path: Path) -> None:
    if not list(Path("/boot").glob("vmlinuz-*")):
        pytest.skip("no /boot/vmlinuz-* on this machine (apt-get install linux-image-amd64)")
    assert only(rows(pf.check_kernel, ctx_with(tmp_path))).status is pf.Status.PASS
    row = only(rows(pf.check_kernel, ctx_with(tmp_path, rescue={"kernel": "0.0.0-none"})))
    assert row.status is pf.Status.FAIL and "[rescue] kernel = '0.0.0-none'" in row.detail


def test_boot_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = ctx_with(tmp_path)
    assert {r.status for r in rows(pf.check_boot_files, ctx)} == {pf.Status.PASS}
    monkeypatch.setattr(pf, "ISOLINUX_FILES", [tmp_path / "isolinux.bin"])
    monkeypatch.setattr(pf, "GRUB_EFI_DIR", tmp_path / "x86_64-efi")
    monkeypatch.setattr(pf, "GRUB_BIOS_DIR", tmp_path / "i386-pc")
    got = {r.check: (r.status, r.fix) for r in rows(pf.check_boot_files, ctx)}
    assert got == {
        "isolinux": (pf.Status.FAIL, "apt-get install isolinux syslinux-common"),
        "grub efi": (pf.Status.FAIL, "apt-get install grub-efi-amd64-bin"),
        "grub bios": (pf.Status.WARN, "apt-get install grub-pc-bin"),
    }


def test_output_space_passes_here(tmp_path: Path) -> None:
    row = only(rows(pf.check_output_space, ctx_with(tmp_path, build={"mode": "rescue"})))
    assert row.status is pf.Status.PASS and "need 512.0 MiB (rescue disc + staging)" in row.detail


@pytest.mark.root
def test_output_space_estimates_the_set_from_the_used_bytes(tmp_path: Path, loop_disks) -> None:  # type: ignore[no-untyped-def]
    """Issue 15: the row used to ask for one volume + staging, while the whole compressed set
    stays in the output directory."""
    disk = loop_disks.create("1G")
    sh("mkfs.ext4", "-q", disk)
    root = loop_disks.mount(disk, tmp_path / "src")
    (root / "data").write_bytes(os.urandom(300 * 1024 * 1024))
    small = tmp_path / "small"
    small.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=700M", "tmpfs", small)
    try:
        ctx = ctx_with(tmp_path, build={"output": str(small)}, source={"root": str(root)})
        row = only(rows(pf.check_output_space, ctx))
    finally:
        sh("umount", small)
    assert row.status is pf.Status.WARN, row  # 512 MiB staging + 300 MiB used > 700 MiB > 512 + 150
    assert "the set is the 3" in row.detail and "MiB in use under" in row.detail
    assert "enough only if the data compresses" in row.detail


@pytest.mark.root
def test_output_space_fails_on_a_small_filesystem(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", small)
    try:
        row = only(rows(pf.check_output_space, ctx_with(tmp_path, build={"output": str(small / "out")})))
    finally:
        sh("umount", small)
    assert row.status is pf.Status.FAIL
    assert row.fix == "free space there, or set [build] output (mode path: [path] dir) to a larger disk"


@pytest.mark.root
def test_output_on_a_raw_partition_fails(tmp_path: Path, loop_disks) -> None:  # type: ignore[no-untyped-def]
    dev = loop_disks.create("64M")
    sh("mkfs.ext4", "-q", dev)
    mnt = loop_disks.mount(dev, tmp_path / "mnt")
    ctx = ctx_with(tmp_path, build={"output": str(mnt / "out")}, source={"raw": [dev]})
    row = only(rows(pf.check_output_excluded, ctx))
    assert row.status is pf.Status.FAIL and "listed in [source] raw" in row.detail
    ok = only(rows(pf.check_output_excluded, ctx_with(tmp_path, build={"output": str(mnt / "out")})))
    assert ok.status is pf.Status.PASS


def test_ram_need_follows_the_last_measured_rescue_build(tmp_path: Path) -> None:
    from mkrec.rescue import SIZE_FILE

    ctx = Context(Config(), staging=tmp_path / "isofs")
    assert pf.rescue_ram_need(ctx) == pf.RESCUE_RAM_ESTIMATE  # nothing built yet
    (tmp_path / "isofs").mkdir()
    (tmp_path / "isofs" / SIZE_FILE).write_text('{"unpacked": 160000000}')
    assert pf.rescue_ram_need(ctx) == 320000000


def test_ram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = ctx_with(tmp_path)
    monkeypatch.setattr(pf, "rescue_ram_need", lambda ctx: pf.RESCUE_RAM_ESTIMATE)
    for total, status in [
        (8 * 1024**3, pf.Status.PASS),
        (768 * 1024**2, pf.Status.WARN),
        (256 * 1024**2, pf.Status.FAIL),
    ]:
        monkeypatch.setattr(pf, "_meminfo", lambda key, t=total: t)
        assert only(rows(pf.check_ram, ctx)).status is status


def test_configured_disks_that_do_not_exist_or_are_not_devices(tmp_path: Path) -> None:
    plain = tmp_path / "file"
    plain.write_text("x")
    ctx = ctx_with(tmp_path, source={"disks": [str(tmp_path / "none"), str(plain)]})
    got = [(r.status, r.detail) for r in rows(pf.check_disks, ctx)]
    assert got == [(pf.Status.FAIL, "does not exist"), (pf.Status.FAIL, "is not a block device")]


def test_discovery_from_lsblk_output(tmp_path: Path, fp) -> None:  # type: ignore[no-untyped-def]
    # Captured on a VM whose root disk /dev/vda is mounted on / directly (no partition table).
    fixture = (FIXTURES / "lsblk-vm-root.json").read_text()
    fp.register(LSBLK, stdout=fixture)
    assert disks_to_back_up(ctx_with(tmp_path).config, tmp_path) == ["/dev/vda"]


@pytest.mark.root
def test_a_disk_that_cannot_be_opened_warns(loop_disks) -> None:  # type: ignore[no-untyped-def]
    dev = loop_disks.create("16M")

    def refuse(path: str, flags: int) -> int:  # what /dev/vda does in this sandbox
        raise PermissionError(1, "Operation not permitted")

    row = only(list(pf._check_disk(dev, opener=refuse)))
    assert row.check == f"disk {dev}" and row.status is pf.Status.WARN
    assert row.detail.startswith("cannot be opened (EPERM): boot sectors and raw images are skipped")
    assert only(list(pf._check_disk(dev))).status is pf.Status.PASS


@pytest.mark.root
def test_discovers_the_disk_under_root_and_reads_it(tmp_path: Path, loop_disks) -> None:  # type: ignore[no-untyped-def]
    dev = loop_disks.create("64M")
    sh("sfdisk", "-q", dev, input="label: gpt\n,\n")
    loop_disks.rescan(dev)
    sh("mkfs.ext4", "-q", f"{dev}p1")
    mnt = loop_disks.mount(f"{dev}p1", tmp_path / "root")
    ctx = ctx_with(tmp_path, source={"root": str(mnt)})
    assert disks_to_back_up(ctx.config) == [dev]
    row = only(rows(pf.check_disks, ctx))
    assert (row.check, row.status) == (f"disk {dev}", pf.Status.PASS)


def test_mode_path(tmp_path: Path) -> None:
    unset = only(rows(pf.check_mode, ctx_with(tmp_path, build={"mode": "path"})))
    assert unset.status is pf.Status.FAIL and unset.fix == 'set [path] dir = "/mnt/backup"'
    missing = ctx_with(tmp_path, build={"mode": "path"}, path={"dir": str(tmp_path / "nope")})
    assert only(rows(pf.check_mode, missing)).detail.endswith("is not a directory")
    ok = ctx_with(tmp_path, build={"mode": "path"}, path={"dir": str(tmp_path)})
    assert only(rows(pf.check_mode, ok)).status is pf.Status.PASS
    (tmp_path / "out").mkdir()
    same = ctx_with(tmp_path, build={"mode": "path"}, path={"dir": str(tmp_path / "out")})
    row = only(rows(pf.check_mode, same))
    assert row.status is pf.Status.FAIL and row.detail.endswith(
        "is also [build] output, where the rescue disc goes"
    )


def test_mode_tape(tmp_path: Path) -> None:
    missing = ctx_with(tmp_path, build={"mode": "tape"}, tape={"device": str(tmp_path / "nst0")})
    row = only(rows(pf.check_mode, missing))
    assert row.status is pf.Status.FAIL and "modprobe st" in row.fix
    (tmp_path / "tape.img").write_bytes(b"")
    as_file = ctx_with(tmp_path, build={"mode": "tape"}, tape={"device": str(tmp_path / "tape.img")})
    assert only(rows(pf.check_mode, as_file)).status is pf.Status.PASS


def test_burn_without_a_drive_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pf.Path, "glob", lambda self, pattern: iter([]))
    row = only(rows(pf.check_mode, ctx_with(tmp_path, media={"burn": True})))
    assert row.status is pf.Status.FAIL and row.fix == "set [media] burn = false"


def test_bad_config_is_a_fail_row_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = MkrecError("c.toml: [media] size: 'x' is neither a media name", hint=None)
    code = pf.preflight(ctx_with(tmp_path), error)
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  config" in out and "[media] size" in out and "fix: fix the key named above" in out


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pf.preflight(ctx_with(tmp_path), as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data[0] == {
        "check": "config",
        "status": "PASS",
        "detail": "built-in defaults is valid (mode cd)",
        "fix": "",
    }
    assert {row["status"] for row in data} <= {"PASS", "WARN", "FAIL"}


def test_media_smaller_than_the_rescue_system_fails_naming_the_smallest_size(tmp_path: Path) -> None:
    """Issue 15: a 64M medium cannot hold a 69 MiB rescue disc; say so before any work, with the
    size that works (the build used to stop at the first volume's close, calling it a bug)."""
    staging = tmp_path / "isofs"
    staging.mkdir()
    (staging / "rescue-size.json").write_text(json.dumps({"unpacked": 1, "disc": 69 * 1024**2}))
    small = Context(config_from_dict({"build": {"mode": "cd"}, "media": {"size": "64M"}}), staging=staging)
    row = only(rows(pf.check_media, small))
    assert row.status is pf.Status.FAIL
    assert row.detail == (
        '[media] size = "64M" (64.0 MiB); the rescue system takes 69.0 MiB, '
        "so volume 1 has no room for backup data"
    )
    smallest = pf.smallest_media(69 * 1024**2)
    assert row.fix.startswith(f'set [media] size to at least "{smallest // 1024**2}M"')
    fits = Context(
        config_from_dict({"build": {"mode": "cd"}, "media": {"size": f"{smallest // 1024**2}M"}}),
        staging=staging,
    )
    assert only(rows(pf.check_media, fits)).status is pf.Status.PASS
    # before the first build: an estimate, said as one
    fresh = Context(
        config_from_dict({"build": {"mode": "cd"}, "media": {"size": "64M"}}), staging=tmp_path / "none"
    )
    assert "the rescue system takes about 80.0 MiB" in only(rows(pf.check_media, fresh)).detail
    assert rows(pf.check_media, ctx_with(tmp_path, build={"mode": "path"})) == []


def test_pe_signature_is_read_from_the_certificate_table(tmp_path: Path) -> None:
    signed, unsigned = Path("/usr/lib/shim/shimx64.efi.signed"), Path("/usr/lib/shim/shimx64.efi")
    if not (signed.is_file() and unsigned.is_file()):
        pytest.skip("needs shim-signed (apt-get install shim-signed)")
    assert pf.pe_is_signed(signed) and not pf.pe_is_signed(unsigned)
    (tmp_path / "text").write_text("not a PE image")
    assert not pf.pe_is_signed(tmp_path / "text")


def test_secure_boot_row_names_the_packages_when_the_signed_chain_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mkrec.rescue import efi

    monkeypatch.setattr(efi, "SHIM", tmp_path / "shimx64.efi.signed")
    monkeypatch.setattr(efi, "signed_chain", lambda: None)
    row = only(rows(pf.check_secure_boot, ctx_with(tmp_path)))
    assert row.status is pf.Status.WARN
    assert row.detail.endswith("the rescue disc will not boot with Secure Boot enabled")
    assert row.fix == "apt-get install shim-signed grub-efi-amd64-signed"


def test_a_raid1_brings_both_member_disks(tmp_path: Path, fp) -> None:  # type: ignore[no-untyped-def]
    """Debian 12's lsblk -l names one parent for md0 (the realsys raid1 cell captured only vdb):
    sysfs lists every member."""
    rows = [
        {"kname": "vda", "type": "disk", "pkname": None, "mountpoints": [None]},
        {"kname": "vda2", "type": "part", "pkname": "vda", "mountpoints": [None]},
        {"kname": "vdb", "type": "disk", "pkname": None, "mountpoints": [None]},
        {"kname": "vdb2", "type": "part", "pkname": "vdb", "mountpoints": [None]},
        {"kname": "md0", "type": "raid1", "pkname": "vdb2", "mountpoints": ["/"]},
    ]
    fp.register(LSBLK, stdout=json.dumps({"blockdevices": rows}))
    sys_block = tmp_path / "sys"
    for member in ("vda2", "vdb2"):
        (sys_block / "md0" / "slaves" / member).mkdir(parents=True)
    assert disks_to_back_up(ctx_with(tmp_path).config, sys_block) == ["/dev/vda", "/dev/vdb"]


def test_a_degraded_array_warns_before_the_backup(tmp_path: Path) -> None:
    sys_block = tmp_path / "sys"
    for md, degraded in (("md0", "1"), ("md1", "0")):
        (sys_block / md / "md").mkdir(parents=True)
        (sys_block / md / "md" / "degraded").write_text(degraded + "\n")
    (sys_block / "md0p1").mkdir()
    row = only(list(pf.check_raids(ctx_with(tmp_path), sys_block)))
    assert (row.check, row.status) == ("raid md0", pf.Status.WARN)
    assert row.detail.startswith("degraded: 1 member(s) missing") and "mdadm /dev/md0 --add" in row.fix
