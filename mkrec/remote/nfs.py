"""A set on an NFS server (nfs://server[:port]/export/path[?vers=3]): mounted read-only with the
kernel's NFS client for as long as the command runs, then unmounted; the set is then read like any
local directory."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote

from mkrec.errors import CommandError, MkrecError
from mkrec.runner import run

MOUNT_BASE = Path("/run/mkrec")


def nfs_mount_argv(url: SplitResult, mountpoint: Path) -> list[str]:
    options = ["ro", "nolock"]  # nolock: a read-only reader needs no lock daemon (rpc.statd)
    if url.port:
        options.append(f"port={url.port}")
    # NFSv4 unless the URL says otherwise: mount.nfs would fall back to v3 through rpcbind, and a
    # server without it (or a wrong path) costs minutes of retries instead of one clear error
    options.append(f"vers={parse_qs(url.query).get('vers', ['4'])[0]}")
    export = unquote(url.path) or "/"
    return ["mount", "-t", "nfs", "-o", ",".join(options), f"{url.hostname}:{export}", str(mountpoint)]


@contextlib.contextmanager
def mounted_nfs(url: SplitResult) -> Iterator[Path]:
    MOUNT_BASE.mkdir(parents=True, exist_ok=True)
    mountpoint = Path(tempfile.mkdtemp(prefix="nfs-", dir=MOUNT_BASE))
    try:
        run(nfs_mount_argv(url, mountpoint), timeout=120)
    except CommandError as exc:
        mountpoint.rmdir()
        why = exc.message.split(": ", 1)[-1]
        raise MkrecError(
            f"{url.geturl()}: cannot mount ({why})",
            hint="check the server, the export path and that it exports to this machine; "
            "add ?vers=3 for an NFSv3-only server",
        ) from None
    try:
        yield mountpoint
    finally:
        run(["umount", mountpoint], check=False)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
