"""The built rescue ISO, end to end: its contents read back with pycdlib, and booted under QEMU
(TCG) as a CD on SeaBIOS, as a USB stick on SeaBIOS and as a CD under OVMF (UEFI), each time
reaching the rescue shell on the serial console and running the tools and Python inside."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pycdlib
import pytest
from qemu import OVMF_CODE, OVMF_CODE_SECBOOT, Guest, qemu_argv

from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.iso import BootPayload
from mkrec.layout import capture_for_build
from mkrec.rescue import build_rescue, write_rescue_set
from mkrec.rescue.efi import signed_chain
from mkrec.rescue.netboot import write_netboot
from mkrec.rescue.rdbase import MARKER

# ---- the tests ----

BOOT_TIMEOUT = 240  # TCG on two cores: about 35 s here; generous for a loaded machine


@dataclass(frozen=True)
class Built:
    iso: Path
    ctx: Context
    payload: BootPayload
    seconds: float


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One rescue ISO for the whole module: serial console, 1 s menu, the shell as default."""
    tmp = tmp_path_factory.mktemp("rescue")
    config = config_from_dict(
        {
            "build": {"mode": "rescue", "output": str(tmp / "out")},
            "rescue": {"console": "ttyS0,115200", "timeout": 1},
        }
    )
    ctx = Context(config, staging=tmp / "isofs", hostname="rescuetest", started=datetime(2026, 11, 23, 7, 12))
    start = time.monotonic()
    capture_for_build(ctx)
    payload = build_rescue(ctx)
    iso = write_rescue_set(ctx, payload)
    return Built(iso, ctx, payload, time.monotonic() - start)


def test_same_day_set_is_replaced_only_when_the_new_one_is_complete(built: Built, tmp_path: Path) -> None:
    ctx = Context(
        config_from_dict({"build": {"mode": "rescue", "output": str(tmp_path / "out")}}),
        staging=built.ctx.staging,
        hostname=built.ctx.hostname,
        started=built.ctx.started,
    )
    ctx.set_dir.mkdir(parents=True)
    (ctx.set_dir / "old-volume.iso").write_text("the set written earlier today")
    broken = BootPayload((*built.payload.entries, (tmp_path / "vanished", "/x")), built.payload.boot)
    with pytest.raises((MkrecError, OSError)):
        write_rescue_set(ctx, broken)
    assert (ctx.set_dir / "old-volume.iso").exists(), "a failed run keeps the earlier set"
    iso = write_rescue_set(ctx, built.payload)
    assert sorted(p.name for p in ctx.set_dir.iterdir()) == sorted(["SHA256SUMS", iso.name])
    assert [p.name for p in ctx.set_dir.parent.iterdir()] == [ctx.set_dir.name]


def _read(iso: pycdlib.PyCdlib, path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path=path)
    return out.getvalue()


def test_set_layout_and_names(built: Built) -> None:
    assert (
        built.iso
        == built.ctx.config.build.output / "rescuetest" / "20261123" / "CDrec-20261123-0712-vol1.iso"
    )
    sums = (built.iso.parent / "SHA256SUMS").read_text()
    assert sums == f"{hashlib.sha256(built.iso.read_bytes()).hexdigest()}  {built.iso.name}\n"
    assert built.iso.stat().st_mode & 0o777 == 0o600
    assert built.iso.parent.stat().st_mode & 0o777 == 0o700
    assert not list(built.iso.parent.parent.glob(".*")), "no partial or old set left behind"


