from __future__ import annotations

import pytest

from mkrec import build, cli
from mkrec.config import Mode
from mkrec.menu import choose_mode, menu_lines


def answers(*items: str):  # type: ignore[no-untyped-def]
    it = iter(items)
    return lambda prompt: next(it)


def test_menu_lists_the_classic_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "AVAILABLE_MODES", frozenset({Mode.RESCUE}))
    text = "\n".join(menu_lines(Mode.RESCUE))
    assert " *1  rescue disc only\n" in text + "\n"
    assert "  2  rescue disc + backups on CDs/DVDs/BDs (ISO images)   (not available yet)" in text
    assert "  3  rescue disc + backups to a path (local disk, NFS, SMB)   (not available yet)" in text
    assert "  4  rescue disc + backup to tape   (not available yet)" in text
    assert "  5  quit" in text


def test_unavailable_mode_says_so_and_asks_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "AVAILABLE_MODES", frozenset({Mode.RESCUE}))
    said: list[str] = []
    chosen = choose_mode(Mode.CD, ask=answers("4", "x", "1"), say=said.append)
    assert chosen is Mode.RESCUE
    assert "Mode tape (rescue disc + backup to tape) is not available yet in this version of mkrec." in said
    assert "Please answer a number from 1 to 5." in said


def test_enter_takes_the_default_and_quit_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "AVAILABLE_MODES", frozenset(Mode))
    assert choose_mode(Mode.PATH, ask=answers(""), say=lambda s: None) is Mode.PATH
    assert choose_mode(Mode.PATH, ask=answers("5"), say=lambda s: None) is None

    def eof(prompt: str) -> str:
        raise EOFError

    assert choose_mode(Mode.PATH, ask=eof, say=lambda s: None) is None


def test_build_without_a_terminal_uses_the_config_mode(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(build, "AVAILABLE_MODES", frozenset())
    config = tmp_path / "c.toml"
    config.write_text(f'[build]\nmode = "tape"\noutput = "{tmp_path}/out"\n')
    code = cli.main(["--config", str(config), "build", "--menu"])  # pytest's stdin is not a terminal
    err = capsys.readouterr().err
    assert code == 1
    assert "mkrec: error: mode tape (rescue disc + backup to tape) is not available yet" in err
