"""The config loader: defaults, every key parsed, and every class of error as one exact line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkrec.config import (
    Bootable,
    Config,
    Media,
    Mode,
    config_from_dict,
    config_to_dict,
    describe_config,
    load_config,
)
from mkrec.errors import MkrecError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(MkrecError) as exc:
        load_config(write(tmp_path, text))
    return str(exc.value)


def test_shipped_config_equals_the_defaults() -> None:
    # Config.toml documents every key with its default: both must agree.
    assert load_config(REPO / "Config.toml") == Config()


def test_shipped_config_mentions_every_key() -> None:
    text = (REPO / "Config.toml").read_text()
    for section, keys in config_to_dict(Config()).items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"\n{key} = " in text, f"Config.toml does not document [{section}] {key}"


def test_values_are_typed(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            """
[build]
mode = "path"
output = "/srv/out"
[media]
size = "200M"
bootable = "all"
burn = true
[source]
disks = ["/dev/sda"]
[compression]
level = 19
threads = 2
[rescue]
console = "ttyS0,115200"
autorun = "start-restore"
timeout = 1
[path]
dir = "/mnt/nfs"
[tape]
capacity = "4.7G"
block_size = 10240
""",
        )
    )
    assert cfg.build.mode is Mode.PATH and cfg.build.mode.writes_backup()
    assert cfg.build.output == Path("/srv/out")
    assert cfg.media.size.capacity == 200 * 1024**2 and cfg.media.bootable is Bootable.ALL and cfg.media.burn
    assert cfg.source.disks == ("/dev/sda",) and cfg.source.root == Path("/")
    assert (cfg.compression.level, cfg.compression.threads) == (19, 2)
    assert cfg.rescue.autorun == "start-restore" and cfg.rescue.timeout == 1
    assert cfg.path.dir == Path("/mnt/nfs")
    assert cfg.tape.capacity == int(4.7 * 1024**3) and cfg.tape.block_size == 10240


def test_media_names_give_real_capacities() -> None:
    assert Media.CD700.capacity() == 737_280_000
    assert Media.DVD.capacity() == 4_700_372_992
    assert Media.BD.capacity() == 25_025_314_816
    assert config_from_dict({"media": {"size": "cd650"}}).media.size.capacity == 681_984_000


def test_config_is_frozen_and_round_trips_through_dict() -> None:
    cfg = config_from_dict({"build": {"mode": "tape"}, "media": {"size": "cd700"}, "path": {"dir": "/x"}})
    with pytest.raises(AttributeError):
        cfg.build.mode = Mode.CD  # type: ignore[misc]
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_with_mode_overrides_only_the_mode() -> None:
    cfg = config_from_dict({"media": {"size": "cd700"}}).with_mode(Mode.RESCUE)
    assert cfg.build.mode is Mode.RESCUE and cfg.media.size.text == "cd700"
    assert not Mode.RESCUE.writes_backup() and Mode.CD.needs_volumes() and not Mode.PATH.needs_volumes()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[build]\nmode = "floppy"\n',
            '[build] mode: \'floppy\' is not allowed; choose one of "rescue", "cd", ',
        ),
        ('[media]\nsize = "huge"\n', "[media] size: 'huge' is neither a media name"),
        ('[media]\nsize = "1M"\n', "[media] size: '1M' is too small for a volume; use at least 16M"),
        ("[media]\nburn = 1\n", "[media] burn: expected true or false, got 1"),
        ('[build]\noutput = "relative/dir"\n', "[build] output: 'relative/dir' must be an absolute path"),
        ('[source]\ndisks = "/dev/sda"\n', "[source] disks: expected a list of strings"),
        ("[compression]\nlevel = 30\n", "[compression] level: 30 is out of range; use a number from 1 to 22"),
        ('[compression]\nthreads = "all"\n', "[compression] threads: expected a whole number, got 'all'"),
        ("[tape]\nblock_size = 256\n", "[tape] block_size: 256 is out of range; use a number 512 or more"),
        ("[tape]\nblock_size = 1000\n", "[tape] block_size: 1000 is not a multiple of 512"),
        ('[tape]\ncapacity = "lots"\n', "[tape] capacity: 'lots' is not a size"),
        ('[rescue]\nautorun = "yes"\n', "[rescue] autorun: 'yes' is not allowed"),
        ('[rescue]\nconsole = "COM1"\n', "[rescue] console: 'COM1' is not a console"),
    ],
)
def test_bad_values_name_file_key_and_what_is_allowed(tmp_path: Path, text: str, message: str) -> None:
    error = error_of(tmp_path, text)
    assert error.startswith(f"{tmp_path / 'c.toml'}: {message}"), error


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[media]\nsizes = "dvd"\n')
    assert (
        error
        == f"{tmp_path / 'c.toml'}: unknown key [media] sizes (known keys in [media]: size, bootable, burn)"
    )


def test_unknown_section(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[medias]\n")
    assert error.startswith(f"{tmp_path / 'c.toml'}: unknown section [medias] (known sections: build, media")


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert error_of(tmp_path, 'media = "dvd"\n').startswith(f"{tmp_path / 'c.toml'}: [media] must be a table")


def test_toml_syntax_error(tmp_path: Path) -> None:
    assert error_of(tmp_path, "[build\n").startswith(f"{tmp_path / 'c.toml'}: not valid TOML:")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MkrecError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_describe_shows_every_setting_with_help() -> None:
    lines = describe_config(Config())
    assert '  size         = "dvd (4.4 GiB)"' in "\n".join(lines)
    assert sum(1 for line in lines if "=" in line) == sum(len(v) for v in config_to_dict(Config()).values())