def test_iso_contents_checksums_and_boot_records(built: Built) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(built.iso))
    try:
        pvd = iso.pvds[0]
        assert pvd.volume_identifier.decode().strip() == "CDREC_1"
        assert pvd.volume_set_identifier.decode().strip() == "CDrec-20261123-0712"
        assert iso.eltorito_boot_catalog is not None
        sections = iso.eltorito_boot_catalog.sections
        assert [s.platform_id for s in sections] == [0xEF], "second El Torito entry is the EFI image"
        # Every file listed in SHA256SUMS on the disc has that checksum on the disc.
        sums = _read(iso, "/SHA256SUMS").decode().splitlines()
        names = {line.split("  ", 1)[1] for line in sums}
        assert {
            "boot/vmlinuz",
            "boot/initrd.img",
            "boot/rdbase.img",
            "boot/grub/efi.img",
            "README.txt",
        } <= names
        assert "etc/recovery/config.json" in names and "isolinux/isolinux.cfg" in names
        for line in sums:
            digest, name = line.split("  ", 1)
            assert hashlib.sha256(_read(iso, "/" + name)).hexdigest() == digest, name
        sfv = _read(iso, "/Checksums.sfv").decode().splitlines()
        assert sfv[0].startswith(";") and len(sfv) - 1 == len(sums)
        assert b"rescue" in _read(iso, "/README.txt")
    finally:
        iso.close()
    mbr = built.iso.read_bytes()[:512]
    assert mbr[510:] == b"\x55\xaa", "isohybrid MBR"
    part_types = [mbr[446 + 16 * i + 4] for i in range(4)]
    assert 0xEF in part_types, f"an EFI system partition entry for USB on UEFI, got {part_types}"


def test_no_private_keys_or_password_hashes_reach_the_rescue_disc(built: Built) -> None:
    """Issue 15: the rescue disc is not encrypted; the README lists what of the host it carries.
    No private key, no password hash of the host, no SSH host key: in the ISO and in both initrds
    unpacked."""
    import zstandard

    blobs = {"iso": built.iso.read_bytes()}
    for name in ("initrd.img", "rdbase.img"):
        packed = (built.ctx.staging / "boot" / name).read_bytes()
        blobs[name] = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(packed)).read()
    hashes = [
        fields[1].encode()
        for line in Path("/etc/shadow").read_text().splitlines()
        if len(fields := line.split(":")) > 1 and fields[1].startswith("$")
    ]
    # A key, not a format's name: the ssh client (carried for ssh:// sources), cryptography and pyrage
    # (carried to open encrypted sets) hold PEM labels such as "-----BEGIN OPENSSH PRIVATE KEY-----",
    # "AGE-SECRET-KEY-" and the host key paths as text. What must not be there is key material, and
    # this host's own host keys.
    pem_key = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{40}")
    age_identity = re.compile(rb"AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}")
    host_keys = [p.read_bytes().strip() for p in Path("/etc/ssh").glob("ssh_host_*_key")]
    assert host_keys or not Path("/etc/ssh/sshd_config").exists(), (
        "sshd is installed here: its host keys exist"
    )
    for what, data in blobs.items():
        assert not pem_key.search(data), what
        assert not age_identity.search(data), what
        assert not [k for k in host_keys if k in data], f"an SSH host key of this host is in {what}"
        assert not [h for h in hashes if h in data], f"a password hash of this host is in {what}"
    assert b"root:*:" in blobs["rdbase.img"], "the rescue system's own shadow: root without a password"


def _reach_shell(guest: Guest) -> None:
    guest.expect(MARKER, BOOT_TIMEOUT)
    welcome = guest.text()
    assert "mkrec rescue system for rescuetest" in welcome and "Backup of 2026-11-23 07:12" in welcome
    assert "start-restore" in welcome and "clone-disk" in welcome
    # Shown with pytest -s: the boot time from QEMU start to the rescue shell.
    print(f"\n{guest.log.parent.name}: rescue shell after {time.monotonic() - guest.started:.1f} s")


def _check_shell(guest: Guest) -> None:
    _reach_shell(guest)
    code, out = guest.command("sfdisk --version; mkfs.xfs -V; lvm version | head -1")
    assert code == 0, out
    assert "sfdisk from util-linux" in out and "mkfs.xfs version" in out and "LVM version" in out
    code, out = guest.command(
        "python3 -c 'import mkrec, zstandard, pycdlib, jinja2, psutil; print(\"py-ok\")'"
    )
    assert code == 0 and "py-ok" in out, out
    code, out = guest.command(
        "cat /etc/recovery/hostname; ls /usr/local/bin; start-restore --help >/dev/null"
    )
    assert "rescuetest" in out and "start-restore" in out and "clone-disk" in out, out
    assert code == 0, f"start-restore --help failed: {out}"


