"""`mkrec restore ACTION`: one subcommand per action of the one table, each with its own options;
the rescue wrappers and the texts that list them read the same table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mkrec import cli
from mkrec.rescue.rdbase import WRAPPERS
from mkrec.rescue.render import render
from mkrec.restore.actions import ACTIONS, TARGET

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["restore", *argv])


def test_each_action_is_a_subcommand_with_its_handler() -> None:
    handlers = {a.name: parse(a.name).handler for a in ACTIONS}
    assert handlers == {
        "start": cli.cmd_restore_start,
        "clone": cli.cmd_restore_clone,
        "fs": cli.cmd_restore_fs,
        "compare": cli.cmd_restore_compare,
    }


def test_the_contract_options_stay() -> None:
    for action in ("start", "clone", "fs"):
        args = parse(action, "--source", "/set", "--map", "sda=/dev/vdb", "--map", "sdb=/dev/vdc", "--yes")
        assert (args.source, args.map, args.yes, args.target) == (
            "/set",  # a path or a URL: mkrec.remote.open_source tells them apart
            ["sda=/dev/vdb", "sdb=/dev/vdc"],
            True,
            TARGET,
        )
    args = parse("start", "--unattended", "--luks-key", "/k", "--luks-pbkdf-iterations", "1000")
    assert (args.unattended, args.luks_key, args.luks_pbkdf_iterations) == (True, Path("/k"), 1000)
    assert parse("clone", "--resize-swap").resize_swap
    assert parse("fs", "--as-type", "xfs", "--layout", "/r").as_type == "xfs"
    args = parse("compare", "--source", "/set", "--output", "/o.txt", "--yes", "--map", "x=y")
    assert (args.source, args.output, args.target) == ("/set", Path("/o.txt"), None)
    assert parse("compare").output == Path("/tmp/changed.txt")


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--as-type", "xfs"],
        ["compare", "--luks-key", "/k"],
        ["fs", "--resize-swap"],
        ["fs", "--unattended"],
        ["start", "--as-type", "xfs"],
        ["start", "--output", "/o"],
        ["start", "--resize-swap"],
        ["clone", "--output", "/o"],
    ],
)
def test_an_option_of_another_action_is_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_wrappers_and_texts_come_from_the_table() -> None:
    assert WRAPPERS == {
        "start-restore": ("start", "rebuild the disks and restore everything"),
        "clone-disk": ("clone", "restore one saved disk onto another disk"),
        "restore-fs": ("fs", "restore one filesystem into an existing partition"),
        "compare": ("compare", "list the files changed, added or missing since the backup"),
    }
    values = {
        "host": "pc1",
        "date": "2026-11-23 07:12",
        "set_name": "S",
        "version": "6.1",
        "iso_name": "v1.iso",
    }
    readme = render(TEMPLATES, "README.txt.j2", **values)
    motd = render(TEMPLATES, "motd.j2", **values, disks=[])
    for a in ACTIONS:
        assert f"\n  {a.wrapper:<16}{a.help}\n" in readme
        assert f"\n    {a.wrapper:<16}{a.help}\n" in motd
