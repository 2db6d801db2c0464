"""Writing partition tables and waiting for the kernel's partition nodes (no udev is assumed:
partx tells the kernel, devtmpfs makes the nodes)."""

from __future__ import annotations

import time
from pathlib import Path

from mkrec.errors import MkrecError
from mkrec.restore.apply.argv import sfdisk_argv
from mkrec.restore.decide.sfdisk import Table, parse_dump, partition_node, render_script, same_table
from mkrec.runner import run


def read_table(device: str) -> Table | None:
    """The table on a device now; None when it has none."""
    proc = run(["sfdisk", "--dump", device], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    try:
        return parse_dump(proc.stdout, device)
    except MkrecError:
        return None


def write_table(device: str, table: Table, script: str | None = None) -> None:
    """Write the table (or a script a person edited) and make its partition nodes appear."""
    run(sfdisk_argv(device), input=script if script is not None else render_script(table, device))
    refresh(device, [p.number for p in table.partitions])
    written = read_table(device)
    if script is None and (written is None or not same_table(written, table)):
        raise MkrecError(f"{device}: the partition table read back differs from the saved one")


def refresh(device: str, numbers: list[int], timeout: float = 10.0) -> None:
    run(["partx", "-u", device], check=False)
    run(["partx", "-a", device], check=False)
    deadline = time.monotonic() + timeout
    missing = [partition_node(device, n) for n in numbers]
    while missing and time.monotonic() < deadline:
        missing = [m for m in missing if not Path(m).exists()]
        if missing:
            time.sleep(0.1)
    if missing:
        raise MkrecError(
            f"{device}: the kernel did not create {', '.join(missing)}",
            hint=f"run 'partx -a {device}' and check dmesg",
        )


def wipe_signatures(node: str) -> None:
    run(["wipefs", "-a", "-q", node], check=False)