@pytest.fixture
def guest_log(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "serial.log"
    yield log


@pytest.mark.vm
def test_boots_as_cd_on_seabios(built: Built, tmp_path: Path) -> None:
    guest = Guest(qemu_argv(["-cdrom", str(built.iso), "-boot", "d"], tmp_path), tmp_path / "serial.log")
    try:
        _check_shell(guest)
        # Modules for the CD-ROM drive are loaded: the disc itself is visible to the rescue system.
        code, out = guest.command("blkid /dev/sr0")
        assert code == 0 and 'LABEL="CDREC_1"' in out, out
    finally:
        guest.kill()


@pytest.mark.vm
def test_boots_as_usb_stick_on_seabios(built: Built, tmp_path: Path) -> None:
    media = [
        "-drive", f"file={built.iso},format=raw,if=none,id=stick,readonly=on",
        "-device", "qemu-xhci", "-device", "usb-storage,drive=stick,bootindex=0",
    ]  # fmt: skip
    guest = Guest(qemu_argv(media, tmp_path), tmp_path / "serial.log")
    try:
        _check_shell(guest)
        code, out = guest.command("cat /sys/block/sda/removable; blkid /dev/sda")
        assert code == 0 and "CDREC_1" in out, out
    finally:
        guest.kill()


@pytest.mark.vm
@pytest.mark.skipif(not OVMF_CODE.exists(), reason=f"needs {OVMF_CODE} (apt-get install ovmf)")
def test_boots_as_cd_under_uefi(built: Built, tmp_path: Path) -> None:
    media = ["-cdrom", str(built.iso)]
    guest = Guest(qemu_argv(media, tmp_path, uefi=True), tmp_path / "serial.log")
    try:
        _check_shell(guest)
        code, out = guest.command("ls -d /sys/firmware/efi; ls /sys/firmware/efi/efivars | grep -c -")
        assert code == 0 and int(out.splitlines()[-1]) > 0, f"booted through UEFI, efivarfs mounted: {out}"
    finally:
        guest.kill()


@pytest.mark.vm
@pytest.mark.skipif(
    not OVMF_CODE_SECBOOT.exists(), reason=f"needs {OVMF_CODE_SECBOOT} (apt-get install ovmf)"
)
@pytest.mark.skipif(signed_chain() is None, reason="needs apt-get install shim-signed grub-efi-amd64-signed")
def test_boots_as_cd_under_uefi_with_secure_boot_enforced(built: Built, tmp_path: Path) -> None:
    """OVMF with Microsoft's keys enrolled and Secure Boot on: shim (signed by Microsoft), Debian's
    signed GRUB and kernel; the kernel locks itself down and loads only signed modules."""
    media = ["-cdrom", str(built.iso)]
    guest = Guest(qemu_argv(media, tmp_path, secure_boot=True), tmp_path / "serial.log")
    try:
        _check_shell(guest)
        _code, out = guest.command("dmesg | grep -i -e 'secure boot' -e 'locked down'")
        assert "secureboot: Secure boot enabled" in out, out
        assert "Kernel is locked down from EFI Secure Boot" in out, out
        # under lockdown only signed modules load: the CD drive's and iso9660 among them
        code, out = guest.command("grep -c -e '^sr_mod ' -e '^isofs ' /proc/modules; blkid /dev/sr0")
        assert code == 0 and out.splitlines()[0] == "2" and 'LABEL="CDREC_1"' in out, out
    finally:
        guest.kill()


# ---- network boot: the netboot tree served by QEMU's built-in TFTP server ----


@pytest.fixture(scope="module")
def netboot(built: Built) -> Path:
    return write_netboot(built.ctx)


@dataclass(frozen=True)
class HttpServer:
    port: int
    log: Path  # one line per request

    def requests(self) -> str:
        return self.log.read_text()


@pytest.fixture
def http_server(netboot: Path, tmp_path: Path) -> Iterator[HttpServer]:
    """python3 -m http.server on the host's loopback serving the tree: the guest reaches it as 10.0.2.2."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(netboot), str(port)]
    log = tmp_path / "http.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=out)
    try:
        yield HttpServer(port, log)
    finally:
        server.kill()
        server.wait()


def _pxe(tree: Path, bootfile: str, nic: str) -> list[str]:
    netdev = f"user,id=n0,tftp={tree},bootfile={bootfile}"
    return ["-netdev", netdev, "-device", f"{nic},netdev=n0"]


def _check_network(guest: Guest, port: int, bootif: str = "BOOTIF=01-52") -> None:
    """DHCP brought up the booting NIC; static ip= settings work too; the host's server answers."""
    code, out = guest.command("cat /proc/cmdline; ip -4 addr show dev eth0; ip route")
    assert code == 0 and bootif in out, out
    assert "inet 10.0.2.15/24" in out and "default via 10.0.2.2" in out, out
    code, out = guest.command(f"wget -q -O - http://10.0.2.2:{port}/netboot.ipxe | head -n 1")
    assert code == 0 and "#!ipxe" in out, out
    static = "ip=10.0.2.20::10.0.2.2:255.255.255.0::eth0:off:10.0.2.3"
    code, out = guest.command(
        f"kill $(cat /run/udhcpc.eth0.pid); ip addr flush dev eth0; MKREC_CMDLINE={static} /etc/mkrec/network"
    )
    assert code == 0 and "network on eth0: 10.0.2.20/24" in out, out
    code, out = guest.command(f"ip route; cat /etc/resolv.conf; wget -q -O - http://10.0.2.2:{port}/grub.cfg")
    assert code == 0 and "default via 10.0.2.2" in out and "nameserver 10.0.2.3" in out, out
    assert "mkrec rescue network boot" in out, out


NO_OVMF = pytest.mark.skipif(not OVMF_CODE.exists(), reason=f"needs {OVMF_CODE} (apt-get install ovmf)")


@pytest.mark.vm
@pytest.mark.parametrize(
    ("uefi", "bootfile", "nic"),
    [
        # SeaBIOS runs the NIC's iPXE ROM, which loads pxelinux.0 over TFTP.
        pytest.param(False, "pxelinux.0", "e1000", id="bios"),
        # OVMF loads bootx64.efi (GRUB's network image) over TFTP; GRUB reads the menu beside it.
        pytest.param(True, "bootx64.efi", "virtio-net-pci", id="uefi", marks=NO_OVMF),
    ],
)
def test_pxe_boot(
    built: Built, netboot: Path, http_server: HttpServer, tmp_path: Path, uefi: bool, bootfile: str, nic: str
) -> None:
    net = _pxe(netboot, bootfile, nic)
    media = [] if uefi else ["-boot", "n"]
    guest = Guest(qemu_argv(media, tmp_path, uefi=uefi, net=net), tmp_path / "serial.log")
    try:
        _reach_shell(guest)
        _check_network(guest, http_server.port)
    finally:
        guest.kill()


@pytest.mark.vm
def test_http_boot_with_ipxe(built: Built, netboot: Path, http_server: HttpServer, tmp_path: Path) -> None:
    """The NIC's iPXE ROM (SeaBIOS) runs netboot.ipxe from the host's web server, which serves the
    kernel and both initrds too."""
    script = f"http://10.0.2.2:{http_server.port}/netboot.ipxe"
    net = ["-netdev", f"user,id=n0,bootfile={script}", "-device", "virtio-net-pci,netdev=n0"]
    guest = Guest(qemu_argv(["-boot", "n"], tmp_path, net=net), tmp_path / "serial.log")
    try:
        _reach_shell(guest)
        for name in ("netboot.ipxe", "vmlinuz", "initrd.img", "rdbase.img"):
            assert f'GET /{name} HTTP/1.1" 200' in http_server.requests(), name
        _check_network(guest, http_server.port, bootif="BOOTIF=01-52-54-00")
    finally:
        guest.kill()
