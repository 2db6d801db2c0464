"""Install a source system the way Debian's installer lays it out: partition (GPT or MBR, a BIOS
boot partition or an ESP), build the stack (plain ext4 + swap; /boot + LVM; RAID1 over two disks;
/boot + LUKS2 holding LVM), unpack the cached root, write fstab/crypttab/mdadm.conf and the
resume device, then update-initramfs, grub-install and update-grub in a chroot. It all runs in
a virtme-ng guest (Debian's kernel, the host's userland): the host kernel has no dm, md or vfat.

The installed system has a serial console (GRUB and kernel on ttyS0,115200, root logged in on
it), mkrec copied to /opt/mkrec with /usr/local/sbin/mkrec, /etc/mkrec/Config.toml for a
mode-cd build into /var/lib/mkrec (a 9p share at test time), a /srv/data tree, and a unit
printing MARKER with host, token and the tree's count and checksum once multi-user is reached."""

from __future__ import annotations

import os
import random
import secrets
import shlex
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from realsys.cells import SOURCE_DISK, System

MARKER = "MKREC-REALSYS-UP"
PASSPHRASE = "mkrec matrix passphrase"  # LUKS: typed on the serial console at boot
REPO = Path(__file__).resolve().parents[2]
ROOT_MOUNT = "/tmp/realsys-root"  # in the guest (its own tmpfs)

GPT = {
    "bios": "21686148-6449-6E6F-744E-656564454649",
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
    "lvm": "E6D6D379-F507-44C2-A23C-238F2A3DF928",
    "raid": "A19D880F-05FC-4D3B-A006-743F0F84911E",
}
MBR = {"esp": "ef", "linux": "83", "swap": "82", "lvm": "8e", "raid": "fd"}

CONFIG_TOML = """\
# mkrec on a matrix test system: the set goes to /var/lib/mkrec (a 9p share from the test host).
[build]
mode = "cd"
output = "/var/lib/mkrec"
[media]
size = "dvd"
[rescue]
console = "ttyS0,115200"
autorun = "start-restore"
timeout = 5
[restore]
after = "poweroff"
"""

MARKER_SCRIPT = f"""#!/bin/sh
# Prints who this system is and what its data tree holds, on the serial console.
cd /srv/data || exit 1
files=$(find . -type f | wc -l)
sum=$( (find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum;
        find . -type l -printf '%p -> %l\\n' | LC_ALL=C sort) | sha256sum | cut -c1-16)
echo "{MARKER} host=$(hostname) token=$(cat /etc/mkrec-test/token) files=$files sum=$sum" >/dev/ttyS0
"""

MARKER_UNIT = """[Unit]
Description=mkrec matrix marker on the serial console
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/mkrec-marker

[Install]
WantedBy=multi-user.target
"""

AUTOLOGIN = """[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
"""

GRUB_DEFAULTS = """GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
"""

MKREC_WRAPPER = """#!/bin/sh
# mkrec from its checkout in /opt/mkrec/src, its Python dependencies in /opt/mkrec/site.
PYTHONPATH=/opt/mkrec/src:/opt/mkrec/site exec python3 -m mkrec "$@"
"""


@dataclass(frozen=True)
class Part:
    role: str  # bios | esp | root | swap | boot | lvm | raid | luks
    mib: int | None  # None: the rest of the disk
    kind: str  # key of GPT / MBR
    bootable: bool = False


def partitions(system: System) -> list[Part]:
    """Each disk's partitions, in order (both RAID disks get the same)."""
    gpt = system.label == "gpt"
    first: list[Part] = []
    if system.uefi:
        first = [Part("esp", 256, "esp")]
    elif gpt:
        first = [Part("bios", 1, "bios")]
    used = sum(p.mib or 0 for p in first)
    boot_flag = not gpt and not system.uefi
    if system.stack == "plain":
        return [*first, Part("root", 2800 - used, "linux", boot_flag), Part("swap", None, "swap")]
    if system.stack == "raid1":
        return [*first, Part("raid", None, "raid", boot_flag)]
    rest = "lvm" if system.stack == "lvm" else "luks"
    return [
        *first,
        Part("boot", 512, "linux", boot_flag),
        Part(rest, None, "lvm" if rest == "lvm" else "linux"),
    ]


