"""Kernel modules for the initrd: names resolved with their dependencies from modules.dep, in an
order insmod can load them (every dependency before the module that needs it)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from mkrec.errors import MkrecError

log = logging.getLogger("mkrec.rescue")

# What reaches disks, CD-ROMs and USB sticks, the filesystems and block layers a restore meets.
# Names the kernel has built in (modules.builtin) or lacks are skipped.
DEFAULT_MODULES = (
    # buses and controllers
    "virtio_pci", "virtio_blk", "virtio_scsi", "ahci", "ata_piix", "ata_generic", "pata_acpi",
    "nvme", "mptspi", "mptsas", "megaraid_sas", "mpt3sas", "hpsa", "vmw_pvscsi", "hv_storvsc", "xen_blkfront",
    "sd_mod", "sr_mod", "cdrom", "sg",
    # USB sticks and keyboards
    "xhci_pci", "xhci_hcd", "ehci_pci", "ehci_hcd", "ohci_pci", "uhci_hcd", "usb_storage", "uas", "usbhid",
    "hid_generic",
    # Requested by name at run time, not through any dependency: LUKS2's aes-xts cipher (dm-crypt
    # asks for "xts(aes)") and the AF_ALG sockets cryptsetup uses. (Soft dependencies such as
    # ext4 -> crc32c come from modules.softdep in resolve().)
    "xts", "af_alg", "algif_skcipher", "algif_hash",
    # filesystems and the layers under them; nls_ascii is the FAT charset Debian's kernel defaults to
    # (without it an ESP does not mount: "IO charset ascii not found")
    "isofs", "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8", "ext4", "xfs", "btrfs", "loop",
    "dm_mod", "dm_crypt", "raid0", "raid1", "raid10", "raid456", "md_mod", "efivarfs",
    # a set directory shared with a virtual machine (mkrec drill of a mode path or tape set)
    "9p", "9pnet_virtio",
    # --source nfs://: the kernel's NFS client
    "nfs", "nfsv3", "nfsv4",
)  # fmt: skip
# The network (a netboot, a network source, a remote restic repository): raw sockets for udhcpc, the
# NICs virtual machines offer, then the common server and desktop chips (a restore may run on other
# hardware than the backup); the host's own NIC drivers come on top (host_nic_modules).
NET_MODULES = (
    "af_packet", "virtio_net", "e1000", "e1000e", "vmxnet3", "hv_netvsc", "xen_netfront",
    "igb", "igc", "ixgbe", "i40e", "r8169", "tg3", "bnx2", "bnxt_en",
)  # fmt: skip


def host_nic_modules(sys_class_net: Path = Path("/sys/class/net")) -> tuple[str, ...]:
    """The modules driving this machine's network interfaces, so the rescue system can reach the
    network on the same hardware (virtual interfaces have no device and bring none)."""
    links = sorted(sys_class_net.glob("*/device/driver/module"))
    return tuple(dict.fromkeys(link.resolve().name for link in links))


@dataclass(frozen=True)
class ModuleIndex:
    paths: dict[str, str]  # module name -> path relative to /lib/modules/<version>
    deps: dict[str, tuple[str, ...]]  # module name -> names it depends on
    builtin: frozenset[str]
    # module name -> modules to load before it (modules.softdep "pre:", aliases resolved): what the
    # kernel requests by alias at run time, e.g. ext4 -> crc32c for metadata checksums.
    softdeps: dict[str, tuple[str, ...]] = field(default_factory=dict)


def module_name(path: str) -> str:
    """kernel/drivers/ata/libata.ko(.xz) -> libata; dashes and underscores are the same to the kernel."""
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def parse_modules_dep(text: str, builtin_text: str = "") -> ModuleIndex:
    paths: dict[str, str] = {}
    deps: dict[str, tuple[str, ...]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        head, sep, tail = line.partition(":")
        if not sep:
            raise MkrecError(f"modules.dep line {lineno}: no ':' in {line!r}", hint="run depmod -a")
        name = module_name(head.strip())
        paths[name] = head.strip()
        deps[name] = tuple(module_name(d) for d in tail.split())
    builtin = frozenset(module_name(line.strip()) for line in builtin_text.splitlines() if line.strip())
    return ModuleIndex(paths, deps, builtin)


def parse_softdeps(softdep_text: str, alias_text: str, known: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """modules.softdep "pre:" entries, each alias (crypto-crc32c) resolved through modules.alias to
    the modules that provide it (crc32c_generic, crc32c_intel); names no module provides (built in,
    or absent from this kernel) are dropped."""
    known = set(known)
    providers: dict[str, set[str]] = {}
    for line in alias_text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias":
            providers.setdefault(parts[1], set()).add(parts[2].replace("-", "_"))
    softdeps: dict[str, tuple[str, ...]] = {}
    for line in softdep_text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0] != "softdep":
            continue
        pre = parts[3:] if parts[2] == "pre:" else []
        pre = pre[: pre.index("post:")] if "post:" in pre else pre
        found = [m for want in pre for m in sorted(providers.get(want, set()) | {want.replace("-", "_")})]
        name = parts[1].replace("-", "_")  # a module may have several softdep lines
        softdeps[name] = tuple(dict.fromkeys([*softdeps.get(name, ()), *(m for m in found if m in known)]))
    return softdeps


def load_index(moddir: Path) -> ModuleIndex:
    def text(name: str) -> str:
        path = moddir / name
        return path.read_text() if path.is_file() else ""

    index = parse_modules_dep(text("modules.dep"), text("modules.builtin"))
    return replace(
        index, softdeps=parse_softdeps(text("modules.softdep"), text("modules.alias"), index.paths)
    )


def resolve(index: ModuleIndex, wanted: Iterable[str], required: Iterable[str] = ()) -> list[str]:
    """Module paths for wanted + required, dependencies first, each once. A required name (the
    user's `[rescue] modules`) that is neither a module nor built in is an error; a wanted one
    is skipped (not every kernel has every driver)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name in chain:
            raise MkrecError(f"modules.dep: dependency loop {' -> '.join((*chain, name))}")
        for dep in (*index.softdeps.get(name, ()), *index.deps.get(name, ())):
            visit(dep, (*chain, name))
        seen.add(name)
        order.append(index.paths[name])

    required = [n.replace("-", "_") for n in required]
    for name in [n.replace("-", "_") for n in wanted] + required:
        if name in index.paths:
            visit(name, ())
        elif name in index.builtin:
            log.debug("module %s is built into the kernel", name)
        elif name in required:
            raise MkrecError(
                f"[rescue] modules: no kernel module {name!r} for this kernel",
                hint="check the name with 'modinfo NAME' or remove it",
            )
        else:
            log.debug("module %s: not in this kernel, skipped", name)
    return order
