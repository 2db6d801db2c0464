"""Mode restic on real loop devices with real restic (Debian's 0.14): the source system of the
restore tests backed up into a local, an SFTP (sshd on loopback) and a REST (rclone serve restic on
loopback) repository, restored with start-restore onto a blank disk and compared file by file with
its UUIDs and boot loader; a second backup after 1% of the files changed adds little; the ways it
fails (wrong password, unreachable or uninitialised repository, a file system's snapshot missing)
are one line each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from resticrepos import REPOS, ServedRepo, free_port, local_repo
from sourcesys import SourceSystem, build_source_system
from support import LoopDisks, sh
from test_restore_disks import _corpus, check_same_system, one_partition_disk, real_backup, tree

from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.layout.capture import capture
from mkrec.layout.model import Layout
from mkrec.restic.backup import backup_to_restic
from mkrec.restic.repo import readiness

pytestmark = pytest.mark.root
FIRST = datetime(2026, 1, 2, 3, 4)
MANY = 600  # small files on /data: 1% of them change between two backups


@dataclass(frozen=True)
class System:
    src: SourceSystem
    work: Path
    layout: Layout
    recovery: Path


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    work = tmp_path_factory.mktemp("restic-src")
    disks = LoopDisks(work)
    try:
        src = build_source_system(disks, work, "gpt", "restic-marker")
        _corpus(src.root)
        many = src.root / "data" / "many"
        many.mkdir()
        for i in range(MANY):
            (many / f"f{i:04d}").write_bytes(os.urandom(16 * 1024))
        sh("sync")
        recovery = work / "isofs" / "etc" / "recovery"
        layout = capture([src.disk], recovery, src.root, "srchost", FIRST)
        yield System(src, work, layout, recovery)
    finally:
        disks.cleanup()


def restic_table(repo: ServedRepo, **extra: object) -> dict[str, object]:
    return {
        "repository": repo.location,
        "password_file": str(repo.password_file),
        "options": repo.options,
        **extra,
    }


def backup(system: System, repo: ServedRepo, started: datetime = FIRST, **extra: object) -> float:
    """`mkrec build`'s backup stage in mode restic; returns the seconds it took."""
    data = {
        "build": {"mode": "restic", "output": str(system.work / "out")},
        "source": {"root": str(system.src.root)},
        "restic": restic_table(repo, **extra),
    }
    ctx = Context(config_from_dict(data), hostname="srchost", started=started, staging=system.work / "isofs")
    t0 = time.monotonic()
    backup_to_restic(ctx, system.layout)
    return time.monotonic() - t0


def config_file(repo: ServedRepo, where: Path) -> Path:
    """The [restic] options (sftp: how to reach the test's sshd) for the restore's command line."""
    path = where / "restore.toml"
    path.write_text(f"[restic]\noptions = {json.dumps(repo.options)}\n")
    return path


