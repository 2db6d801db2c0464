"""The command line. Parses, builds the Context once, dispatches, and turns errors into one line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from mkrec import __version__
from mkrec.config import Config, Mode, describe_config, load_config
from mkrec.context import Context
from mkrec.errors import MkrecError, os_error_text
from mkrec.log import setup_logging
from mkrec.remote import Source
from mkrec.restic.spec import PREFIX as RESTIC
from mkrec.restic.spec import ResticSource
from mkrec.restore.actions import ACTIONS, TARGET

log = logging.getLogger("mkrec")
SET_HELP = "a set directory, ISO files' directory, ISO or tape file, or a URL (nfs://, http(s)://, ssh://)"
RESTIC_SET_HELP = "; or restic:<repository>[#<set or snapshot id>]"


def default_config_path() -> Path | None:
    for candidate in (Path("Config.toml"), Path("/etc/mkrec/Config.toml")):
        if candidate.is_file():
            return candidate
    return None


# ---- handlers: thin; the work lives in the stage modules ----


def cmd_preflight(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.preflight import preflight

    return preflight(ctx, args.config_error, as_json=args.json)


def cmd_build(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.build import build

    if args.mode is None and args.menu and sys.stdin.isatty():
        from mkrec.menu import choose_mode

        chosen = choose_mode(ctx.config.build.mode)
        if chosen is None:
            log.info("Nothing built.")
            return 0
        ctx = Context(ctx.config.with_mode(chosen), ctx.config_path, ctx.debug, staging=ctx.staging)
    from mkrec.ops.recorded import recorded_build

    recorded_build(ctx, build, as_json=args.json)
    return 0


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.ops.status import status

    return status(ctx, json_out=args.json)


def cmd_sets(ctx: Context, args: argparse.Namespace) -> int:
    if args.where.startswith(RESTIC):
        from mkrec.restic.sets import list_restic_sets, render_runs

        repo = _restic_source(ctx, args, args.where).repo
        for line in render_runs(repo.location, list_restic_sets(repo)):
            print(line)
        return 0
    from mkrec.ops.setlist import list_sets

    return list_sets(args.where, as_json=args.json)


def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.backup.commands import cmd_verify as verify

    return verify(ctx, args, _set_source(args, args.set))


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.backup.commands import cmd_ls as ls

    return ls(ctx, args, _set_or_restic(ctx, args, args.set))


def cmd_extract(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.backup.commands import cmd_extract as extract

    return extract(ctx, args, _set_or_restic(ctx, args, args.set))


def cmd_drill(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.drill import drill

    return drill(ctx, args.set, args.firmware)


def cmd_summary(ctx: Context, args: argparse.Namespace) -> int:
    print(f"# config: {ctx.config_path or 'built-in defaults'}")
    for line in describe_config(ctx.config):
        print(line)
    return 0


def _after(ctx: Context, args: argparse.Namespace) -> str:
    """--unattended (autorun): what [restore] after says to do once it is done."""
    return str(ctx.config.restore.after) if args.unattended else ""


def cmd_restore_start(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.restore.rebuild import start

    return start(
        _source(ctx, args),
        args.layout,
        args.map,
        args.target,
        yes=args.yes or args.unattended,
        after=_after(ctx, args),
        luks_key=args.luks_key,
        luks_iterations=args.luks_pbkdf_iterations,
        identity=args.identity,
    )


def cmd_restore_clone(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.restore.rebuild import clone

    return clone(
        _source(ctx, args),
        args.layout,
        args.map,
        args.target,
        yes=args.yes or args.unattended,
        after=_after(ctx, args),
        luks_key=args.luks_key,
        luks_iterations=args.luks_pbkdf_iterations,
        resize_swap=args.resize_swap,
        identity=args.identity,
    )


def cmd_restore_fs(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.restore.restorefs import restore_fs

    return restore_fs(
        _source(ctx, args),
        args.layout,
        args.map,
        args.target,
        yes=args.yes,
        as_type=args.as_type,
        identity=args.identity,
    )


def cmd_restore_compare(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.restore.compare import compare

    return compare(_source(ctx, args), args.layout, args.output, args.target, identity=args.identity)


def _source(ctx: Context, args: argparse.Namespace) -> Source | ResticSource | None:
    """--source as given: a path or URL with the ssh options that reach it; or a restic repository
    with its password file (--restic-password-file, else [restic] password_file; else typed), env
    file and -o options (--restic-env-file, --restic-option, else [restic] env_file and options)."""
    return _set_or_restic(ctx, args, args.source) if args.source else None


def _set_or_restic(ctx: Context, args: argparse.Namespace, text: str) -> Source | ResticSource:
    if text.startswith(RESTIC):
        return _restic_source(ctx, args, text)
    return _set_source(args, text)


def _restic_source(ctx: Context, args: argparse.Namespace, text: str) -> ResticSource:
    cfg = ctx.config.restic
    password_file = args.restic_password_file or cfg.password_file
    options = tuple(getattr(args, "restic_option", ())) or cfg.options
    env_file = getattr(args, "restic_env_file", None) or cfg.env_file
    return ResticSource.parse(text).with_password(password_file, env_file, options)


def _set_source(args: argparse.Namespace, text: str) -> Source:
    """A set's path or URL with the ssh options that reach it."""
    return Source(text, args.ssh_identity, args.ssh_config)


