"""Layout capture of MD RAID, LVM, LUKS and a mounted vfat ESP, inside a virtme-ng guest (the host
kernel has no md, device-mapper or vfat). One guest run builds everything and runs
`mkrec layout capture`; the host then reads the layout back and compares it field by field.
A RAID1 started degraded is captured in the same guest run.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from support import run_in_guest

from mkrec.layout.model import BootKind, PartitionKind
from mkrec.layout.textfmt import read_layout

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"

SCRIPT = r"""
set -e
cd {out}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin DM_DISABLE_UDEV=1
for m in loop raid1 dm_mod dm_crypt vfat nls_cp437 nls_iso8859_1; do modprobe $m; done
LVM='devices {{ use_devicesfile=0 }} activation {{ udev_sync=0 udev_rules=0 }}'
for n in a b c e; do truncate -s 300M $n.img; done
A=$(losetup -f --show a.img); B=$(losetup -f --show b.img)
C=$(losetup -f --show c.img); E=$(losetup -f -P --show e.img)
mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 --name=mkrectest $A $B
pvcreate -q --config "$LVM" /dev/md0
vgcreate -q --config "$LVM" -s 4M vg0 /dev/md0
lvcreate -q --config "$LVM" -y -Wn -Zn -L 60M -n root vg0
lvcreate -q --config "$LVM" -y -Wn -Zn -L 40M -n home vg0
mkfs.ext4 -q -L lvroot /dev/vg0/root
mkfs.ext4 -q -L lvhome /dev/vg0/home
head -c 32 /dev/urandom > key
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --label secret \
  --key-file key $C
cryptsetup open --key-file key $C cryptdata
mkfs.ext4 -q -L inside /dev/mapper/cryptdata
printf 'label: gpt\nsize=64MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n' | sfdisk -q $E
partx -a $E 2>/dev/null || true
mkfs.vfat -F 32 -n ESP ${{E}}p1 >/dev/null
mkdir -p mnt/esp mnt/root mnt/crypt
mount ${{E}}p1 mnt/esp
mkdir -p mnt/esp/EFI/debian && echo fake > mnt/esp/EFI/debian/grubx64.efi
mount /dev/vg0/root mnt/root
mount /dev/mapper/cryptdata mnt/crypt
echo "$A $B $C $E" > devices.txt
blkid -o value -s UUID ${{E}}p1 /dev/vg0/root /dev/vg0/home /dev/mapper/cryptdata > uuids.txt
mdadm --detail --export /dev/md0 > md0.export
start=$(date +%s.%N)
{python} -m mkrec layout capture --disk $A --disk $B --disk $C --disk $E -o {out}/capture
end=$(date +%s.%N)
echo "$start $end" > capture-time.txt
{python} -m mkrec layout show {out}/capture > show.txt
"""


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One guest boot for both tests: the full stack in out/, the degraded array in out/degraded/."""
    out = tmp_path_factory.mktemp("guest")
    python = shlex.quote(str(PYTHON))
    script = SCRIPT.format(out=out, python=python) + DEGRADED.format(out=out / "degraded", python=python)
    (out / "run.sh").write_text(script + "echo GUEST-DONE\n")
    proc = run_in_guest(f"bash {out / 'run.sh'}", out)
    assert "GUEST-DONE" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.vm
