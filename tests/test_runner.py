"""The one command helper, run against real commands: argv logging, fixed env, errors."""

from __future__ import annotations

import logging

import pytest

from mkrec.errors import CommandError, MkrecError
from mkrec.runner import popen, run, run_json, wait_checked, which


def test_run_captures_stdout_with_a_fixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKREC_LEAK", "secret")
    out = run(["env"]).stdout
    assert "LC_ALL=C" in out and "MKREC_LEAK" not in out


def test_run_closes_stdin_unless_input_given() -> None:
    assert run(["cat"]).stdout == ""
    assert run(["cat"], input="hello").stdout == "hello"


def test_failure_becomes_command_error_with_last_stderr_line() -> None:
    with pytest.raises(CommandError) as exc:
        run(["sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3"])
    assert exc.value.returncode == 3
    assert exc.value.message == "sh failed (exit 3): the real reason"
    assert exc.value.argv[0] == "sh"


def test_check_false_returns_the_code() -> None:
    assert run(["false"], check=False).returncode == 1


def test_missing_command_is_a_user_error() -> None:
    with pytest.raises(MkrecError, match="no-such-tool-xyz: command not found"):
        run(["no-such-tool-xyz"])


def test_timeout_is_a_user_error() -> None:
    with pytest.raises(MkrecError, match="did not finish in 0 s"):
        run(["sleep", "5"], timeout=0.2)


def test_argv_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="mkrec"):
        run(["echo", "a b"])
    assert "run: echo 'a b'" in caplog.text


def test_run_json_parses_and_rejects_garbage() -> None:
    assert run_json(["echo", '{"a": [1]}']) == {"a": [1]}
    assert run_json(["true"]) == {}
    with pytest.raises(MkrecError, match="printed output that is not JSON"):
        run_json(["echo", "nope"])


def test_popen_and_wait_checked() -> None:
    proc = popen(["sh", "-c", "printf data; exit 0"])
    assert proc.stdout is not None and proc.stdout.read() == b"data"
    assert wait_checked(proc) == 0
    proc = popen(["sh", "-c", "echo broken >&2; exit 2"])
    assert proc.stdout is not None
    proc.stdout.read()
    with pytest.raises(CommandError, match="exit 2"):
        wait_checked(proc)
    # tar's "file changed as we read it" is exit 1: a caller may accept it
    proc = popen(["sh", "-c", "exit 1"])
    assert wait_checked(proc, ok_codes=(0, 1)) == 1


def test_which_uses_the_safe_path() -> None:
    assert which("sh") is not None
    assert which("no-such-tool-xyz") is None


def test_a_tar_failure_names_its_first_complaint_not_its_summary() -> None:
    stderr = (
        "tar: ./usr/lib/a.so: Cannot write: Input/output error\n"
        "tar: ./usr/lib/b.so: Cannot open: Input/output error\n"
        "tar: Exiting with failure status due to previous errors\n"
    )
    err = CommandError(["tar", "-x"], 2, stderr)
    assert err.message == "tar failed (exit 2): tar: ./usr/lib/a.so: Cannot write: Input/output error"
    assert (
        CommandError(["sfdisk"], 1, "warning\nthe reason\n").message == "sfdisk failed (exit 1): the reason"
    )