def cmd_layout_capture(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.layout import capture_layout

    out = args.output or ctx.recovery_dir
    layout = capture_layout(ctx, args.disk, out)
    log.info("Layout of %s written to %s", ", ".join(d.name for d in layout.disks) or "no disks", out)
    return 0


def cmd_layout_show(ctx: Context, args: argparse.Namespace) -> int:
    from mkrec.layout import LAYOUT_FILE, read_layout
    from mkrec.layout.show import render_tree

    for line in render_tree(read_layout(args.dir / LAYOUT_FILE)):
        print(line)
    return 0


EXAMPLES = """\
examples:
  mkrec preflight                      check the machine before the first build
  mkrec build --mode path              rescue disc + backup into [path] dir
  mkrec status; echo $?                last run and staleness (0 ok, 1 warning, 2 failed/stale)
  mkrec sets /var/lib/mkrec --json     every host's sets, sizes and verify state
  mkrec verify /var/lib/mkrec/HOST/20261201
  mkrec extract SET /etc/fstab -C /tmp/out
  mkrec ls restic:/srv/restic#CDrec-20261201-0300 /etc   a set in a restic repository
  systemctl enable --now mkrec-backup.timer   run the build every week (after make install)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkrec",
        description="Bare-metal disaster recovery for Linux.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="the config file (default: ./Config.toml)")
    parser.add_argument("--debug", action="store_true", help="log every command; tracebacks on errors")
    parser.add_argument("--log", type=Path, help="log file (default: <output>/mkrec.log)")
    parser.add_argument("--version", action="version", version=f"mkrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("preflight", help="check the machine: PASS/WARN/FAIL per check")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=cmd_preflight, logs=False)

    p = sub.add_parser("build", help="capture, build the rescue system, back up")
    p.add_argument("--mode", type=Mode, choices=list(Mode), help="override [build] mode")
    p.add_argument("--menu", action="store_true", help="on a terminal without --mode, ask with the menu")
    p.add_argument("--json", action="store_true", help="print the end-of-run summary as JSON on stdout")
    p.set_defaults(handler=cmd_build, logs=True)

    p = sub.add_parser(
        "status", help="the last run, and whether the sets are stale (exit 0 ok, 1 warning, 2 failed/stale)"
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(handler=cmd_status, logs=False)

    p = sub.add_parser("sets", help="list the sets in a directory or restic repository: hosts, dates, sizes")
    p.add_argument("where", metavar="DIR", help="a [build] output or [path] dir, or restic:<repository>")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--restic-password-file", type=Path, help="restic: the repository's password file")
    p.set_defaults(handler=cmd_sets, logs=False)

    p = sub.add_parser("summary", help="print the resolved configuration")
    p.set_defaults(handler=cmd_summary, logs=False)

    p = sub.add_parser("drill", help="restore a set into a virtual machine and boot it: PASS/FAIL")
    p.add_argument("set", type=Path, nargs="?", help="the set's directory (default: the newest of this host)")
    p.add_argument("--firmware", choices=["bios", "uefi"], help="default: the way this machine booted")
    p.set_defaults(handler=cmd_drill, logs=True)

    layout = sub.add_parser("layout", help="disk layout only").add_subparsers(
        dest="layout_cmd", required=True
    )
    p = layout.add_parser("capture", help="write the disk layout into a directory")
    p.add_argument("--disk", action="append", default=[], help="a disk to capture (repeatable)")
    p.add_argument("-o", "--output", type=Path, help="directory (default: isofs/etc/recovery)")
    p.set_defaults(handler=cmd_layout_capture, logs=True)
    p = layout.add_parser("show", help="print a captured layout as a tree")
    p.add_argument("dir", type=Path)
    p.set_defaults(handler=cmd_layout_show, logs=False)

    p = sub.add_parser("verify", help="check every checksum of a backup set")
    p.add_argument("set", help=SET_HELP)
    _ssh_options(p)
    p.add_argument("--deep", action="store_true", help="also open every frame and catalog")
    _identity_option(p)
    p.set_defaults(handler=cmd_verify, logs=False)

    p = sub.add_parser("ls", help="list files in a backup set (from the catalogs, or restic ls)")
    p.add_argument("set", help=SET_HELP + RESTIC_SET_HELP)
    p.add_argument("path", nargs="?", default="")
    _ssh_options(p)
    _identity_option(p)
    _restic_options(p)
    p.set_defaults(handler=cmd_ls, logs=False)

    p = sub.add_parser("extract", help="restore files from a backup set")
    p.add_argument("set", help=SET_HELP + RESTIC_SET_HELP)
    p.add_argument("paths", nargs="+")
    _ssh_options(p)
    _restic_options(p)
    p.add_argument("-C", dest="dest", type=Path, required=True, help="where to put them")
    _identity_option(p)
    p.set_defaults(handler=cmd_extract, logs=True)

    add_restore_parsers(sub)
    return parser


def add_restore_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`mkrec restore ACTION`: one subcommand per action of the table in mkrec.restore.actions, each
    with only its own options."""
    wrappers = ", ".join(a.wrapper for a in ACTIONS)
    actions = sub.add_parser("restore", help=f"the restore engine ({wrappers})").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    parsers = {
        a.name: actions.add_parser(a.name, help=a.help, description=f"{a.wrapper}: {a.help}") for a in ACTIONS
    }

    p = parsers["start"]
    _shared_options(p, "saved disk")
    _target_option(p)
    _unattended_options(p)
    p.set_defaults(handler=cmd_restore_start, logs=True)

    p = parsers["clone"]
    _shared_options(p, "saved disk")
    _target_option(p)
    _unattended_options(p)
    p.add_argument("--resize-swap", action="store_true", help="scale swap like the other partitions")
    p.set_defaults(handler=cmd_restore_clone, logs=True)

    p = parsers["fs"]
    _shared_options(p, "saved filesystem (a device or mount point): exactly one")
    _target_option(p, "the mounted system whose fstab follows")
    p.add_argument("--as-type", default="", help="make it as another type (ext4, xfs, ...)")
    p.set_defaults(handler=cmd_restore_fs, logs=True)

    p = parsers["compare"]
    _source_options(p)
    p.add_argument("--target", type=Path, help=f"the system to compare (default {TARGET} if there, else /)")
    p.add_argument(
        "--output",
        type=Path,
        default=Path("/tmp/changed.txt"),
        help="the list of changes (default %(default)s)",
    )
    # design.md gives every action [--map] [--yes]; compare writes nothing but its list, so they do nothing.
    p.add_argument("--map", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--yes", action="store_true", help=argparse.SUPPRESS)
    _identity_option(p)
    p.set_defaults(handler=cmd_restore_compare, logs=True)


def _shared_options(p: argparse.ArgumentParser, map_what: str) -> None:
    """What start, clone and fs share: the set, its layout, the targets, and whether to ask."""
    _source_options(p)
    p.add_argument(
        "--map", action="append", default=[], metavar="SAVED=DEV", help=f"the target of a {map_what}"
    )
    p.add_argument("--yes", action="store_true", help="do not ask before writing")
    _identity_option(p)


def _identity_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--identity",
        type=Path,
        metavar="FILE",
        help="an encrypted set's age identity file (or a file holding its passphrase); "
        "default: ask on the terminal",
    )


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        help=f"the backup set: {SET_HELP[:-1]}, restic:<repository>[#<set or snapshot id>]; "
        "default: search the drives)",
    )
    _ssh_options(p)
    _restic_options(p)
    p.add_argument("--layout", type=Path, help="the saved layout (default: etc/recovery of the set)")