def test_capture_raid_lvm_luks_esp_in_guest(guest: Path) -> None:
    tmp_path = guest
    a, b, c, e = (d.removeprefix("/dev/") for d in (tmp_path / "devices.txt").read_text().split())
    esp_uuid, root_uuid, home_uuid, crypt_uuid = (tmp_path / "uuids.txt").read_text().split()
    layout = read_layout(tmp_path / "capture" / "layout.toml")

    # RAID1 over the two whole loop disks
    (raid,) = layout.raids
    assert (raid.name, raid.level, raid.members, raid.metadata) == ("md0", "raid1", (a, b), "1.2")
    assert raid.raid_devices == 2 and raid.md_name is not None and raid.md_name.endswith(":mkrectest")
    assert raid.uuid == next(
        line.split("=", 1)[1]
        for line in (tmp_path / "md0.export").read_text().splitlines()
        if line.startswith("MD_UUID=")
    )
    # LVM: one VG on md0, two linear LVs of the sizes made
    (vg,) = layout.vgs
    assert (vg.name, vg.extent_size, [pv.device for pv in vg.pvs]) == ("vg0", 4 * 1024**2, ["md0"])
    assert {lv.name: (lv.size, lv.segtype) for lv in vg.lvs} == {
        "root": (60 * 1024**2, "linear"),
        "home": (40 * 1024**2, "linear"),
    }
    # LUKS2 on the third disk, opened as cryptdata, no key anywhere
    (luks,) = layout.luks
    assert (luks.device, luks.name, luks.version, luks.label, luks.opened) == (
        c,
        "cryptdata",
        2,
        "secret",
        True,
    )
    assert (luks.cipher, luks.key_size) == ("aes-xts-plain64", 512)
    # filesystems keyed by device, with mount points where mounted
    fs = {f.device: f for f in layout.filesystems}
    assert set(fs) == {f"{e}p1", "vg0/root", "vg0/home", "cryptdata"}
    assert (fs["vg0/root"].type, fs["vg0/root"].label, fs["vg0/root"].uuid) == ("ext4", "lvroot", root_uuid)
    assert fs["vg0/root"].mountpoint == str(tmp_path / "mnt" / "root")
    assert fs["vg0/root"].size == 60 * 1024**2
    assert (fs["vg0/home"].uuid, fs["vg0/home"].mountpoint) == (home_uuid, None)
    assert (fs["cryptdata"].label, fs["cryptdata"].uuid) == ("inside", crypt_uuid)
    assert fs["cryptdata"].mountpoint == str(tmp_path / "mnt" / "crypt")
    esp = fs[f"{e}p1"]
    assert (esp.type, esp.label, esp.uuid, esp.features) == ("vfat", "ESP", esp_uuid, ("FAT32",))
    assert esp.mountpoint == str(tmp_path / "mnt" / "esp") and esp.used is not None
    (part,) = layout.disk(e).partitions  # type: ignore[union-attr]
    assert part.is_esp() and part.kind is PartitionKind.PRIMARY and part.gpt_name == "esp"
    # the ESP holds GRUB EFI: boot loader found, on disk e
    assert [(x.kind, x.disk, x.esp) for x in layout.boot] == [(BootKind.GRUB_EFI, e, f"{e}p1")]
    # the member disks have no table; the partitioned one has its dump and boot sectors
    files = {p.name for p in (tmp_path / "capture").iterdir()}
    assert {f"sfdisk-{e}.dump", f"mbr-{e}.bin", f"fatboot-{e}p1.bin", "README.txt"} <= files
    assert f"sfdisk-{a}.dump" not in files
    key = (tmp_path / "key").read_bytes()
    for path in (tmp_path / "capture").iterdir():
        assert key not in path.read_bytes(), f"{path.name} holds the LUKS key"
    show = (tmp_path / "show.txt").read_text()
    assert "vg0/root" in show and "luks2" in show and "raid1 md md0" in show
    start, end = map(float, (tmp_path / "capture-time.txt").read_text().split())
    print(f"guest capture took {end - start:.1f} s", file=sys.stderr)
    json.dumps(show)  # the tree is plain text


DEGRADED = r"""
mkdir -p {out} && cd {out}
truncate -s 200M a.img; truncate -s 200M b.img
A=$(losetup -f -P --show a.img); B=$(losetup -f -P --show b.img)
for d in $A $B; do
  printf 'label: gpt\nsize=150MiB, type=A19D880F-05FC-4D3B-A006-743F0F84911E\n' | sfdisk -q $d
  partx -a $d 2>/dev/null || true
done
mdadm --create /dev/md1 --run --level=1 --raid-devices=2 --metadata=1.2 --assume-clean ${{A}}p1 ${{B}}p1
mkfs.ext4 -q -L mdroot /dev/md1
# What a realsys raid1 source met once on CI: the array started with its first member only
mdadm --stop /dev/md1
mdadm --assemble --run /dev/md1 ${{A}}p1
mkdir -p root && mount /dev/md1 root
# udev re-reads a member only when told (or on close after a write); lsblk shows udev's record
udevadm trigger --action=change --subsystem-match=block && udevadm settle
printf '[source]\nroot = "{out}/root"\n' > mkrec.toml
echo "$A $B" > devices.txt
lsblk -J -b -O -l > lsblk.json
cat /sys/block/md1/md/degraded > degraded.txt
{python} -m mkrec --config mkrec.toml layout capture -o {out}/capture > capture.txt 2>&1
umount root; mdadm --stop /dev/md1
# The same array with its second disk gone: recorded degraded, one member
mdadm --assemble --run /dev/md1 ${{A}}p1
wipefs -a -q ${{B}}p1
udevadm trigger --action=change --subsystem-match=block && udevadm settle
mount /dev/md1 root
{python} -m mkrec --config mkrec.toml layout capture -o {out}/gone > gone.txt 2>&1
"""


@pytest.mark.vm
def test_a_degraded_raid1_is_captured_with_its_member_that_is_out(guest: Path) -> None:
    """Both disks are found from the mounted root alone, the member out of the array is recorded in
    it (the restore rebuilds md1 whole), and the administrator is told; with the second disk gone,
    md1 is recorded with one member of two."""
    tmp_path = guest / "degraded"
    a, b = (d.removeprefix("/dev/") for d in (tmp_path / "devices.txt").read_text().split())
    assert (tmp_path / "degraded.txt").read_text().strip() == "1"

    layout = read_layout(tmp_path / "capture" / "layout.toml")
    assert [d.name for d in layout.disks] == [a, b]
    (raid,) = layout.raids
    assert (raid.members, raid.raid_devices) == ((f"{a}p1", f"{b}p1"), 2)
    said = (tmp_path / "capture.txt").read_text()
    assert f"RAID md1 is degraded: {b}p1 is out of it" in said, said

    gone = read_layout(tmp_path / "gone" / "layout.toml")
    assert [d.name for d in gone.disks] == [a]
    (raid,) = gone.raids
    assert (raid.members, raid.raid_devices) == ((f"{a}p1",), 2)
    said = (tmp_path / "gone.txt").read_text()
    assert "RAID md1 is degraded: 1 of 2 members are missing" in said, said
