"""The fault suite (issue 15): each fault gives one clear line and a non-zero exit, no traceback,
loses nothing already written, and the next run works. The README's fault table lists them."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import VENV_BIN, LoopDisks

pytestmark = pytest.mark.root
MiB = 1024 * 1024


def source_disk(loop_disks: LoopDisks, tmp: Path, text_mib: int = 96) -> tuple[str, Path]:
    """A GPT loop disk with one ext4 holding compressible text (slow at a high zstd level)."""
    disk = loop_disks.create("512M")
    subprocess.run(["sfdisk", "-q", disk], input="label: gpt\n,,L\n", text=True, check=True)
    loop_disks.rescan(disk)
    subprocess.run(["mkfs.ext4", "-q", f"{disk}p1"], check=True)
    root = loop_disks.mount(f"{disk}p1", tmp / "src")
    rng = random.Random(3)
    words = [rng.randbytes(4).hex() for _ in range(500)]
    for i in range(text_mib // 8):
        (root / f"text{i}.log").write_text(" ".join(rng.choice(words) for _ in range(8 * MiB // 9)))
    return disk, root


def write_config(tmp: Path, disk: str, root: Path, **extra: str) -> Path:
    lines = [
        "[build]",
        f'mode = "{extra.get("mode", "path")}"',
        f'output = "{tmp / "out"}"',
        "[path]",
        f'dir = "{tmp / "sets"}"',
        "[source]",
        f'root = "{root}"',
        f'disks = ["{disk}"]',
        "[compression]",
        f"level = {extra.get('level', '3')}",
        "[tape]",
        f'device = "{tmp / "tape"}"',
    ]
    config = tmp / "Config.toml"
    config.write_text("\n".join(lines) + "\n")
    (tmp / "sets").mkdir(exist_ok=True)
    return config


def start_build(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(VENV_BIN / "mkrec"), "--config", str(config), "build"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(proc: subprocess.Popen[str], text: str, timeout: float = 120) -> str:
    """Read the build's output until `text` shows (the build is then past that point)."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never showed; output:\n{seen}")


def partial_sets(tmp: Path) -> list[Path]:
    return sorted((tmp / "sets").rglob(".*.partial-*")) + sorted((tmp / "out").rglob(".*.partial-*"))


def test_sigterm_mid_stream_cleans_up_and_the_next_run_works(loop_disks: LoopDisks, tmp_path: Path) -> None:
    """systemd stopping the unit or `timeout` send SIGTERM: handled like Ctrl-C."""
    disk, root = source_disk(loop_disks, tmp_path)
    config = write_config(tmp_path, disk, root, level="19")  # slow enough to stop mid-stream
    proc = start_build(config)
    wait_for(proc, "Backing up")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert "mkrec: stopped by SIGTERM; what this run had started is cleaned up" in rest
    assert "Traceback" not in rest
    assert partial_sets(tmp_path) == []
    assert not list((tmp_path / "sets").rglob("*.zst.*"))  # no half set left anywhere
    write_config(tmp_path, disk, root, level="1")
    done = subprocess.run(
        [str(VENV_BIN / "mkrec"), "--config", str(config), "build"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "sets").glob("*/*/backup/manifest.json"))) == 1


def build(config: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(VENV_BIN / "mkrec"), "--config", str(config), "build"]
    return subprocess.run(argv, capture_output=True, text=True)


def test_sigkill_leaves_a_partial_set_that_the_next_run_removes(
    loop_disks: LoopDisks, tmp_path: Path
) -> None:
    """SIGKILL (or power loss) cannot be handled: the next run removes what the dead one left."""
    disk, root = source_disk(loop_disks, tmp_path)
    config = write_config(tmp_path, disk, root, level="19")
    proc = start_build(config)
    wait_for(proc, "Backing up")
    time.sleep(1.0)
    proc.kill()
    proc.communicate(timeout=60)
    (left,) = partial_sets(tmp_path)
    assert left.name.endswith(f".partial-{proc.pid}")
    write_config(tmp_path, disk, root, level="1")
    done = build(config)
    assert done.returncode == 0, done.stderr
    assert f"removed {left}, left by an interrupted run (process {proc.pid} is gone)" in done.stderr
    assert partial_sets(tmp_path) == []


@pytest.mark.parametrize("mode", ["path", "tape"])
def test_every_set_carries_its_layout(loop_disks: LoopDisks, tmp_path: Path, mode: str) -> None:
    """A path or tape set restores with nothing but itself: etc/recovery is on its volume 1, checksummed."""
    from mkrec.restore.decide.source import open_restore_set

    disk, root = source_disk(loop_disks, tmp_path, text_mib=8)
    (tmp_path / "tape").touch()  # a file stands in for the drive
    done = build(write_config(tmp_path, disk, root, mode=mode, level="1"))
    assert done.returncode == 0, done.stderr
    where = next((tmp_path / "sets").glob("*/*")) if mode == "path" else tmp_path / "tape"
    with open_restore_set(where, None) as reader:
        layout = reader.recovery_file("layout.toml")
    assert layout is not None and f'name = "{Path(disk).name}" '.encode() in layout
    if mode == "path":
        assert " etc/recovery/layout.toml\n" in (where / "SHA256SUMS").read_text()
    # Every build also writes the netboot tree next to its rescue disc.
    rescue_set = next((tmp_path / "out").glob("*/*/*-vol1.iso")).parent
    assert {"pxelinux.0", "bootx64.efi", "netboot.ipxe", "rdbase.img"} <= {
        p.name for p in (rescue_set / "netboot").iterdir()
    }
