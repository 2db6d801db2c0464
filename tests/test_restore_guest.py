"""start-restore of MD RAID1 + LVM (a VG with two LVs) + LUKS2, inside a virtme-ng guest (the host
kernel has no md or device-mapper). One guest run builds the source on loop disks, captures it with
`mkrec layout capture`, backs it up with the real backup (mode path), detaches the source disks,
restores onto two blank disks with `mkrec restore start --yes --map ...`, and records trees and
UUIDs before and after; the host compares them."""

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
LVM='devices {{ use_devicesfile=0 }} activation {{ udev_sync=0 udev_rules=0 }}'
PY={python}
FSS="/dev/mapper/vg0-root /dev/mapper/vg0-home /dev/mapper/cryptdata"
for n in a b c d; do truncate -s 200M $n.img; done
A=$(losetup -f -P --show a.img); B=$(losetup -f -P --show b.img)
printf 'label: gpt\nsize=120MiB, name=raid\nsize=40MiB, name=secret\n' | sfdisk -q $A
printf 'label: gpt\nsize=120MiB, name=raid\n' | sfdisk -q $B
partx -a $A 2>/dev/null || true; partx -a $B 2>/dev/null || true
mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 --name=stacktest ${{A}}p1 ${{B}}p1
pvcreate -q --config "$LVM" /dev/md0
vgcreate -q --config "$LVM" -s 4M vg0 /dev/md0
lvcreate -q --config "$LVM" -y -Wn -Zn -L 48M -n root vg0
lvcreate -q --config "$LVM" -y -Wn -Zn -L 32M -n home vg0
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
pvs --config "$LVM" --noheadings -o pv_uuid /dev/md0 | tr -d ' ' >> ids-before.txt
cryptsetup luksUUID ${{A}}p2 >> ids-before.txt
blkid -c /dev/null -o value -s UUID $FSS >> ids-before.txt
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
pvs --config "$LVM" --noheadings -o pv_uuid /dev/md0 | tr -d ' ' >> ids-after.txt
cryptsetup luksUUID ${{C}}p2 >> ids-after.txt
blkid -c /dev/null -o value -s UUID $FSS >> ids-after.txt
lvs --config "$LVM" --noheadings --units b -o lv_name,lv_size vg0 > lvs-after.txt
cryptsetup close cryptdata 2>/dev/null || true
cryptsetup open --test-passphrase --key-file newkey ${{C}}p2 && echo NEWKEY-OPENS > key-check.txt
mdadm --detail /dev/md0 | grep -E 'Raid Level|Active Devices' > md-after.txt
echo GUEST-DONE
"""


@pytest.mark.vm
def test_raid_lvm_luks_restored_in_guest(tmp_path: Path) -> None:
    script = SCRIPT.format(out=tmp_path, python=shlex.quote(str(PYTHON)))
    (tmp_path / "run.sh").write_text(f"TREE={shlex.quote(TREE)}\nBACKUP={shlex.quote(BACKUP)}\n" + script)
    proc = run_in_guest(f"bash {tmp_path / 'run.sh'}", tmp_path)
    restore_out = (tmp_path / "restore.out").read_text() if (tmp_path / "restore.out").exists() else ""
    assert "GUEST-DONE" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:] + restore_out[-3000:]
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
    # md UUID, PV UUID, LUKS UUID and the three filesystem UUIDs are the saved ones
    ids_before = (tmp_path / "ids-before.txt").read_text().split()
    assert len(ids_before) == 6
    assert (tmp_path / "ids-after.txt").read_text().split() == ids_before
    lvs = dict(line.split() for line in (tmp_path / "lvs-after.txt").read_text().splitlines())
    assert lvs == {"root": f"{48 * 1024**2}B", "home": f"{32 * 1024**2}B"}
    assert (tmp_path / "key-check.txt").read_text().strip() == "NEWKEY-OPENS", "the new key opens it"
    md = (tmp_path / "md-after.txt").read_text()
    assert "raid1" in md and "Active Devices : 2" in md
    print(f"guest restore: {restore_out.count('step')} step lines", file=sys.stderr)
