"""The command line as a user meets it: one-line errors, no tracebacks unless --debug."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from support import mkrec

from mkrec import cli


def test_bad_config_is_one_line_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[media]\nsize = "floppy"\n')
    proc = mkrec("--config", str(config), "summary")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"mkrec: error: {config}: [media] size: 'floppy'")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[media]\nsize = "floppy"\n')
    proc = mkrec("--debug", "--config", str(config), "summary")
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_summary_prints_the_resolved_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[build]\nmode = "rescue"\n')
    proc = mkrec("--config", str(config), "summary")
    assert proc.returncode == 0
    assert '  mode         = "rescue"' in proc.stdout


def test_unknown_mode_on_the_command_line_is_rejected() -> None:
    proc = mkrec("build", "--mode", "floppy")
    assert proc.returncode == 2 and "invalid Mode value: 'floppy'" in proc.stderr


def test_log_file_gets_everything(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    # mode path into the output directory itself: the build stops at once, with an error to log
    config.write_text(f'[build]\nmode = "path"\noutput = "{tmp_path}/out"\n[path]\ndir = "{tmp_path}/out"\n')
    assert cli.main(["--config", str(config), "build"]) == 1
    log = (tmp_path / "out" / "mkrec.log").read_text()
    assert "mkrec: error: [path] dir and [build] output are the same directory" in log
    assert oct((tmp_path / "out" / "mkrec.log").stat().st_mode & 0o777) == "0o600"


def test_version() -> None:
    proc = mkrec("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("mkrec ")


def test_an_os_error_is_one_line_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A disk that vanishes under a running command: the system's error, one line, exit 1."""

    def vanished(ctx: object, args: object) -> int:
        raise OSError(errno.EIO, "Input/output error", "/mnt/target/var/log/x")

    monkeypatch.setattr(cli, "cmd_summary", vanished)
    config = tmp_path / "c.toml"
    config.write_text("")
    assert cli.main(["--config", str(config), "summary"]) == 1
    err = capsys.readouterr().err
    assert "mkrec: error: Input/output error: /mnt/target/var/log/x" in err
    assert "Traceback" not in err