def sfdisk_script(system: System) -> str:
    gpt = system.label == "gpt"
    lines = ["label: gpt" if gpt else "label: dos"]
    for p in partitions(system):
        fields = [f"size={p.mib}MiB"] if p.mib else []
        fields.append(f"type={(GPT if gpt else MBR)[p.kind]}")
        if p.bootable:
            fields.append("bootable")
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def vg_name(system: System) -> str:
    return f"{system.hostname}-vg"  # as Debian's installer names it


def make_data_tree(dest: Path, seed: str) -> None:
    """A few MB of varied files: text, random bytes, empty, nested, a symlink, a hard link, a
    sparse file."""
    rng = random.Random(seed)
    words = ["restore", "disk", "volume", "boot", "marker", "data", "tree", "layout", "grub", "initramfs"]
    for i in range(240):
        d = dest / f"d{i % 12:02d}" / f"s{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        if i % 3 == 0:
            text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 4000)))
            (d / f"text{i}.txt").write_text(text + "\n")
        else:
            (d / f"bin{i}.dat").write_bytes(rng.randbytes(rng.randint(0, 40000)))
    (dest / "empty").write_bytes(b"")
    (dest / "link-to-d00").symlink_to("d00")
    os.link(dest / "d00" / "s0" / "text0.txt", dest / "hardlink.txt")
    with open(dest / "sparse.img", "wb") as f:
        f.seek(3 * 1024**2)
        f.write(b"end of a sparse file\n")


def copy_checkout(dest: Path) -> None:
    """This checkout's files (tracked and untracked, not ignored): what an admin's clone holds."""
    names = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in names:
        if not raw:
            continue
        src = REPO / raw.decode()
        if not src.is_file():
            continue  # deleted in the work tree
        target = dest / raw.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


@dataclass(frozen=True)
class Ids:
    """The identities the installer gives the stack, chosen up front so fstab, crypttab,
    mdadm.conf and the initramfs can be written on the host before the devices exist."""

    root: str
    boot: str
    swap: str
    esp: str  # FAT volume id, 8 hex digits
    luks: str
    md: str  # mdadm's form: 4 x 8 hex digits

    @staticmethod
    def new() -> Ids:
        u = lambda: str(uuid.uuid4())  # noqa: E731
        md = uuid.uuid4().hex
        return Ids(
            u(), u(), u(), secrets.token_hex(4).upper(), u(), ":".join(md[i : i + 8] for i in (0, 8, 16, 24))
        )

    @property
    def esp_uuid(self) -> str:
        return f"{self.esp[:4]}-{self.esp[4:]}"


def devices(system: System) -> dict[str, str]:
    """Role -> device node in the guest ($D0/$D1: the source disks, /dev/vda and /dev/vdb)."""
    num = {p.role: i for i, p in enumerate(partitions(system), start=1)}
    part = lambda role, disk=0: f"${{D{disk}}}{num[role]}"  # noqa: E731
    out = {}
    if system.uefi:
        out["esp"] = part("esp")
    if system.stack == "plain":
        out |= {"root": part("root"), "swap": part("swap")}
    elif system.stack == "raid1":
        out |= {"root": "/dev/md0", "raid0": part("raid", 0), "raid1": part("raid", 1)}
    else:
        mapper = vg_name(system).replace("-", "--")
        out |= {
            "boot": part("boot"),
            "root": f"/dev/mapper/{mapper}-root",
            "swap": f"/dev/mapper/{mapper}-swap_1",
        }
        out["pv"] = part("lvm") if system.stack == "lvm" else f"/dev/mapper/{CRYPT_NAME}"
        if system.stack == "luks":
            out["luks"] = part("luks")
    return out


