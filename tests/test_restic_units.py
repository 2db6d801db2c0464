"""Mode restic's decisions without a repository: the [restic] settings, restic's failures as one
line (stderr captured from Debian's restic 0.14), the sets found in `restic snapshots --json` output
(captured), the restic argv and what the rescue system gets."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from mkrec.backup.sources import Source
from mkrec.config import Config, Mode, config_from_dict
from mkrec.context import REPO_ROOT
from mkrec.errors import CommandError, MkrecError
from mkrec.rescue.rdbase import embedded_credentials, restic_source_args
from mkrec.rescue.render import render
from mkrec.restic.backup import keep_args, restic_excludes
from mkrec.restic.repo import Repo, explain_failure, read_env_file
from mkrec.restic.restoreset import choose_set, members
from mkrec.restic.sets import group_runs, render_runs
from mkrec.restic.spec import ResticSource, source_arg
from mkrec.tools import needed_tools, restic_tools

FIXTURES = Path(__file__).parent / "fixtures" / "restic"
SNAPSHOTS = json.loads((FIXTURES / "snapshots.json").read_text())


def restic_config(**restic: object) -> Config:
    return config_from_dict({"build": {"mode": "restic"}, "restic": {"repository": "/srv/restic", **restic}})


# ---- config ----


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("keep", ["daily"], "is not a keep rule"),
        ("keep", ["fortnightly=2"], "is not a keep rule"),
        ("tags", ["a,b"], "cannot be a tag"),
        ("tags", ["mkrec-set=x"], "cannot be a tag"),
        ("password_file", "relative/pw", "must be an absolute path"),
        ("options", ["sftp.command"], "is not a restic option"),
    ],
)
def test_bad_restic_settings_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(MkrecError, match=rf"\[restic\] {key}: .*{message}"):
        restic_config(**{key: value})


def test_mode_restic_needs_restic_installed() -> None:
    config = restic_config()
    assert config.build.mode is Mode.RESTIC
    assert "restic" in needed_tools(config)
    assert "restic" not in needed_tools(config_from_dict({}))


# ---- restic's failures ----


@pytest.mark.parametrize(
    ("fixture", "message", "hint"),
    [
        ("wrong-password", "restic repository R: wrong password", "password_file"),
        ("not-initialised", "restic repository R is not initialised", "restic -r R init"),
        ("not-initialised-sftp", "restic repository R is not initialised", "restic -r R init"),
        ("not-initialised-rest", "restic repository R is not initialised", "restic -r R init"),
        ("unreachable", "restic repository R is not reachable: unable to open config file", "the server"),
        (
            "no-password-file",
            "restic repository R: cannot read the password file: /nonexist does",
            "password_file",
        ),
    ],
)
def test_restic_failures_are_one_line(fixture: str, message: str, hint: str) -> None:
    stderr = (FIXTURES / f"{fixture}.stderr").read_text()
    err = explain_failure("R", CommandError(["restic", "--repo", "R", "snapshots"], 1, stderr))
    assert err.message.startswith(message), err.message
    assert "\n" not in err.message
    assert hint in (err.hint or "")


def test_the_password_is_never_in_argv() -> None:
    repo = Repo("rest:http://127.0.0.1:8000/", password="secret", options=("sftp.command=ssh x",))
    assert repo.argv("snapshots") == [
        "restic",
        "--repo",
        "rest:http://127.0.0.1:8000/",
        "-o",
        "sftp.command=ssh x",
        "snapshots",
    ]
    assert repo.env()["RESTIC_PASSWORD"] == "secret"
    assert "secret" not in repr(repo)
    with_file = Repo("/srv/r", password_file=Path("/root/pw"), password="ignored")
    assert with_file.env()["RESTIC_PASSWORD_FILE"] == "/root/pw" and "RESTIC_PASSWORD" not in with_file.env()


def test_env_file(tmp_path: Path) -> None:
    env = tmp_path / "s3.env"
    env.write_text('# S3\nAWS_ACCESS_KEY_ID=AKIA1\nexport AWS_SECRET_ACCESS_KEY="s e"\n\n')
    assert read_env_file(env) == {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s e"}
    env.write_text("just words\n")
    with pytest.raises(MkrecError, match=r"s3.env:1: not a KEY=VALUE line"):
        read_env_file(env)


# ---- the argv of a backup ----


def test_excludes_are_anchored_at_the_mount_point() -> None:
    src = Source("/dev/sda3", "ext4", "/", Path("/mnt/src"), "tar")
    args = restic_excludes(src, ("/tmp/*", "/home/*", "*.swp"), [Path("/mnt/src/var/lib/mkrec")])
    assert args == [
        "--exclude=/mnt/src/tmp/*",
        "--exclude=/mnt/src/home/*",
        "--exclude=/mnt/src/var/lib/mkrec",
        "--exclude=*.swp",
    ]
    home = Source("/dev/sda4", "ext4", "/home", Path("/mnt/src/home"), "tar")
    assert restic_excludes(home, ("/tmp/*", "/home/*/.cache"), []) == ["--exclude=/mnt/src/home/*/.cache"]


def test_keep_rules_become_forget_options() -> None:
    assert keep_args(("daily=7", "weekly=4", "within=2y")) == [
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
        "--keep-within",
        "2y",
    ]


# ---- the sets in a repository ----


def test_sets_are_grouped_by_run_and_host() -> None:
    runs = group_runs(SNAPSHOTS)
    assert [(r.host, r.set_name, r.complete, r.filesystems) for r in runs] == [
        ("host1", "CDrec-20260102-0304", True, ["loop1p3.ext4.tar"]),
        ("host1", "CDrec-20260103-0304", True, ["loop1p3.ext4.tar"]),
        ("host2", "CDrec-20260104-0304", False, ["sda1.ext4.tar"]),
    ]
    text = "\n".join(render_runs("/srv/r", runs))
    assert "host2:\n  CDrec-20260104-0304" in text and "INCOMPLETE" in text


def test_choosing_a_set() -> None:
    newest = choose_set(SNAPSHOTS, "", "R")
    assert "mkrec-set=CDrec-20260103-0304" in newest["tags"]  # host2's run never finished
    first = choose_set(SNAPSHOTS, "CDrec-20260102-0304", "R")
    assert "mkrec-id=11111111-aaaa" in first["tags"]
    fs_snapshot = next(
        s for s in SNAPSHOTS if "mkrec-id=11111111-aaaa" in s["tags"] and "mkrec-recovery" not in s["tags"]
    )
    assert choose_set(SNAPSHOTS, fs_snapshot["short_id"], "R") == first
    assert members(SNAPSHOTS, first) == {"loop1p3.ext4.tar": fs_snapshot["id"]}
    with pytest.raises(MkrecError, match="no set or snapshot CDrec-19990101-0000"):
        choose_set(SNAPSHOTS, "CDrec-19990101-0000", "R")
    with pytest.raises(MkrecError, match="holds no complete mkrec set"):
        choose_set([s for s in SNAPSHOTS if "mkrec-recovery" not in s["tags"]], "", "R")


def test_source_argument() -> None:
    assert source_arg("/media/set") == Path("/media/set")
    spec = source_arg("restic:sftp:bk@host:/srv/restic#CDrec-20260102-0304")
    assert isinstance(spec, ResticSource)
    assert (spec.repo.location, spec.selector) == ("sftp:bk@host:/srv/restic", "CDrec-20260102-0304")
    assert str(spec) == "restic:sftp:bk@host:/srv/restic#CDrec-20260102-0304"
    with pytest.raises(MkrecError, match="no repository named"):
        source_arg("restic:")


# ---- the rescue system ----


def test_rescue_carries_restic_and_the_repository_but_no_secret_by_default() -> None:
    plain = restic_config(password_file="/root/pw", env_file="/root/s3.env")
    assert restic_tools(plain) == ("restic",)
    assert restic_tools(restic_config(repository="sftp:bk@nas:/srv/restic")) == ("restic", "ssh")
    assert restic_source_args(plain) == ["--source", "restic:/srv/restic"]
    assert embedded_credentials(plain) == []
    risky = restic_config(password_file="/root/pw", env_file="/root/s3.env", embed_credentials=True)
    assert embedded_credentials(risky) == [Path("/root/pw"), Path("/root/s3.env")]
    assert restic_source_args(risky) == [
        "--source",
        "restic:/srv/restic",
        "--restic-password-file",
        "/root/pw",
        "--restic-env-file",
        "/root/s3.env",
    ]
    assert restic_tools(config_from_dict({})) == ()


def test_restore_wrapper_adds_the_repository_unless_a_source_is_given(tmp_path: Path) -> None:
    """The rescue system's start-restore in mode restic: run with a stand-in python3 that prints its
    arguments (the wrapper's own logic is what is tested)."""
    defaults = shlex.join(restic_source_args(restic_config(repository="rest:http://nas:8000/")))
    text = render(
        REPO_ROOT / "templates",
        "wrapper.sh.j2",
        name="start-restore",
        sub="start",
        help="h",
        defaults=defaults,
    )
    (tmp_path / "start-restore").write_text(text)
    (tmp_path / "python3").write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    (tmp_path / "python3").chmod(0o755)

    def run(*args: str) -> str:
        return subprocess.run(
            ["sh", str(tmp_path / "start-restore"), *args],
            capture_output=True,
            text=True,
            env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
            check=True,
        ).stdout

    assert run("--yes") == "-m|mkrec|restore|start|--source|restic:rest:http://nas:8000/|--yes|"
    assert run("--source", "/media/set") == "-m|mkrec|restore|start|--source|/media/set|"
    plain = render(
        REPO_ROOT / "templates", "wrapper.sh.j2", name="compare", sub="compare", help="h", defaults=""
    )
    assert "case" not in plain
