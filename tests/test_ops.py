"""Operating mkrec: retention, last-run.json, the report hooks, status and `mkrec sets`, on real
directories and real child processes (a fake sendmail on PATH stands for the MTA)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from support import LoopDisks, sh
from test_layout_textfmt import FULL

from mkrec.cli import main
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.layout.model import Disk, Filesystem, LogicalVolume, Partition
from mkrec.layout.textfmt import LAYOUT_FILE, write_layout
from mkrec.ops.lastrun import LAST_LAYOUT, LAST_RUN, load_run
from mkrec.ops.layoutdiff import diff_layouts
from mkrec.ops.recorded import recorded_build
from mkrec.ops.retention import prune, sets_to_remove
from mkrec.ops.setlist import find_sets, is_verified, record_verified
from mkrec.ops.status import Level, gather, overall

STARTED = datetime(2026, 12, 1, 3, 17)


def context(tmp: Path, **extra: dict) -> Context:
    root = tmp / "root"
    (root / "boot").mkdir(parents=True, exist_ok=True)
    data: dict = {
        "build": {"mode": "path", "output": str(tmp / "out"), "keep": 2},
        "source": {"root": str(root)},
        "path": {"dir": str(tmp / "sets")},
    }
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values}
    return Context(config_from_dict(data), hostname="h1", started=STARTED, staging=tmp / "isofs")


def make_set(base: Path, date: str, verified: bool | None = True) -> Path:
    path = base / "h1" / date
    (path / "backup").mkdir(parents=True)
    (path / "backup" / "piece.000").write_bytes(b"x" * 1000)
    if verified is not None:
        record_verified(path, verified, "test")
    return path


def fake_build(ctx: Context, fail: str = "") -> list[Path]:
    """What build() leaves: the rescue disc dir in output and the set in [path] dir (or an error)."""
    recovery = ctx.recovery_dir
    recovery.mkdir(parents=True, exist_ok=True)
    (recovery / LAYOUT_FILE).write_text(write_layout(FULL))
    if fail:
        raise MkrecError(fail)
    date = f"{ctx.started:%Y%m%d}"
    assert ctx.config.path.dir is not None
    disc = ctx.config.build.output / ctx.hostname / date
    disc.mkdir(parents=True)
    (disc / "CDrec-vol1.iso").write_bytes(b"i" * 2048)
    return [disc, make_set(ctx.config.path.dir, date, verified=None)]


# ---- retention ----


def test_sets_to_remove_keeps_the_newest_and_a_verified_one() -> None:
    a, b, c, d = (Path(n) for n in ("20261101", "20261108", "20261115", "20261122"))
    assert sets_to_remove([a, b, c, d], 2, {a, b, c, d}) == [a, b]
    assert sets_to_remove([a, b, c, d], 0, {d}) == []
    assert sets_to_remove([a, b], 2, {a}) == []
    # the two kept are not verified: the newest verified older one stays too
    assert sets_to_remove([a, b, c, d], 2, {a, b}) == [a]


def test_prune_removes_only_after_a_verified_new_set(tmp_path: Path) -> None:
    old = [make_set(tmp_path, d) for d in ("20261101", "20261108", "20261115")]
    new = make_set(tmp_path, "20261122", verified=False)
    assert prune(new, 1) == []  # the new set failed its check: nothing goes
    assert all(p.is_dir() for p in old)
    record_verified(new, True, "test")
    assert prune(new, 2) == old[:2]
    assert sorted(p.name for p in (tmp_path / "h1").iterdir()) == ["20261115", "20261122", "verified.json"]
    assert set(json.loads((tmp_path / "h1" / "verified.json").read_text())) == {"20261115", "20261122"}


def test_a_good_run_records_verifies_and_keeps_n(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = context(tmp_path)
    assert ctx.config.path.dir is not None
    olds = [make_set(ctx.config.path.dir, d) for d in ("20261110", "20261117", "20261124")]
    record = recorded_build(ctx, fake_build, as_json=True)
    assert record.result == "ok" and record.verified
    assert record.removed == [str(p) for p in olds[:2]]
    assert sorted(p.name for p in (ctx.config.path.dir / "h1").glob("2026*")) == ["20261124", "20261201"]
    new = ctx.config.path.dir / "h1" / "20261201"
    assert is_verified(new)
    printed = json.loads(capsys.readouterr().out)
    assert printed["result"] == "ok" and printed["sets"][1] == str(new)
    for host_dir in (ctx.config.build.output / "h1", ctx.config.path.dir / "h1"):
        saved = json.loads((host_dir / LAST_RUN).read_text())
        assert saved == printed
        assert (host_dir / LAST_LAYOUT).read_text() == write_layout(FULL)
        assert (host_dir / LAST_RUN).stat().st_mode & 0o777 == 0o600


def test_a_failed_run_removes_nothing_and_keeps_the_last_good_time(tmp_path: Path) -> None:
    ctx = context(tmp_path, build={"keep": 1})
    recorded_build(ctx, fake_build)
    good = load_run(ctx.config.build.output / "h1")
    assert good is not None
    assert ctx.config.path.dir is not None
    before = sorted(p.name for p in (ctx.config.path.dir / "h1").iterdir())
    later = dataclasses.replace(ctx, started=datetime(2026, 12, 8, 3, 17))
    with pytest.raises(MkrecError, match="disk full"):
        recorded_build(later, lambda c: fake_build(c, fail="disk full"))
    assert sorted(p.name for p in (ctx.config.path.dir / "h1").iterdir()) == before
    failed = load_run(ctx.config.build.output / "h1")
    assert failed is not None
    assert (failed.result, failed.error, failed.sets) == ("failed", "disk full", [])
    assert failed.last_ok == good.finished


# ---- reports ----


def test_mail_and_command_hooks_get_the_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sendmail = bin_dir / "sendmail"  # stands for the MTA: keeps its arguments and the message
    sendmail.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/mail.args\ncat > {tmp_path}/mail.txt\n')
    hook = bin_dir / "hook"
    hook.write_text(f'#!/bin/sh\necho "$1" > {tmp_path}/hook.args\ncat > {tmp_path}/hook.json\n')
    for script in (sendmail, hook):
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    ctx = context(tmp_path, report={"mail": "root", "command": f"{hook} 'a b'"})
    record = recorded_build(ctx, fake_build)

    assert (tmp_path / "mail.args").read_text().split() == ["-t", "-oi"]
    mail = (tmp_path / "mail.txt").read_text()
    assert "To: root\n" in mail and "Subject: mkrec h1: OK\n" in mail
    assert "mkrec build on h1: OK" in mail and '"result": "ok"' in mail
    assert (tmp_path / "hook.args").read_text() == "a b\n"
    sent = json.loads((tmp_path / "hook.json").read_text())
    assert sent["host"] == "h1" and sent["result"] == "ok" and sent["size"] == record.size > 0
    assert record.report == [f"mailed to root via {sendmail}", f"{hook}: summary passed on stdin"]


def test_a_failing_hook_is_a_warning_not_a_failed_run(tmp_path: Path) -> None:
    ctx = context(tmp_path, report={"command": "/bin/false"})
    record = recorded_build(ctx, fake_build)
    assert record.result == "ok"
    assert record.report == ["failed: /bin/false failed (exit 1)"]


# ---- status ----


def test_status_of_a_fresh_run_then_a_new_kernel(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    boot = ctx.config.source.root / "boot"
    (boot / "vmlinuz-6.1.0-26-amd64").write_bytes(b"k")
    recorded_build(ctx, fake_build)
    same = lambda: FULL  # noqa: E731  the disks as captured
    record, findings = gather(ctx, capture=same)
    assert record is not None and record.kernel == platform.release()
    assert [(f.check, f.level) for f in findings] == [
        ("last run", Level.OK), ("kernel", Level.OK), ("layout", Level.OK), ("mkrec", Level.OK)
    ]  # fmt: skip

    (boot / "vmlinuz-6.1.0-27-amd64").write_bytes(b"k")  # an update installed a new kernel
    _, findings = gather(ctx, capture=same)
    kernel = next(f for f in findings if f.check == "kernel")
    assert kernel.level is Level.STALE and kernel.detail == "since the last set: 6.1.0-27-amd64 installed"
    assert overall(findings) is Level.STALE


def test_status_exit_codes_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "Config.toml"
    config.write_text(f'[build]\noutput = "{tmp_path}/out"\n')
    assert main(["--config", str(config), "status"]) == 2  # nothing ever ran
    assert "STALE last run  no run recorded" in capsys.readouterr().out
    host_dir = tmp_path / "out" / platform.node()
    host_dir.mkdir(parents=True)
    old = {"host": "x", "mode": "cd", "started": "2026-01-01T00:00:00", "result": "ok", "verified": True,
           "last_ok": "2026-01-01T01:00:00", "kernel": platform.release()}  # fmt: skip
    (host_dir / LAST_RUN).write_text(json.dumps(old))
    # a month old and made by other code: warnings; the kernels of / were not recorded: stale
    assert main(["--config", str(config), "status", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    levels = {c["check"]: c["level"] for c in out["checks"]}
    assert levels["mkrec"] == "warn" and out["status"] == "stale" and out["exit"] == 2
    assert any("over 8 days" in c["detail"] for c in out["checks"] if c["level"] == "warn")


def test_layout_diff_in_words() -> None:
    sda = FULL.disks[0]
    grown = dataclasses.replace(sda.partitions[3], size=sda.partitions[3].size * 2)
    sdc1 = Partition("sdc1", 1, 2048, 4096, "83")
    new_disk = Disk(name="sdc", size=64 * 1024**2, label="gpt", partitions=(sdc1,))
    vg = FULL.vgs[0]
    now = dataclasses.replace(
        FULL,
        captured="2026-12-01T00:00:00",
        disks=(dataclasses.replace(sda, partitions=(*sda.partitions[:3], grown)), FULL.disks[1], new_disk),
        vgs=(dataclasses.replace(vg, lvs=(vg.lvs[0], LogicalVolume("secret", 2 * 104857600))),),
        filesystems=(*FULL.filesystems[:3], Filesystem("sdc1", "ext4", mountpoint="/data")),
    )
    assert diff_layouts(FULL, FULL) == []
    assert diff_layouts(FULL, now) == [
        "disk sdc added (64.0 MiB)",
        "disk vda removed (256.0 GiB)",
        "partition sdc1 added",
        "partition sda4 grew from 512.0 MiB to 1.0 GiB",
        "logical volume vg0/secret grew from 100.0 MiB to 200.0 MiB",
        "file system sdc1 added (ext4 on /data)",
        "file system vda removed (ext4 on /mnt)",
        "file system sdb1 removed (ext2)",
    ]


# ---- mkrec sets ----


def test_sets_lists_hosts_dates_sizes_and_verify_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_set(tmp_path, "20261124")
    make_set(tmp_path, "20261201", verified=None)
    (tmp_path / "h1" / ".20261208.partial-99").mkdir()  # a run in progress is no set
    assert [e.date for e in find_sets(tmp_path)] == ["20261124", "20261201"]
    assert main(["sets", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["host"], s["date"], s["kind"], s["size"], s["verify_ok"]) for s in listed] == [
        ("h1", "20261124", "path", 1000, True),
        ("h1", "20261201", "path", 1000, None),
    ]
    assert main(["sets", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:5] == ["h1", "20261124", "path", "1000", "B"] and "ok" in lines[1]
    assert lines[2].endswith("never")
    assert main(["sets", str(tmp_path / "nothing")]) == 1


# ---- the journal ----


def test_journal_priorities_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    """journald gives a service's stderr as JOURNAL_STREAM=<dev>:<inode>; a file stands for it."""
    err = tmp_path / "stream"
    config = tmp_path / "Config.toml"
    config.write_text('[build]\nmode = "path"\n[path]\ndir = "/"\n[build]\n')  # invalid: duplicate table
    argv = [sys.executable, "-m", "mkrec", "--config", str(config), "summary"]
    with open(err, "wb") as fh:
        st = os.fstat(fh.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        code = subprocess.run(argv, stderr=fh, env=env, check=False).returncode
    lines = err.read_text().splitlines()
    assert code == 1 and lines and lines[0].startswith("<3>mkrec: error:")
    with open(err, "wb") as fh:  # another file: not the journal, no prefixes
        subprocess.run(argv, stderr=fh, check=False)
    assert err.read_text().startswith("mkrec: error:")


@pytest.mark.root
def test_status_sees_a_disk_added_after_the_capture(loop_disks: LoopDisks, tmp_path: Path) -> None:
    """A real capture of a loop disk, a real second disk mounted under the root later."""
    from mkrec.layout import capture_layout
    from mkrec.ops.status import fresh_layout

    first = _partitioned(loop_disks, "64M")
    sh("mkfs.ext4", "-q", "-F", first)
    root = loop_disks.mount(first, tmp_path / "root")
    ctx = context(tmp_path)
    capture_layout(ctx)
    (ctx.recovery_dir / "layout.toml").rename(tmp_path / "captured.toml")
    recorded_build(ctx, lambda c: _keep_layout(c, tmp_path / "captured.toml"))
    _, findings = gather(ctx)
    assert [f.level for f in findings if f.check == "layout"] == [Level.OK], findings

    part = _partitioned(loop_disks, "32M")
    sh("mkfs.ext2", "-q", "-F", part)
    loop_disks.mount(part, root / "data")
    _, findings = gather(ctx)
    name = Path(part).name
    disk = name.removesuffix("p1")
    assert [(f.level, f.detail) for f in findings if f.check == "layout"] == [
        (Level.STALE, f"disk {disk} added (32.0 MiB)"),
        (Level.STALE, f"partition {name} added"),
        (Level.STALE, f"file system {name} added (ext2 on {root}/data)"),
    ]
    assert {d.name for d in fresh_layout(ctx).disks} == {Path(first).name.removesuffix("p1"), disk}


def _partitioned(loop_disks: LoopDisks, size: str) -> str:
    """A loop disk with one GPT partition (an unpartitioned loop device is no disk to mkrec)."""
    dev = loop_disks.create(size)
    sh("sfdisk", "-q", dev, input="label: gpt\n,\n")
    loop_disks.rescan(dev)
    return dev + "p1"


def _keep_layout(ctx: Context, captured: Path) -> list[Path]:
    """The build's capture stage, as a build of mode rescue leaves it (without the rescue disc)."""
    ctx.recovery_dir.mkdir(parents=True, exist_ok=True)
    captured.replace(ctx.recovery_dir / LAYOUT_FILE)
    return []