def _ssh_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ssh-identity", type=Path, metavar="KEY", help="ssh:// sources: the private key file")
    p.add_argument("--ssh-config", type=Path, metavar="FILE", help="ssh:// sources: an ssh_config file")


def _restic_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--restic-password-file", type=Path, help="restic: the repository's password file")
    p.add_argument("--restic-env-file", type=Path, help="restic: KEY=VALUE credentials of the backend")
    p.add_argument(
        "--restic-option", action="append", default=[], metavar="KEY=VALUE", help="restic: a -o option"
    )


def _target_option(p: argparse.ArgumentParser, what: str = "where the restored system is mounted") -> None:
    p.add_argument("--target", type=Path, default=TARGET, help=f"{what} (default %(default)s)")


def _unattended_options(p: argparse.ArgumentParser) -> None:
    """start and clone: autorun, and the new passphrase of LUKS containers."""
    p.add_argument("--unattended", action="store_true", help="--yes, then [restore] after (autorun)")
    p.add_argument("--luks-key", type=Path, help="the new LUKS passphrase as a key file (unattended)")
    p.add_argument(
        "--luks-pbkdf-iterations",
        type=int,
        default=0,
        help="LUKS: PBKDF2 with N iterations (slow machines, tests)",
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stopping the unit, `timeout`): unwinds like Ctrl-C, so every stage cleans
    up what it started (a partial set is removed, a restore step stays unjournaled)."""


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    config_path = args.config or default_config_path()
    args.config_error = None
    try:
        try:
            config = load_config(config_path)
        except MkrecError as exc:
            if args.command != "preflight":
                raise
            args.config_error, config = exc, Config()  # the preflight reports it as a FAIL row
        if getattr(args, "mode", None) is not None:
            config = config.with_mode(args.mode)
        ctx = Context(config, config_path, args.debug)
        if args.logs:
            setup_logging(args.debug, args.log or ctx.log_file)
        return int(args.handler(ctx, args))
    except MkrecError as exc:
        if args.debug:
            log.exception("mkrec: error")
        log.error("mkrec: error: %s", exc.message)
        if exc.hint:
            log.error("mkrec: hint: %s", exc.hint)
        return 1
    except Terminated:
        log.error("mkrec: stopped by SIGTERM; what this run had started is cleaned up")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        log.error("mkrec: interrupted")
        return 130
    except BrokenPipeError:  # `mkrec ls SET | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except OSError as exc:  # the system's own error (a disk gone, no space, no permission): one line too
        if args.debug:
            log.exception("mkrec: error")
        log.error("mkrec: error: %s", os_error_text(exc))
        log.error("mkrec: hint: the system refused an operation there; --debug shows where mkrec was")
        return 1
