"""The fault suite (issue 15): each fault gives one clear line and a non-zero exit, no traceback,
loses nothing already written, and the next run works. The README's fault table lists them."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
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


@pytest.mark.parametrize("mode", ["path", "cd"])
def test_sigterm_mid_stream_cleans_up_and_the_next_run_works(
    loop_disks: LoopDisks, tmp_path: Path, mode: str
) -> None:
    """systemd stopping the unit or `timeout` send SIGTERM: handled like Ctrl-C. In mode cd the
    volume's ISO image is being written in place as the stream goes."""
    disk, root = source_disk(loop_disks, tmp_path)
    config = write_config(tmp_path, disk, root, level="19", mode=mode)  # slow enough to stop mid-stream
    proc = start_build(config)
    wait_for(proc, "Backing up")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert "mkrec: stopped by SIGTERM; what this run had started is cleaned up" in rest
    assert "Traceback" not in rest
    assert partial_sets(tmp_path) == []
    assert not list(tmp_path.rglob("*.zst.*"))  # no half set left anywhere
    if mode == "cd":
        assert not list((tmp_path / "out").rglob("*.iso")), "the half-written volume is removed"
    write_config(tmp_path, disk, root, level="1", mode=mode)
    done = subprocess.run(
        [str(VENV_BIN / "mkrec"), "--config", str(config), "build"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    if mode == "path":
        assert len(list((tmp_path / "sets").glob("*/*/backup/manifest.json"))) == 1
    else:
        assert len(list((tmp_path / "out").glob("*/*/*-vol1.iso"))) == 1


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
    where = next((tmp_path / "sets").glob("*/[0-9]*")) if mode == "path" else tmp_path / "tape"
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


# ---- the source ----


def test_a_missing_source_root_is_refused_before_any_work(loop_disks: LoopDisks, tmp_path: Path) -> None:
    disk, _root = source_disk(loop_disks, tmp_path, text_mib=8)
    config = write_config(tmp_path, disk, tmp_path / "nothing-here")
    done = build(config)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"mkrec: error: [source] root {tmp_path / 'nothing-here'} is not a directory" in done.stderr
    assert not list(tmp_path.rglob("*.iso")), "no rescue disc was built"
    (tmp_path / "empty").mkdir()
    done = build(write_config(tmp_path, disk, tmp_path / "empty"))
    assert done.returncode == 1
    assert "nothing to back up: no file system is mounted under [source] root" in done.stderr
    assert not list(tmp_path.rglob("*.iso"))


def test_the_output_inside_the_source_is_left_out(loop_disks: LoopDisks, tmp_path: Path) -> None:
    """[build] output and [path] dir on the very file system backed up, not in [source] exclude."""
    disk, root = source_disk(loop_disks, tmp_path, text_mib=8)
    (root / "sets").mkdir()
    config = write_config(root, disk, root, level="1")  # out/ and sets/ below the source's root
    done = build(config)
    assert done.returncode == 0, done.stderr
    (set_dir,) = (root / "sets").glob("*/[0-9]*")
    listing = subprocess.run(
        [str(VENV_BIN / "mkrec"), "ls", str(set_dir)], capture_output=True, text=True, check=True
    ).stdout
    assert "/text0.log" in listing
    assert "/sets/" not in listing and "/out/" not in listing and "Config.toml" in listing


def test_a_file_changing_while_read_is_named_and_the_set_kept(loop_disks: LoopDisks, tmp_path: Path) -> None:
    """tar's 'file changed as we read it': a warning naming the file, the backup goes on and is good."""
    disk, root = source_disk(loop_disks, tmp_path, text_mib=24)
    growing = root / "growing.log"
    growing.write_bytes(bytes(64 * MiB))
    stop = threading.Event()

    def append() -> None:
        with open(growing, "ab") as fh:
            while not stop.is_set():
                fh.write(b"more\n" * 1000)
                fh.flush()
                time.sleep(0.001)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        done = build(write_config(tmp_path, disk, root, level="3"))
    finally:
        stop.set()
        writer.join()
    assert done.returncode == 0, done.stderr
    assert "warning: tar: ./growing.log: file changed as we read it" in done.stderr, done.stderr
    (set_dir,) = (tmp_path / "sets").glob("*/[0-9]*")
    verify = subprocess.run([str(VENV_BIN / "mkrec"), "verify", str(set_dir)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_file_on_bad_sectors_is_named_the_rest_saved_and_the_restore_leaves_it_out(
    loop_disks: LoopDisks, tmp_path: Path
) -> None:
    """An I/O error under one file (a failing disk): tar goes on with the rest; the set is written,
    the build names the file and exits 1; the manifest records it, so extract and restore leave its
    zeros out and name it instead of restoring a file of zeros."""
    from badblocks import BadSectors, first_block_of

    image = tmp_path / "failing.img"
    subprocess.run(["truncate", "-s", "64M", image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "failing", image], check=True)
    filled = loop_disks.mount(loop_disks.attach(image), tmp_path / "fill")
    (filled / "victim.bin").write_bytes(random.Random(1).randbytes(MiB))
    (filled / "fine.txt").write_text("still here\n")
    subprocess.run(["umount", filled], check=True)
    loop_disks.mounts.remove(filled)
    start, length = first_block_of(image, "/victim.bin")
    with BadSectors(image, start, start + length, loop_disks, tmp_path / "src") as root:
        dev = subprocess.run(["findmnt", "-n", "-o", "SOURCE", root], capture_output=True, text=True).stdout
        done = build(write_config(tmp_path, dev.strip(), root, level="1"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "error: victim.bin: unreadable (Input/output error)" in done.stderr, done.stderr
    assert (
        "mkrec: error: the backup set is written, but 1 file(s) could not be read: /victim.bin" in done.stderr
    )
    (set_dir,) = (tmp_path / "sets").glob("*/[0-9]*")
    mkrec = str(VENV_BIN / "mkrec")
    verify = subprocess.run([mkrec, "verify", str(set_dir)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    out = subprocess.run(
        [mkrec, "extract", str(set_dir), "/", "-C", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert out.returncode == 1 and "lost: /victim.bin" in out.stdout + out.stderr, out.stdout + out.stderr
    assert (tmp_path / "x" / "fine.txt").read_text() == "still here\n"
    assert not (tmp_path / "x" / "victim.bin").exists(), "a file of zeros is not restored"