CRYPT_NAME = "vda3_crypt"  # the installer names it after the partition as the installed system sees it


def write_system(system: System, tree: Path, ids: Ids, token: str, workdir: Path) -> None:
    """Everything the installer writes into the root, and what makes it a test system."""
    dev = devices(system)
    lvm = system.stack in ("lvm", "luks")
    fstab = [
        f"UUID={ids.root} / ext4 errors=remount-ro 0 1"
        if not lvm
        else f"{dev['root']} / ext4 errors=remount-ro 0 1"
    ]
    if "boot" in dev:
        fstab.append(f"UUID={ids.boot} /boot ext4 defaults 0 2")
    if system.uefi:
        fstab.append(f"UUID={ids.esp_uuid} /boot/efi vfat umask=0077 0 1")
        (tree / "boot" / "efi").mkdir(exist_ok=True)
    if "swap" in dev:
        swap = dev["swap"] if lvm else f"UUID={ids.swap}"
        fstab.append(f"{swap} none swap sw 0 0")
        (tree / "etc/initramfs-tools/conf.d/resume").write_text(f"RESUME={swap}\n")
    (tree / "etc/fstab").write_text("\n".join(fstab) + "\n")
    if system.stack == "luks":
        # "initramfs": the hook cannot see the device from the host's chroot, so it is named.
        (tree / "etc/crypttab").write_text(f"{CRYPT_NAME} UUID={ids.luks} none luks,discard,initramfs\n")
    if system.stack == "raid1":
        with open(tree / "etc/mdadm/mdadm.conf", "a") as f:
            f.write(f"ARRAY /dev/md/0 metadata=1.2 UUID={ids.md} name={system.hostname}:0\n")
    (tree / "etc/hostname").write_text(system.hostname + "\n")
    (tree / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {system.hostname}\n")
    files = {
        "etc/mkrec-test/token": (token + "\n", 0o644),
        "etc/default/grub": (GRUB_DEFAULTS, 0o644),
        "usr/local/sbin/mkrec-marker": (MARKER_SCRIPT, 0o755),
        "etc/systemd/system/mkrec-marker.service": (MARKER_UNIT, 0o644),
        "etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf": (AUTOLOGIN, 0o644),
        "usr/local/sbin/mkrec": (MKREC_WRAPPER, 0o755),
        "etc/mkrec/Config.toml": (CONFIG_TOML, 0o644),
    }
    for rel, (text, mode) in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "mkrec-marker.service").symlink_to("/etc/systemd/system/mkrec-marker.service")
    (tree / "var/lib/mkrec").mkdir(parents=True, exist_ok=True)
    make_data_tree(tree / "srv/data", system.hostname)
    copy_checkout(tree / "opt/mkrec/src")


