"""start-restore and clone-disk of MD RAID1 + LVM + LUKS2, inside a virtme-ng guest (the host kernel
has no md or device-mapper). The VG has two PVs, md0 and a partition of its own, and an LV on each.
One guest run builds the source on loop disks, captures it with `mkrec layout capture`, backs it up
with the real backup (mode path), detaches the source disks, restores onto two blank disks of the
same size with `mkrec restore start --yes --map ...`, then clones onto two disks 1.4 times as large
with `mkrec restore clone`, recording trees, UUIDs and sizes each time; the host compares them."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from support import run_in_guest

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"

TREE = r"""
import hashlib, json, os, stat, sys
top = sys.argv[1]
out = {}
for d, dirs, files in os.walk(top):
    for n in dirs + files:
        p = os.path.join(d, n)
        rel = os.path.relpath(p, top)
        if rel.startswith(("lost+found", "var/log/mkrec-restore")) or rel in ("var/log", "var"):
            continue
        st = os.lstat(p)
        body = None
        if stat.S_ISREG(st.st_mode):
            body = hashlib.sha256(open(p, "rb").read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(p)
        names = os.listxattr(p, follow_symlinks=False)
        xattrs = sorted((a, os.getxattr(p, a, follow_symlinks=False).hex()) for a in names)
        mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
        out[rel] = [st.st_mode, st.st_uid, st.st_gid, mtime, body, st.st_nlink, xattrs]
json.dump(out, open(sys.argv[2], "w"), sort_keys=True)
"""

BACKUP = r"""
import sys
from datetime import datetime
from pathlib import Path
from mkrec.backup import run_backup
from mkrec.config import load_config
from mkrec.context import Context
ctx = Context(load_config(Path(sys.argv[1])), hostname="stackhost", started=datetime(2026, 2, 3, 4, 5),
              staging=Path(sys.argv[2]))
print(run_backup(ctx, None))
"""

SCRIPT = r"""
set -e
cd {out}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin DM_DISABLE_UDEV=1
for m in loop raid1 dm_mod dm_crypt; do modprobe $m; done
# no background resync of the new mirrors (3 x 120 MiB through the shared folder under TCG):
# writes still go to both halves, which is all the test reads back
echo 1 > /proc/sys/dev/raid/speed_limit_min; echo 1 > /proc/sys/dev/raid/speed_limit_max
LVM='devices {{ use_devicesfile=0 }} activation {{ udev_sync=0 udev_rules=0 }}'
PY={python}
FSS="/dev/mapper/vg0-root /dev/mapper/vg0-home /dev/mapper/cryptdata"
truncate -s 240M a.img; truncate -s 240M c.img; truncate -s 336M e.img
truncate -s 200M b.img; truncate -s 200M d.img; truncate -s 280M f.img
A=$(losetup -f -P --show a.img); B=$(losetup -f -P --show b.img)
printf 'label: gpt\nsize=120MiB, name=raid\nsize=40MiB, name=secret\nname=pv\n' | sfdisk -q $A
printf 'label: gpt\nsize=120MiB, name=raid\n' | sfdisk -q $B
partx -a $A 2>/dev/null || true; partx -a $B 2>/dev/null || true
mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 --name=stacktest ${{A}}p1 ${{B}}p1
pvcreate -q --config "$LVM" /dev/md0 ${{A}}p3
vgcreate -q --config "$LVM" -s 4M vg0 /dev/md0 ${{A}}p3
lvcreate -q --config "$LVM" -y -Wn -Zn -L 48M -n root vg0 /dev/md0
lvcreate -q --config "$LVM" -y -Wn -Zn -L 32M -n home vg0 ${{A}}p3
mkfs.ext4 -q -L lvroot /dev/mapper/vg0-root
mkfs.ext4 -q -L lvhome /dev/mapper/vg0-home
head -c 32 /dev/urandom > oldkey
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --label secret \
  --key-file oldkey ${{A}}p2
cryptsetup open --key-file oldkey ${{A}}p2 cryptdata
mkfs.ext4 -q -L inside /dev/mapper/cryptdata
S={out}/src
mkdir -p $S && mount /dev/mapper/vg0-root $S
mkdir -p $S/home $S/secret $S/etc
mount /dev/mapper/vg0-home $S/home
mount /dev/mapper/cryptdata $S/secret
for d in $S $S/home $S/secret; do
  head -c 1500000 /dev/urandom > $d/random.bin
  echo hello > $d/text; ln $d/text $d/hardlink; ln -s text $d/symlink
  mkdir -p $d/sub/deeper; echo deep > $d/sub/deeper/f; chown 1234:5678 $d/sub/deeper/f
  chmod 0640 $d/sub/deeper/f; setfattr -n user.mkrec -v kept $d/text; touch -d 2001-02-03 $d/text
done
sync
$PY -c "$TREE" $S before.json
mdadm --detail --export /dev/md0 | grep MD_UUID= > ids-before.txt
pvs --config "$LVM" --noheadings -o pv_uuid /dev/md0 ${{A}}p3 | tr -d ' ' >> ids-before.txt
cryptsetup luksUUID ${{A}}p2 >> ids-before.txt
blkid -c /dev/null -o value -s UUID $FSS >> ids-before.txt
lvs --config "$LVM" --noheadings -o vg_uuid,lv_name,lv_uuid vg0 > lvm-ids-before.txt
pvs --config "$LVM" --noheadings --units b --nosuffix -o pv_name,pv_size > pvs-before.txt
printf '[build]\nmode = "path"\noutput = "{out}/output"\n' > cfg.toml
printf '[source]\nroot = "%s"\n[path]\ndir = "{out}/sets"\n' $S >> cfg.toml
$PY -m mkrec --config cfg.toml layout capture --disk $A --disk $B -o {out}/recovery
$PY -c "$BACKUP" cfg.toml {out}/staging > setdir.txt
echo "$(basename $A) $(basename $B)" > saved-disks.txt
# the machine is lost: nothing of the source stays
umount $S/secret $S/home $S
cryptsetup close cryptdata
vgchange -q --config "$LVM" -an vg0
mdadm --stop /dev/md0
losetup -d $A $B
C=$(losetup -f -P --show c.img); D=$(losetup -f -P --show d.img)
head -c 32 /dev/urandom > newkey
set +e
$PY -m mkrec --log {out}/restore.log restore start --source $(cat setdir.txt) --layout {out}/recovery \
  --map $(basename $A)=$C --map $(basename $B)=$D --target {out}/target --yes \
  --luks-key newkey --luks-pbkdf-iterations 1000 > restore.out 2>&1
echo $? > restore.rc
set -e
T={out}/check
mkdir -p $T && mount /dev/mapper/vg0-root $T
mount /dev/mapper/vg0-home $T/home && mount /dev/mapper/cryptdata $T/secret
$PY -c "$TREE" $T after.json
mdadm --detail --export /dev/md0 | grep MD_UUID= > ids-after.txt
pvs --config "$LVM" --noheadings -o pv_uuid /dev/md0 ${{C}}p3 | tr -d ' ' >> ids-after.txt
cryptsetup luksUUID ${{C}}p2 >> ids-after.txt
blkid -c /dev/null -o value -s UUID $FSS >> ids-after.txt
lvs --config "$LVM" --noheadings -o vg_uuid,lv_name,lv_uuid vg0 > lvm-ids-after.txt
lvs --config "$LVM" --noheadings --units b -o lv_name,lv_size vg0 > lvs-after.txt
cryptsetup open --test-passphrase --key-file newkey ${{C}}p2 && echo NEWKEY-OPENS > key-check.txt
mdadm --detail /dev/md0 | grep -E 'Raid Level|Active Devices' > md-after.txt
umount $T/secret $T/home $T
cryptsetup close cryptdata
vgchange -q --config "$LVM" -an vg0
mdadm --stop /dev/md0
losetup -d $C $D
# clone-disk onto disks 1.4 times as large: the PV partition grows, and the LVs with it
E=$(losetup -f -P --show e.img); F=$(losetup -f -P --show f.img)
set +e
$PY -m mkrec --log {out}/clone.log restore clone --source $(cat setdir.txt) --layout {out}/recovery \
  --map $(basename $A)=$E --map $(basename $B)=$F --target {out}/target2 --yes \
  --luks-key newkey --luks-pbkdf-iterations 1000 > clone.out 2>&1
echo $? > clone.rc
set -e
T={out}/check2
mkdir -p $T && mount /dev/mapper/vg0-root $T
mount /dev/mapper/vg0-home $T/home && mount /dev/mapper/cryptdata $T/secret
$PY -c "$TREE" $T after-clone.json
blkid -c /dev/null -o value -s UUID $FSS > ids-clone.txt
lvs --config "$LVM" --noheadings --units b -o lv_name,lv_size vg0 > lvs-clone.txt
blockdev --getsize64 ${{E}}p3 > pv-part-clone.txt
umount $T/secret $T/home $T
cryptsetup close cryptdata
vgchange -q --config "$LVM" -an vg0
mdadm --stop /dev/md0
losetup -d $E $F
echo GUEST-DONE
"""


@pytest.mark.vm
def test_raid_lvm_luks_restored_in_guest(tmp_path: Path) -> None:
    script = SCRIPT.format(out=tmp_path, python=shlex.quote(str(PYTHON)))
    (tmp_path / "run.sh").write_text(f"TREE={shlex.quote(TREE)}\nBACKUP={shlex.quote(BACKUP)}\n" + script)
    # two restores (start, then clone) in one boot: 4-6 min under TCG, more on a busy machine
    proc = run_in_guest(f"bash {tmp_path / 'run.sh'}", tmp_path, timeout=1200)
    restore_out, clone_out = (
        (tmp_path / name).read_text() if (tmp_path / name).exists() else ""
        for name in ("restore.out", "clone.out")
    )
    assert "GUEST-DONE" in proc.stdout, "\n".join(
        x[-3000:] for x in (proc.stdout, proc.stderr, restore_out, clone_out)
    )
    assert (tmp_path / "restore.rc").read_text().strip() == "0", restore_out[-3000:]
    # the plan said what it would create, each layer after what it sits on; then it was made so
    created = [line.split()[:3] for line in restore_out.splitlines() if line.strip().startswith("CREATE")]
    assert created.index(["CREATE", "RaidArray", "md0"]) < created.index(
        ["CREATE", "VolumeGroup", "vg0/home,"]
    )
    assert ["CREATE", "LuksContainer", "cryptdata"] in created
    assert "VolumeGroup vg0: done" in restore_out and "LuksContainer cryptdata: done" in restore_out
    before = json.loads((tmp_path / "before.json").read_text())
    after = json.loads((tmp_path / "after.json").read_text())
    assert {"random.bin", "home/random.bin", "secret/sub/deeper/f"} <= set(before)
    assert after == before
    # md UUID, both PV UUIDs, LUKS UUID and the three filesystem UUIDs are the saved ones
    ids_before = (tmp_path / "ids-before.txt").read_text().split()
    assert len(ids_before) == 7
    assert (tmp_path / "ids-after.txt").read_text().split() == ids_before
    # ... and so are the VG and LV UUIDs: the saved LVM metadata was restored (vgcfgrestore)
    assert (tmp_path / "recovery" / "vgcfg-vg0.txt").is_file()
    vg_line = next(line for line in restore_out.splitlines() if "CREATE VolumeGroup" in line)
    assert vg_line.endswith("p3, /dev/md0 (from vgcfg-vg0.txt: VG and LV UUIDs kept)"), vg_line
    lvm_ids = (tmp_path / "lvm-ids-before.txt").read_text().split()
    assert len(lvm_ids) == 6 and lvm_ids[0] == lvm_ids[3]
    assert (tmp_path / "lvm-ids-after.txt").read_text().split() == lvm_ids
    lvs = dict(line.split() for line in (tmp_path / "lvs-after.txt").read_text().splitlines())
    assert lvs == {"root": f"{48 * 1024**2}B", "home": f"{32 * 1024**2}B"}
    assert (tmp_path / "key-check.txt").read_text().strip() == "NEWKEY-OPENS", "the new key opens it"
    md = (tmp_path / "md-after.txt").read_text()
    assert "raid1" in md and "Active Devices : 2" in md
    check_clone(tmp_path, clone_out, before, ids_before[-3:])
    print(f"guest restore: {restore_out.count('step')} step lines", file=sys.stderr)


def check_clone(tmp_path: Path, clone_out: str, before: dict[str, object], fs_ids: list[str]) -> None:
    """clone-disk onto disks 1.4 times as large: disk a (240 MiB: raid 120, secret 40, PV 78) becomes
    336 MiB and each partition grows with it: the RAID member and the LUKS container are scaled with
    what they hold (168 and 56 MiB) and the PV partition fills the rest (110 MiB). The VG grows from
    192 MiB (md0 116 + PV 76) to 272 MiB (md0 164 + PV 108: each keeps its saved reserve). The LVs
    keep their share, in whole 4 MiB extents: 48 -> 68, 32 -> 44 MiB."""
    assert (tmp_path / "clone.rc").read_text().strip() == "0", clone_out[-3000:]
    assert "pv vg0" in clone_out and "VG and LV UUIDs kept" not in clone_out
    assert "raid md0          120.0 MiB  168.0 MiB" in clone_out
    assert "luks cryptdata     40.0 MiB   56.0 MiB" in clone_out
    assert (tmp_path / "pv-part-clone.txt").read_text().split() == [str(110 * 1024**2)]
    lvs = dict(line.split() for line in (tmp_path / "lvs-clone.txt").read_text().splitlines())
    assert lvs == {"root": f"{68 * 1024**2}B", "home": f"{44 * 1024**2}B"}, clone_out[-3000:]
    assert "vg0/root         /                  48.0 MiB   68.0 MiB  needs " in clone_out
    assert json.loads((tmp_path / "after-clone.json").read_text()) == before
    assert (tmp_path / "ids-clone.txt").read_text().split() == fs_ids
