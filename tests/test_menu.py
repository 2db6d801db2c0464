from __future__ import annotations

import pytest

from mkrec import cli
from mkrec.config import Mode
from mkrec.menu import choose_mode, menu_lines


def answers(*items: str):  # type: ignore[no-untyped-def]
    it = iter(items)
    return lambda prompt: next(it)


def test_menu_lists_the_classic_choices() -> None:
    text = "\n".join(menu_lines(Mode.RESCUE))
    assert " *1  rescue disc only\n" in text + "\n"
    assert "  2  rescue disc + backups on CDs/DVDs/BDs (ISO images)\n" in text
    assert "  3  rescue disc + backups to a path (local disk, NFS, SMB)\n" in text
    assert "  4  rescue disc + backup to tape\n" in text
    assert "  5  rescue disc + backups into a restic repository (deduplicated, any backend)\n" in text
    assert "  6  quit" in text


def test_a_wrong_answer_asks_again() -> None:
    said: list[str] = []
    chosen = choose_mode(Mode.CD, ask=answers("x", "9", "4"), say=said.append)
    assert chosen is Mode.TAPE
    assert said.count("Please answer a number from 1 to 6.") == 2


def test_enter_takes_the_default_and_quit_returns_none() -> None:
    assert choose_mode(Mode.PATH, ask=answers(""), say=lambda s: None) is Mode.PATH
    assert choose_mode(Mode.PATH, ask=answers("6"), say=lambda s: None) is None

    def eof(prompt: str) -> str:
        raise EOFError

    assert choose_mode(Mode.PATH, ask=eof, say=lambda s: None) is None


def test_build_without_a_terminal_uses_the_config_mode(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "c.toml"
    # mode path into the output directory itself: refused before anything is built
    config.write_text(f'[build]\nmode = "path"\noutput = "{tmp_path}/out"\n[path]\ndir = "{tmp_path}/out"\n')
    code = cli.main(["--config", str(config), "build", "--menu"])  # pytest's stdin is not a terminal
    err = capsys.readouterr().err
    assert code == 1
    assert "mkrec: error: [path] dir and [build] output are the same directory" in err


def test_build_on_a_terminal_shows_the_menu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A real pseudo-terminal, as `make` on a console gives: the menu appears and 6 quits."""
    import os
    import pty
    import subprocess
    import sys

    config = tmp_path / "c.toml"
    config.write_text(f'[build]\noutput = "{tmp_path}/out"\n')
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mkrec", "--config", str(config), "build", "--menu"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    os.write(master, b"6\n")
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=30) == 0
    text = output.decode()
    assert "mkrec — what shall we make?" in text and "  6  quit" in text
    assert "Nothing built." in text