def mkrec(*args: str | Path, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    conf = ["--config", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "mkrec", *conf, "--log", "/dev/null", *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def start_restore(
    system: System, source: str, target: str, root: Path, *extra: str | Path, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    disk = Path(system.src.disk).name
    return mkrec(
        "restore",
        "start",
        "--source",
        source,
        "--map",
        f"{disk}={target}",
        "--target",
        root,
        "--yes",
        *extra,
        config=config,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The failure as the user sees it: exit 1, one error line (and its hint), no traceback."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mkrec: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def untouched(disk: str) -> bool:
    with open(disk, "rb") as fh:
        return fh.read(1 << 20) == bytes(1 << 20)


# ---- the tests ----


@pytest.mark.parametrize("kind", ["local", "sftp", "rest"])
def test_backup_and_start_restore_give_the_same_system(
    system: System, kind: str, loop_disks: LoopDisks, tmp_path: Path
) -> None:
    with REPOS[kind](tmp_path) as repo:
        repo.restic("init")
        seconds = backup(system, repo)
        snapshots = json.loads(repo.restic("snapshots", "--json").stdout)
        tagged = sorted(t for s in snapshots for t in s["tags"] if t.startswith("mkrec-fs="))
        kinds = sorted(t.rsplit(".", 2)[-2:] for t in tagged)
        assert kinds == [["ext4", "tar"], ["ext4", "tar"], ["vfat", "img"]], tagged
        assert {s["hostname"] for s in snapshots} == {"srchost"}
        assert sum("mkrec-recovery" in s["tags"] for s in snapshots) == 1
        conf = config_file(repo, tmp_path)
        sets = mkrec(
            "sets", f"restic:{repo.location}", "--restic-password-file", repo.password_file, config=conf
        )
        assert sets.returncode == 0, sets.stderr
        assert "CDrec-20260102-0304" in sets.stdout and "3 file system(s)  complete" in sets.stdout
        target = loop_disks.create("256M")
        t0 = time.monotonic()
        proc = start_restore(
            system,
            f"restic:{repo.location}",
            target,
            tmp_path / "target",
            "--restic-password-file",
            repo.password_file,
            config=conf,
        )
        restore_s = time.monotonic() - t0
        assert proc.returncode == 0, proc.stdout + proc.stderr
        print(
            f"restic {kind}: backup {seconds:.1f} s, start-restore {restore_s:.1f} s, "
            f"repository {repo.size()} bytes"
        )
    loop_disks.rescan(target)
    check_same_system(system.src, target, loop_disks, tmp_path / "check", same_table=True)


def change_one_percent(system: System) -> int:
    """New content for 1% of the system's files (every 100th in a sorted walk; not the boot loader's,
    which a restore reinstalls); the bytes changed."""
    files = sorted(
        p
        for p in system.src.root.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and "lost+found" not in p.parts
        and "boot" not in p.parts
        and p.stat().st_nlink == 1
    )
    chosen = files[::100]
    changed = 0
    for path in chosen:
        size = path.stat().st_size
        path.write_bytes(os.urandom(size))
        changed += size
    sh("sync")
    print(f"changed {len(chosen)} of {len(files)} files, {changed} bytes")
    return changed


def test_second_backup_after_one_percent_changed_adds_little(
    system: System, loop_disks: LoopDisks, tmp_path: Path
) -> None:
    """Measured against mode path on the same data: the first and second backup, the repository's
    growth, and start-restore from each."""
    with local_repo(tmp_path) as repo:
        repo.restic("init")
        first = backup(system, repo)
        size1 = repo.size()
        t0 = time.monotonic()
        path_set = real_backup(system.src.root, tmp_path / "p1", "path", system.layout)
        path_first = time.monotonic() - t0
        changed = change_one_percent(system)
        second = backup(system, repo, datetime(2026, 1, 3, 3, 4))
        growth = repo.size() - size1
        t0 = time.monotonic()
        real_backup(
            system.src.root, tmp_path / "p2", "path", system.layout, started=datetime(2026, 1, 3, 3, 4)
        )
        path_second = time.monotonic() - t0
        path_size = sum(p.stat().st_size for p in path_set.rglob("*") if p.is_file())
        print(
            f"first backup: restic {first:.1f} s ({size1} bytes), path {path_first:.1f} s ({path_size} bytes)"
        )
        print(
            f"second backup, {changed} bytes changed: restic {second:.1f} s, +{growth} bytes; "
            f"path {path_second:.1f} s"
        )
        # the changed bytes (restic compresses nothing of random data) plus new trees, index and snapshots
        assert growth < changed + 512 * 1024, (growth, changed)
        assert growth < size1 // 20

        restic_target, path_target = loop_disks.create("256M"), loop_disks.create("256M")
        t0 = time.monotonic()
        proc = start_restore(
            system,
            f"restic:{repo.location}",
            restic_target,
            tmp_path / "t1",
            "--restic-password-file",
            repo.password_file,
        )
        restic_restore = time.monotonic() - t0
        assert proc.returncode == 0, proc.stdout + proc.stderr
    t0 = time.monotonic()
    proc = start_restore(system, str(path_set), path_target, tmp_path / "t2", "--layout", system.recovery)
    path_restore = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"start-restore: restic {restic_restore:.1f} s, path {path_restore:.1f} s")
    loop_disks.rescan(restic_target)
    check_same_system(system.src, restic_target, loop_disks, tmp_path / "check", same_table=True)


def test_wrong_password_unreachable_and_uninitialised_are_one_line(
    system: System, loop_disks: LoopDisks, tmp_path: Path
) -> None:
    target = loop_disks.create("256M")
    with local_repo(tmp_path) as repo:
        data = {"build": {"mode": "restic"}, "restic": restic_table(repo)}
        ok, detail, fix = readiness(config_from_dict(data))
        assert not ok and "is not initialised" in detail, detail
        assert f"restic -r {repo.location} init" in fix
        repo.restic("init")
        assert readiness(config_from_dict(data))[0]
        wrong = tmp_path / "wrong"
        wrong.write_text("not the password\n")
        proc = start_restore(
            system, f"restic:{repo.location}", target, tmp_path / "t", "--restic-password-file", wrong
        )
        assert "wrong password" in one_line_error(proc)
    port = free_port()  # nothing listens there
    proc = start_restore(
        system,
        f"restic:rest:http://127.0.0.1:{port}/",
        target,
        tmp_path / "t",
        "--restic-password-file",
        wrong,
    )
    assert "is not reachable" in one_line_error(proc)
    assert untouched(target)


def test_a_missing_file_system_snapshot_stops_before_anything_is_written(
    system: System, loop_disks: LoopDisks, tmp_path: Path
) -> None:
    target = loop_disks.create("256M")
    with local_repo(tmp_path) as repo:
        repo.restic("init")
        backup(system, repo)
        snapshots = json.loads(repo.restic("snapshots", "--json").stdout)
        data = next(
            s
            for s in snapshots
            if any(t.startswith("mkrec-fs=") and t.endswith(".ext4.tar") for t in s["tags"])
            and s["paths"] == [str(system.src.root / "data")]
        )
        repo.restic("forget", data["id"])
        proc = start_restore(
            system,
            f"restic:{repo.location}",
            target,
            tmp_path / "t",
            "--restic-password-file",
            repo.password_file,
        )
    line = one_line_error(proc)
    assert "has no snapshot of /data" in line and "nothing was written" in line, line
    assert untouched(target)


def test_restore_fs_of_one_filesystem_and_its_image(
    system: System, loop_disks: LoopDisks, tmp_path: Path
) -> None:
    """restore-fs from a set's snapshots: /data through restic restore into a new partition (its own
    UUID there: the source still has the saved one), the ESP's image back byte for byte through
    restic dump."""
    _disk, node = one_partition_disk(loop_disks, "96M")
    _disk2, esp_node = one_partition_disk(loop_disks, "40M")
    with local_repo(tmp_path) as repo:
        repo.restic("init")
        backup(system, repo)
        source = f"restic:{repo.location}#CDrec-20260102-0304"
        for saved, target in ((system.src.data_dev, node), (system.src.esp_dev, esp_node)):
            proc = mkrec(
                "restore",
                "fs",
                "--source",
                source,
                "--restic-password-file",
                repo.password_file,
                "--map",
                f"{Path(saved or '').name}={target}",
                "--target",
                tmp_path / "none",
                "--yes",
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
    assert system.src.esp_dev is not None
    size = int(sh("blockdev", "--getsize64", system.src.esp_dev))
    with open(esp_node, "rb") as got, open(system.src.esp_dev, "rb") as want:
        assert got.read(size) == want.read(size)
    loop_disks.mount(node, tmp_path / "check")
    assert tree(tmp_path / "check") == tree(system.src.root / "data")


def test_keep_policy_forgets_old_runs_after_a_good_backup(system: System, tmp_path: Path) -> None:
    with local_repo(tmp_path) as repo:
        repo.restic("init")
        for day in (2, 3, 4):
            backup(system, repo, datetime(2026, 1, day, 3, 4), keep=["last=2"])
        snapshots = json.loads(repo.restic("snapshots", "--json").stdout)
        sets = {t for s in snapshots for t in s["tags"] if t.startswith("mkrec-set=")}
        assert sets == {"mkrec-set=CDrec-20260103-0304", "mkrec-set=CDrec-20260104-0304"}
        assert len(snapshots) == 2 * 4  # three file systems and the recovery snapshot per run
    shutil.rmtree(tmp_path / "restic-local", ignore_errors=True)


# ---- ls, extract and compare of a set in a repository: one backup, read by each test ----


@pytest.fixture(scope="module")
def stored(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRepo]:
    """The system backed up once into a local repository (made when first asked for: after the tests
    above, which change the system)."""
    with local_repo(tmp_path_factory.mktemp("restic-read")) as repo:
        repo.restic("init")
        backup(system, repo)
        yield repo


def read_set(repo: ServedRepo, command: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """mkrec COMMAND on the repository's set (ls, extract: the set; compare: --source)."""
    where = f"restic:{repo.location}#CDrec-20260102-0304"
    pw = ("--restic-password-file", repo.password_file)
    if command == "compare":
        return mkrec("restore", "compare", "--source", where, *pw, *args)
    return mkrec(command, where, *args, *pw)


def test_ls_of_a_restic_set(system: System, stored: ServedRepo) -> None:
    t0 = time.monotonic()
    proc = read_set(stored, "ls", "/data/corpus")
    print(f"restic ls of /data/corpus: {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, proc.stderr
    corpus = system.src.root / "data" / "corpus"
    lines = proc.stdout.splitlines()
    listed = {line.split(None, 5)[5] for line in lines}
    assert listed == {"/data/corpus"} | {f"/data/corpus/{p.name}" for p in corpus.iterdir()}
    owned = time.strftime("%Y-%m-%d %H:%M", time.localtime(1_000_000_000))
    assert f"-rw-r--r-- 1234/5678           13 {owned} /data/corpus/owned" in lines
    assert any(line.startswith("-rwsr-xr-x 0/0            1 ") for line in lines), lines
    everything = read_set(stored, "ls").stdout.splitlines()
    assert any(line.endswith(" /etc/deep/er/f") for line in everything)
    esp = next(line for line in everything if line.startswith("i"))
    assert esp.endswith("image of vfat, " + esp.split()[2] + " bytes in use)"), esp


def test_extract_from_a_restic_set(system: System, stored: ServedRepo, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    proc = read_set(stored, "extract", "/data/corpus", "/etc/deep/er/f", "/etc/nothere", "-C", dest)
    assert proc.returncode == 1, proc.stderr  # one path was not in the set: one line says which
    assert [line for line in proc.stderr.splitlines() if "/etc/nothere" in line] == [
        "not in the set: /etc/nothere"
    ], proc.stderr
    assert "Traceback" not in proc.stderr and "restored 12 entries" in proc.stderr, proc.stderr
    assert (dest / "etc" / "deep" / "er" / "f").read_text() == "deep\n"
    assert sorted(p.name for p in (dest / "etc").iterdir()) == ["deep"]
    assert tree(dest / "data" / "corpus") == tree(system.src.root / "data" / "corpus")
    proc = read_set(stored, "extract", "/nothere", "-C", dest)
    assert "nothing in CDrec-20260102-0304 matches /nothere" in one_line_error(proc)


def test_compare_with_a_restic_set(system: System, stored: ServedRepo, tmp_path: Path) -> None:
    output = tmp_path / "changed.txt"
    proc = read_set(stored, "compare", "--target", system.src.root, "--output", output)
    assert proc.returncode == 0, proc.stderr
    assert "0 changed, 0 added, 0 missing" in proc.stdout, output.read_text()
    changed = system.src.root / "etc" / "deep" / "er" / "f"
    before = changed.stat()
    try:
        changed.write_text("changed since the backup\n")
        proc = read_set(stored, "compare", "--target", system.src.root, "--output", output)
        assert "1 changed, 0 added, 0 missing" in proc.stdout, proc.stdout + proc.stderr
        assert output.read_text() == "changed /etc/deep/er/f\n"
    finally:
        changed.write_text("deep\n")
        os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
