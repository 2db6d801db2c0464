"""The real-system restore matrix: `make matrix [CELLS='pattern ...']`.

For every source system the selected cells need: install it (cached debootstrap root, disks made
as the installer makes them), boot it and let mkrec back it up from inside, then per target size
restore from the rescue disc onto blank disks and boot them alone; a cell passes when the
restored system prints the source's marker line (same host, token, file count and checksum).
Prints a table, writes JSON, exits 0 only when every selected cell passed."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: qemu, support

from realsys import install, rootfs, vm
from realsys.cells import Cell, System, select

WORKDIR = Path(os.environ.get("MKREC_MATRIX_DIR", "/var/tmp/mkrec-matrix"))
JOBS = len(os.sched_getaffinity(0))  # each guest has one vCPU: one TCG thread per core


@dataclass
class Result:
    cell: str
    status: str = "FAIL"  # PASS | FAIL
    install_s: float | None = None  # per source system, shared by its cells
    backup_s: float | None = None  # mkrec build inside the source system
    restore_s: float | None = None  # rescue disc boot + restore + power off
    boot_s: float | None = None  # restored disks: power on to marker
    step: str = ""  # first failing step
    line: str = ""  # its log line
    log: str = ""
    marker: str = ""


def restore_cell(cell: Cell, workdir: Path, backup: vm.Backup, result: Result) -> None:
    system = cell.system
    targets = vm.blank_targets(system, workdir, cell.target_bytes, cell.size)
    # Same size: the default boot entry restores unattended (LUKS: from the shell, since the new
    # passphrase is typed). Other sizes: clone-disk from the shell.
    unattended = cell.size == "same" and system.stack != "luks"
    restore = vm.run_restore if unattended else vm.run_clone
    result.restore_s = round(restore(system, workdir, backup, targets, cell.size))
    marker, seconds = vm.run_target_boot(system, workdir, targets, cell.size)
    result.boot_s = round(seconds)
    result.marker = marker
    if marker != backup.marker:
        raise vm.StepFailed("compare marker", f"restored: {marker!r}; source: {backup.marker!r}")
    for image in targets.images:
        image.unlink()


def save_backup(path: Path, backup: vm.Backup, install_s: float) -> None:
    data = asdict(backup) | {"volumes": [str(v) for v in backup.volumes], "install_s": install_s}
    path.write_text(json.dumps(data, indent=2) + "\n")


def load_backup(path: Path) -> tuple[vm.Backup, float]:
    data = json.loads(path.read_text())
    install_s = data.pop("install_s")
    backup = vm.Backup(**(data | {"volumes": [Path(v) for v in data["volumes"]]}))
    if not all(v.is_file() for v in backup.volumes):
        raise vm.StepFailed("reuse", f"{path}: a volume of the saved set is missing")
    return backup, install_s


def run_system(
    system: System, cells: list[Cell], root: Path, slots: threading.Semaphore, keep: bool, reuse: bool = False
) -> list[Result]:
    """Install and back up one source system once, then restore it to each of its cells' sizes,
    side by side. Every phase that runs a guest (or the host's share of the install) holds one
    of the slots: as many run at once as the host has cores."""
    workdir = root / system.name
    workdir.mkdir(parents=True, exist_ok=True)
    results = [Result(c.name) for c in cells]
    try:
        tarball = rootfs.root_tarball(system.boot_loader, workdir / "root.log")
    except RuntimeError as exc:
        for r in results:
            r.step, r.line, r.log = "debootstrap", str(exc).splitlines()[-1], str(workdir / "root.log")
        return results
    saved = workdir / "backup.json"
    try:
        if reuse and saved.is_file():  # the source system and its set from an earlier run
            backup, install_s = load_backup(saved)
        else:
            saved.unlink(missing_ok=True)
            with slots:
                install_s = round(vm.run_installer(system, workdir, tarball, install.new_token()))
            for r in results:
                r.install_s = install_s
            with slots:
                backup = vm.run_backup(system, workdir)
            save_backup(saved, backup, install_s)
    except vm.StepFailed as exc:
        for r in results:
            r.step, r.line, r.log = exc.step, exc.line, str(exc.log or "")
        return results
    except Exception as exc:  # a bug of the harness fails this system's cells only
        for r in results:
            r.step, r.line = "matrix harness", f"{type(exc).__name__}: {exc}"
        return results
    for r in results:
        r.install_s = install_s
    for r in results:
        r.backup_s = round(backup.build_seconds)
    print(f"{system.name}: installed in {install_s} s, source up in {backup.boot_seconds:.0f} s, "
          f"mkrec build {backup.build_seconds:.0f} s; {backup.marker}", flush=True)  # fmt: skip

    def restore(cell: Cell, result: Result) -> None:
        try:
            with slots:
                restore_cell(cell, workdir, backup, result)
            result.status = "PASS"
        except vm.StepFailed as exc:
            result.step, result.line, result.log = exc.step, exc.line, str(exc.log or "")
        except Exception as exc:  # a bug of the harness fails its cell, not the run
            result.step, result.line = "matrix harness", f"{type(exc).__name__}: {exc}"
        print(format_row(result), flush=True)

    with ThreadPoolExecutor(max_workers=len(cells)) as pool:
        list(pool.map(restore, cells, results))
    if not keep and all(r.status == "PASS" for r in results):
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


HEADER = (
    f"{'cell':<26} {'result':<6} {'install':>7} {'backup':>7} {'restore':>7} {'boot':>6}  first failing step"
)


def format_row(r: Result) -> str:
    failing = f"{r.step}: {r.line}" if r.status != "PASS" else ""
    return (
        f"{r.cell:<26} {r.status:<6} {fmt_s(r.install_s):>7} {fmt_s(r.backup_s):>7} "
        f"{fmt_s(r.restore_s):>7} {fmt_s(r.boot_s):>6}  {failing}"
    )


def run_matrix(cells: list[Cell], root: Path, jobs: int, keep: bool, reuse: bool = False) -> list[Result]:
    """jobs guests at a time; one source system more than that is under way, so that a slot
    freed by a system's last restore finds the next install ready to start (and the disks of
    only a few systems exist at once)."""
    systems: dict[System, list[Cell]] = {}
    for cell in cells:
        systems.setdefault(cell.system, []).append(cell)
    slots = threading.Semaphore(jobs)
    with ThreadPoolExecutor(max_workers=jobs + 1) as pool:
        done = pool.map(lambda item: run_system(item[0], item[1], root, slots, keep, reuse), systems.items())
        results = [r for rs in done for r in rs]
    order = [c.name for c in cells]
    return sorted(results, key=lambda r: order.index(r.cell))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("cells", nargs="*", help="shell patterns of cell names (default: all)")
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help=f"disks and logs (default {WORKDIR})")
    parser.add_argument("--json", type=Path, help="where the results go (default WORKDIR/matrix.json)")
    parser.add_argument(
        "--jobs", type=int, default=JOBS, help=f"guests run side by side (default {JOBS}: the host's cores)"
    )
    parser.add_argument("--keep", action="store_true", help="keep disks and logs of passing systems")
    parser.add_argument(
        "--reuse", action="store_true", help="restore the set a kept earlier run made (no install, no backup)"
    )
    args = parser.parse_args(argv)
    patterns = [p for arg in args.cells for p in arg.split()]
    try:
        cells = select(patterns)
    except ValueError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"matrix: {len(cells)} cells, work in {args.workdir}, cache {rootfs.CACHE}", flush=True)
    started = time.monotonic()
    results = run_matrix(cells, args.workdir, args.jobs, args.keep or args.reuse, args.reuse)
    print("\n" + HEADER)
    for r in results:
        print(format_row(r))
    passed = sum(r.status == "PASS" for r in results)
    print(f"\n{passed}/{len(results)} cells passed in {(time.monotonic() - started) / 60:.0f} min")
    out = args.json or args.workdir / "matrix.json"
    out.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    print(f"results: {out}")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
