"""Config.toml -> a frozen, typed Config. Every setting is declared once, below, with its parser,
default and help; the loader, the error messages, `mkrec summary` and the JSON copy for the rescue
side are all driven from these declarations."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from mkrec.errors import MkrecError
from mkrec.sizes import format_size, parse_size


class Mode(StrEnum):
    RESCUE = "rescue"
    CD = "cd"
    PATH = "path"
    TAPE = "tape"
    RESTIC = "restic"

    def writes_backup(self) -> bool:
        return self is not Mode.RESCUE

    def needs_volumes(self) -> bool:
        """Backups cut into ISO volumes of the media size (rescue writes one bootable ISO)."""
        return self is Mode.CD

    def describe(self) -> str:
        return {
            Mode.RESCUE: "rescue disc only",
            Mode.CD: "rescue disc + backups on CDs/DVDs/BDs (ISO images)",
            Mode.PATH: "rescue disc + backups to a path (local disk, NFS, SMB)",
            Mode.TAPE: "rescue disc + backup to tape",
            Mode.RESTIC: "rescue disc + backups into a restic repository (deduplicated, any backend)",
        }[self]


class Media(StrEnum):
    """Named optical media, with their real data capacity (2048-byte sectors)."""

    CD650 = "cd650"
    CD700 = "cd700"
    DVD = "dvd"
    DVD_DL = "dvd-dl"
    BD = "bd"
    BD_DL = "bd-dl"

    def capacity(self) -> int:
        sectors = {
            Media.CD650: 333_000,
            Media.CD700: 360_000,
            Media.DVD: 2_295_104,
            Media.DVD_DL: 4_173_824,
            Media.BD: 12_219_392,
            Media.BD_DL: 24_438_784,
        }[self]
        return sectors * 2048


class Bootable(StrEnum):
    FIRST = "first"
    ALL = "all"


@dataclass(frozen=True)
class MediaSize:
    """A media size as written ("dvd", "200M") and its capacity in bytes."""

    text: str
    capacity: int

    def __str__(self) -> str:
        return self.text


# ---- parsers: raw TOML value -> typed value, ValueError says what is allowed ----


def _choice(enum: type[StrEnum]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        allowed = ", ".join(f'"{m.value}"' for m in enum)
        if not isinstance(value, str) or value not in {m.value for m in enum}:
            raise ValueError(f"{value!r} is not allowed; choose one of {allowed}")
        return enum(value)

    return parse


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string in quotes, got {value!r}")
    return value


def _path(value: Any) -> Path:
    text = _str(value)
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must be an absolute path (starting with /)")
    return Path(text)


def _optional_path(value: Any) -> Path | None:
    return None if _str(value) == "" else _path(value)


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'expected a list of strings like ["a", "b"], got {value!r}')
    return tuple(value)


def _int_range(low: int, high: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise ValueError(f"{value} is out of range; use a number {bound}")
        return value

    return parse


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'expected a size like "650M", got {value!r}')
    size = parse_size(value)
    if size <= 0:
        raise ValueError("a size must be larger than 0")
    return size


def _media_size(value: Any) -> MediaSize:
    names = ", ".join(m.value for m in Media)
    if isinstance(value, str) and value in {m.value for m in Media}:
        return MediaSize(value, Media(value).capacity())
    try:
        size = _size(value)
    except ValueError:
        raise ValueError(f'{value!r} is neither a media name ({names}) nor a size like "200M"') from None
    if size < 16 * 1024**2:
        raise ValueError(f"{value!r} is too small for a volume; use at least 16M")
    return MediaSize(str(value), size)


def _block_size(value: Any) -> int:
    size = _int_range(512)(value)
    if size % 512:
        raise ValueError(f"{size} is not a multiple of 512")
    return size


def _autorun(value: Any) -> str:
    text = _str(value)
    if text not in ("", "start-restore"):
        raise ValueError(f'{text!r} is not allowed; use "" (ask) or "start-restore" (unattended)')
    return text


class Network(StrEnum):
    """When the rescue system brings up a network interface (DHCP, or ip= static settings)."""

    AUTO = "auto"  # when booted from the network (BOOTIF=) or asked on the kernel command line (ip=)
    DHCP = "dhcp"  # always: DHCP on the first interface that gets a lease
    OFF = "off"  # never, even when booted from the network


def _source(value: Any) -> str:
    """A default --source for the rescue system: a path or URL; a password in it would end up on
    the disc and in `ps`, so it is refused."""
    text = _str(value)
    if re.match(r"^[a-z0-9+.-]+://[^/@]*:[^/@]*@", text):
        raise ValueError(f"{text!r} carries a password; use an ssh key given at restore time, or ~/.netrc")
    return text


class After(StrEnum):
    """What an unattended restore does when it is done."""

    POWEROFF = "poweroff"
    REBOOT = "reboot"
    SHELL = "shell"


def _console(value: Any) -> str:
    text = _str(value)
    if text and not text.startswith("tty"):
        raise ValueError(f'{text!r} is not a console; write it as the kernel does, e.g. "ttyS0,115200"')
    return text


def setting(parse: Callable[[Any], Any], default: Any, help: str) -> Any:
    """Declare one setting: its parser, its default (as written in TOML) and a line of help."""
    return field(default=parse(default), metadata={"parse": parse, "raw_default": default, "help": help})


# ---- the settings table ----


@dataclass(frozen=True)
class BuildConfig:
    mode: Mode = setting(_choice(Mode), "cd", "rescue | cd | path | tape | restic")
    output: Path = setting(_path, "/var/lib/mkrec", "sets land in <output>/<hostname>/<YYYYMMDD>/")
    keep: int = setting(
        _int_range(0, 10000), 0, "newest sets kept per host (in output and [path] dir); 0: keep all"
    )


@dataclass(frozen=True)
class MediaConfig:
    size: MediaSize = setting(
        _media_size, "dvd", "cd650 | cd700 | dvd | dvd-dl | bd | bd-dl | a size like 200M"
    )
    bootable: Bootable = setting(
        _choice(Bootable), "first", "first | all: which volumes carry the rescue system"
    )
    burn: bool = setting(_bool, False, "burn each volume after it is verified (xorriso)")


@dataclass(frozen=True)
class SourceConfig:
    root: Path = setting(_path, "/", "the system to back up (tests point this at a mounted image)")
    disks: tuple[str, ...] = setting(
        _str_list, [], "empty: every disk holding a filesystem mounted under root"
    )
    exclude: tuple[str, ...] = setting(
        _str_list,
        ["/proc/*", "/sys/*", "/dev/*", "/run/*", "/tmp/*", "/var/tmp/*"],
        "paths left out of the backup (the output directory is always left out)",
    )
    raw: tuple[str, ...] = setting(_str_list, [], "partitions to image (used blocks only where possible)")


@dataclass(frozen=True)
class CompressionConfig:
    level: int = setting(_int_range(1, 22), 3, "zstd level, 1 to 22")
    threads: int = setting(_int_range(0, 1024), 0, "compression threads; 0: all cores")


@dataclass(frozen=True)
class RescueConfig:
    kernel: str = setting(_str, "auto", "auto, a version, or a /boot/vmlinuz-* path")
    modules: tuple[str, ...] = setting(_str_list, [], "extra kernel modules for the initrd")
    console: str = setting(_console, "", 'e.g. "ttyS0,115200" adds a serial console')
    autorun: str = setting(_autorun, "", '"start-restore": the default boot entry restores unattended')
    timeout: int = setting(_int_range(0, 3600), 10, "boot menu seconds")
    network: Network = setting(
        _choice(Network), "auto", "auto (when booted from the network or ip= is given) | dhcp | off"
    )
    source: str = setting(
        _source,
        "",
        'default --source of the rescue restore commands, e.g. "http://server/sets/host/20261201/"',
    )


@dataclass(frozen=True)
class RestoreConfig:
    after: After = setting(
        _choice(After), "poweroff", "after an unattended restore: poweroff | reboot | shell"
    )


@dataclass(frozen=True)
class PathConfig:
    dir: Path | None = setting(_optional_path, "", "mode path: a local directory or a mounted NFS/SMB share")


@dataclass(frozen=True)
class TapeConfig:
    device: Path = setting(_path, "/dev/nst0", "the tape device (non-rewinding)")
    capacity: int = setting(_size, "2100000K", "bytes per tape")
    block_size: int = setting(_block_size, 512, "tape block size, a multiple of 512")


@dataclass(frozen=True)
class ReportConfig:
    mail: str = setting(_str, "", 'mail the end-of-run summary to this address via sendmail, e.g. "root"')
    command: str = setting(_str, "", "a command run after every build with the summary as JSON on stdin")
    max_age: int = setting(_int_range(1, 3650), 8, "days: mkrec status warns when the last good set is older")


# restic forget's keep options, as [restic] keep names them ("daily=7" -> --keep-daily 7)
KEEP_POLICIES = ("last", "hourly", "daily", "weekly", "monthly", "yearly", "within")


def _keep(value: Any) -> tuple[str, ...]:
    rules = _str_list(value)
    for rule in rules:
        name, sep, amount = rule.partition("=")
        if not sep or name not in KEEP_POLICIES or not amount:
            allowed = ", ".join(KEEP_POLICIES)
            raise ValueError(
                f'{rule!r} is not a keep rule; write NAME=VALUE like "daily=7" (NAME: {allowed})'
            )
    return rules


def _tag(value: Any) -> tuple[str, ...]:
    tags = _str_list(value)
    for tag in tags:
        if not tag or "," in tag or tag.startswith("mkrec"):
            raise ValueError(f"{tag!r} cannot be a tag: no commas, not empty, mkrec* is mkrec's own")
    return tags


def _restic_options(value: Any) -> tuple[str, ...]:
    options = _str_list(value)
    for option in options:
        if "=" not in option:
            raise ValueError(f'{option!r} is not a restic option; write KEY=VALUE like "s3.region=eu-1"')
    return options


@dataclass(frozen=True)
class ResticConfig:
    repository: str = setting(_str, "", "mode restic: a path, sftp:…, rest:…, s3:…, rclone:… repository")
    password_file: Path | None = setting(_optional_path, "", "the repository password (RESTIC_PASSWORD_FILE)")
    env_file: Path | None = setting(
        _optional_path, "", "KEY=VALUE lines for the backend (AWS_ACCESS_KEY_ID…)"
    )
    tags: tuple[str, ...] = setting(_tag, [], "extra tags on every snapshot")
    options: tuple[str, ...] = setting(
        _restic_options,
        [],
        'restic -o options, e.g. ["sftp.command=ssh -F /root/.ssh/backup.conf bk -s sftp"]',
    )
    keep: tuple[str, ...] = setting(
        _keep, [], 'forget --prune after a good backup, e.g. ["daily=7", "weekly=4"]'
    )
    embed_credentials: bool = setting(
        _bool,
        False,
        "RISK: put the password and env files on the rescue disc (anyone holding it can read the backups)",
    )


def _memory(value: Any) -> int:
    size = _size(value)
    if size < 512 * 1024**2:
        raise ValueError(f"{value!r} is too little for the rescue system; use at least 512M")
    return size


class Encrypt(StrEnum):
    NONE = "none"
    AGE = "age"


def _encrypt(value: Any) -> Encrypt:
    """ "" reads as "none": the shipped Config.toml leaves the key empty."""
    return Encrypt.NONE if value == "" else _choice(Encrypt)(value)


@dataclass(frozen=True)
class SecurityConfig:
    encrypt: Encrypt = setting(_encrypt, "none", "none | age: every frame and catalog encrypted (AEAD)")
    recipients: tuple[str, ...] = setting(
        _str_list, [], 'age public keys ("age1...") the set\'s key is wrapped for'
    )
    passphrase_file: Path | None = setting(
        _optional_path, "", "a file (mode 600) holding a passphrase the set's key is also wrapped with"
    )


@dataclass(frozen=True)
class DrillConfig:
    expect: str = setting(_str, "", "console text meaning the restored system is up (default: login:)")
    timeout: int = setting(_int_range(30, 86400), 600, "seconds each drill phase may take")
    workdir: Path = setting(_path, "/var/tmp/mkrec-drill", "scratch directory for the virtual disks")
    memory: int = setting(_memory, "1536M", "RAM of the drill's virtual machine")
    cpus: int = setting(_int_range(1, 64), 2, "virtual CPUs of the drill's virtual machine")


@dataclass(frozen=True)
class Config:
    build: BuildConfig = field(default_factory=BuildConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    rescue: RescueConfig = field(default_factory=RescueConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    path: PathConfig = field(default_factory=PathConfig)
    tape: TapeConfig = field(default_factory=TapeConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    drill: DrillConfig = field(default_factory=DrillConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    restic: ResticConfig = field(default_factory=ResticConfig)

    def with_mode(self, mode: Mode) -> Config:
        return dataclasses.replace(self, build=dataclasses.replace(self.build, mode=mode))


def sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


def _parse_section(source: str, name: str, cls: type, table: Any) -> Any:
    if not isinstance(table, dict):
        raise MkrecError(f"{source}: [{name}] must be a table", hint=f"write it as a [{name}] section")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, raw in table.items():
        if key not in fields:
            known = ", ".join(fields)
            raise MkrecError(f"{source}: unknown key [{name}] {key}", hint=f"known keys in [{name}]: {known}")
        try:
            values[key] = fields[key].metadata["parse"](raw)
        except ValueError as exc:
            raise MkrecError(f"{source}: [{name}] {key}: {exc}") from None
    return cls(**values)


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> Config:
    known = sections()
    for name in data:
        if name not in known:
            raise MkrecError(
                f"{source}: unknown section [{name}]", hint=f"known sections: {', '.join(known)}"
            )
    return Config(
        **{name: _parse_section(source, name, cls, data.get(name, {})) for name, cls in known.items()}
    )


def load_config(path: Path | None) -> Config:
    """Read a Config.toml; None gives the defaults. Errors name the file and key."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise MkrecError(
            f"{path}: no such config file", hint="copy Config.toml from the mkrec sources"
        ) from None
    except PermissionError:
        raise MkrecError(f"{path}: cannot read the config file (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise MkrecError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(data, str(path))


def _to_toml_value(value: Any) -> Any:
    if isinstance(value, StrEnum | MediaSize):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, tuple):
        return list(value)
    return value


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """The TOML-shaped dict that config_from_dict reads back: the rescue side gets this as JSON."""
    out: dict[str, dict[str, Any]] = {}
    for sec in dataclasses.fields(config):
        obj = getattr(config, sec.name)
        out[sec.name] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == "capacity" and sec.name == "tape":
                out[sec.name][f.name] = value
            else:
                out[sec.name][f.name] = _to_toml_value(value)
    return out


def describe_config(config: Config) -> list[str]:
    """Lines for `mkrec summary`: every setting with its resolved value and help."""
    lines = []
    for sec in dataclasses.fields(config):
        lines.append(f"[{sec.name}]")
        obj = getattr(config, sec.name)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            shown = _to_toml_value(value)
            if isinstance(value, MediaSize):
                shown = f"{value.text} ({format_size(value.capacity)})"
            lines.append(f"  {f.name:<12} = {json.dumps(shown):<40} # {f.metadata['help']}")
    return lines
