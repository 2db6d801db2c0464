"""fstab and crypttab after a restore: device names that may not exist any more become UUID=, UUIDs
that changed are replaced, a filesystem restored as another type gets its new type and only the
mount options that type understands. Pure text transforms; lines not touched stay byte-identical."""

from __future__ import annotations

from collections.abc import Mapping

# Options every filesystem accepts (VFS and mount(8) options); fs-specific ones are dropped when the
# type changes (errors=remount-ro would stop an xfs root from mounting).
GENERIC_OPTIONS = frozenset(
    {
        "defaults", "rw", "ro", "auto", "noauto", "user", "nouser", "users", "owner", "group",
        "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync", "async", "dirsync",
        "atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime",
        "lazytime", "nofail", "_netdev", "discard", "nodiscard", "iversion", "noiversion",
    }
)  # fmt: skip


def options_for_new_type(options: str) -> str:
    kept = [
        o
        for o in options.split(",")
        if o.split("=", 1)[0] in GENERIC_OPTIONS or o.startswith(("x-", "comment="))
    ]
    return ",".join(kept) or "defaults"


def fix_fstab(
    text: str, specs: Mapping[str, str], new_types: Mapping[str, str] | None = None
) -> tuple[str, list[str]]:
    """specs: old first field -> new one ("/dev/sda3" -> "UUID=..."); new_types: mount point -> type.
    Returns the new text and a line per change, for the log."""
    new_types = new_types or {}
    out: list[str] = []
    changes: list[str] = []
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#"):
            out.append(line)
            continue
        spec, file, vfstype = fields[0], fields[1], fields[2]
        new = list(fields)
        if spec in specs:
            new[0] = specs[spec]
        if file in new_types and new_types[file] != vfstype:
            new[2] = new_types[file]
            if len(new) > 3:
                new[3] = options_for_new_type(new[3])
        if new == fields:
            out.append(line)
            continue
        ending = "\n" if line.endswith("\n") else ""
        out.append("\t".join(new) + ending)
        changes.append(f"{' '.join(fields)}  ->  {' '.join(new)}")
    return "".join(out), changes


def fix_crypttab(text: str, specs: Mapping[str, str]) -> tuple[str, list[str]]:
    """crypttab: name, device, key file, options; only the device field can need a change."""
    out: list[str] = []
    changes: list[str] = []
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith("#") or fields[1] not in specs:
            out.append(line)
            continue
        new = [fields[0], specs[fields[1]], *fields[2:]]
        out.append("\t".join(new) + ("\n" if line.endswith("\n") else ""))
        changes.append(f"{' '.join(fields)}  ->  {' '.join(new)}")
    return "".join(out), changes