def update_initramfs(tree: Path, log: Path) -> None:
    """In a chroot on the host: the initramfs-tools hooks read fstab, crypttab, mdadm.conf and
    resume from the files, and MODULES=most does not depend on the hardware."""
    mounts = []
    try:
        for what, opts in (
            ("proc", ["-t", "proc", "proc"]),
            ("sys", ["-t", "sysfs", "sys"]),
            ("dev", ["--bind", "/dev"]),
        ):
            subprocess.run(["mount", *opts, str(tree / what)], check=True)
            mounts.append(tree / what)
        with open(log, "a") as out:
            proc = subprocess.run(
                ["chroot", str(tree), "update-initramfs", "-u", "-k", "all"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
            )  # fmt: skip
        if proc.returncode:
            raise RuntimeError(f"update-initramfs failed ({proc.returncode}), see {log}")
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", str(m)])


def make_fs_image(tree: Path, image: Path, fs_uuid: str, label: str = "") -> None:
    """An ext4 image holding tree, a quarter larger than its content: the guest copies it onto
    the device and grows it to fill it (mkfs + unpack, without unpacking under TCG)."""
    used = int(
        subprocess.run(["du", "-sxm", str(tree)], capture_output=True, text=True, check=True).stdout.split()[
            0
        ]
    )
    size = max(64, used * 5 // 4 + 64)
    image.unlink(missing_ok=True)
    argv = ["mkfs.ext4", "-q", "-F", "-U", fs_uuid, "-d", str(tree)]
    subprocess.run(
        [*argv, *(["-L", label] if label else []), str(image), f"{size}M"], check=True, capture_output=True
    )


def prepare(system: System, workdir: Path, tarball: Path, token: str, ids: Ids) -> None:
    """Host side: the root tree with every file written, its initramfs, and its file system
    image(s); blank source disks."""
    log = workdir / "install.log"
    log.write_text("")
    tree = workdir / "tree"
    subprocess.run(["rm", "-rf", str(tree), str(workdir / "boot-tree")], check=True)
    tree.mkdir()
    subprocess.run(
        [
            "tar", "--zstd", "-xpf", str(tarball), "--numeric-owner", "--xattrs", "--xattrs-include=*",
            "--acls", "-C", str(tree),
        ],
        check=True,
    )  # fmt: skip
    write_system(system, tree, ids, token, workdir)
    update_initramfs(tree, log)
    if "boot" in devices(system):
        boot = workdir / "boot-tree"
        (tree / "boot").rename(boot)
        (tree / "boot").mkdir()
        make_fs_image(boot, workdir / "boot.img", ids.boot)
    make_fs_image(tree, workdir / "root.img", ids.root)
    subprocess.run(["rm", "-rf", str(tree), str(workdir / "boot-tree")], check=True)
    for i in range(system.disks):
        disk = workdir / f"src-{i}.img"
        disk.unlink(missing_ok=True)
        with open(disk, "wb") as f:
            f.truncate(SOURCE_DISK)


def guest_script(system: System, workdir: Path, ids: Ids) -> str:
    """Guest side, one bash script: partition, build the stack, copy the images in and grow
    them, then grub-install and update-grub in a chroot of the mounted system."""
    q = shlex.quote
    dev = devices(system)
    vg = vg_name(system)
    lines = [
        "set -euxo pipefail",
        "export DM_DISABLE_UDEV=1  # no udev in the guest: device-mapper makes its nodes itself",
        "modprobe -a virtio_blk dm_mod dm_crypt md_mod raid1 vfat nls_cp437 nls_ascii || true",
        f"M={ROOT_MOUNT}",
        "mkdir -p /dev/disk/by-uuid $M",
    ]
    # The disks in run_installer's order, each checked by its size before anything is written.
    images = {}
    for i, (name, size) in enumerate(guest_disks(system, workdir)):
        node = images[name] = f"/dev/vd{chr(ord('a') + i)}"
        size_is = f"test $(blockdev --getsize64 {node}) = {size}"
        lines.append(f"{size_is} || {{ echo 'REALSYS: {node} is not {name}'; exit 1; }}")
    for i in range(system.disks):
        lines += [
            f"D{i}={images[f'src-{i}.img']}",
            f"sfdisk --quiet --wipe always $D{i} <<'EOF'\n{sfdisk_script(system)}EOF",
            f"partx -u $D{i} || true; partx -a $D{i} || true",
        ]
    if system.stack == "raid1":
        lines.append(
            "mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 --assume-clean"
            f" --homehost={system.hostname} --name=0 --uuid={ids.md} {dev['raid0']} {dev['raid1']}"
        )
    if system.stack == "luks":
        pw = q(PASSPHRASE)
        lines += [
            f"printf %s {pw} | cryptsetup luksFormat --batch-mode --type luks2 --uuid {ids.luks}"
            f" --pbkdf argon2id --pbkdf-memory 131072 --iter-time 1000 --key-file=- {dev['luks']}",
            f"printf %s {pw} | cryptsetup open --key-file=- {dev['luks']} {CRYPT_NAME}",
        ]
    if "pv" in dev:
        lines += [
            f"lvm pvcreate -ff -y {dev['pv']}",
            f"lvm vgcreate {vg} {dev['pv']}",
            f"lvm lvcreate -y -W y -n root -l 85%VG {vg}",
            f"lvm lvcreate -y -W y -n swap_1 -l 100%FREE {vg}",
            "lvm vgmknodes",
        ]
    # The images: copied in, checked, grown to fill the device.
    copies = [("root.img", dev["root"])] + ([("boot.img", dev["boot"])] if "boot" in dev else [])
    for image, node in copies:
        lines += [
            f"dd if={images[image]} of={node} bs=4M status=none",
            f"e2fsck -fy {node}",
            f"resize2fs {node}",
        ]
    if "swap" in dev:
        lines.append(f"mkswap -U {ids.swap} {dev['swap']}")
    if "esp" in dev:
        lines.append(f"mkfs.vfat -F 32 -i {ids.esp} {dev['esp']}")
        if system.stack == "raid1":
            lines.append(f"mkfs.vfat -F 32 {dev['esp'].replace('D0', 'D1')}")
    lines += [
        f"mount {dev['root']} $M",
        *([f"mount {dev['boot']} $M/boot"] if "boot" in dev else []),
        *([f"mount {dev['esp']} $M/boot/efi"] if "esp" in dev else []),
        # grub-mkconfig writes root=UUID= only when /dev/disk/by-uuid has it; no udev here to make it.
        "for d in /dev/vd?* /dev/md* /dev/mapper/*; do [ -b $d ] || continue;"
        ' u=$(blkid -c /dev/null -s UUID -o value $d) || continue; [ -n "$u" ] &&'
        " ln -sf $d /dev/disk/by-uuid/$u; done",
        "mount --rbind /dev $M/dev && mount -t proc proc $M/proc && mount -t sysfs sys $M/sys",
        "mount -t tmpfs tmpfs $M/run && mkdir -p $M/run/lock",
    ]
    if system.uefi:
        lines.append(
            "chroot $M grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian"
            " --uefi-secure-boot --force-extra-removable --no-nvram"
        )
    else:
        lines += [f"chroot $M grub-install --target=i386-pc $D{i}" for i in range(system.disks)]
    lines += [
        "chroot $M update-grub",
        "grep -m4 -E 'linux\\s|search' $M/boot/grub/grub.cfg || true",
        "sync",
        "umount -R -l $M/dev; umount $M/run $M/proc $M/sys",
        *(["umount $M/boot/efi"] if "esp" in dev else []),
        *(["umount $M/boot"] if "boot" in dev else []),
        "umount $M",
    ]
    if "pv" in dev:
        lines.append(f"lvm vgchange -an {vg}")
    if system.stack == "luks":
        lines.append(f"cryptsetup close {CRYPT_NAME}")
    if system.stack == "raid1":
        lines.append("mdadm --stop /dev/md0")
    lines.append("echo REALSYS-INSTALL-DONE")
    return "\n".join(lines) + "\n"


def guest_disks(system: System, workdir: Path) -> list[tuple[str, int]]:
    """The files the installer guest gets as virtio disks, in order, with their sizes: the source
    disks (/dev/vda, /dev/vdb), then the file system images to copy onto the stack. Whole disks,
    not files on the 9p share: the copy reads and writes at disk speed, not 9p's."""
    names = [f"src-{i}.img" for i in range(system.disks)] + ["root.img"]
    if "boot" in devices(system):
        names.append("boot.img")
    return [(name, (workdir / name).stat().st_size) for name in names]


def new_token() -> str:
    return secrets.token_hex(8)
