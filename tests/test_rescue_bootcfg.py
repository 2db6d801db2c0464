"""Boot menus rendered by pure functions, compared with expected files (tests/fixtures/rescue/)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import jinja2
import pytest

from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.rescue import bootcfg
from mkrec.rescue.render import render

FIXTURES = Path(__file__).parent / "fixtures" / "rescue"


def make_ctx(**rescue: object) -> Context:
    config = config_from_dict({"rescue": rescue})
    return Context(config, hostname="pc1", started=datetime(2026, 11, 23, 7, 12))


SERIAL = {"console": "ttyS0,115200", "timeout": 1}
AUTORUN = {"autorun": "start-restore", "timeout": 10}


@pytest.mark.parametrize(
    ("render_fn", "rescue", "memtest", "expected"),
    [
        (bootcfg.render_isolinux, SERIAL, True, "isolinux-serial-memtest.cfg"),
        (bootcfg.render_isolinux, AUTORUN, False, "isolinux-autorun.cfg"),
        (bootcfg.render_grub, SERIAL, True, "grub-serial-memtest.cfg"),
        (bootcfg.render_grub, AUTORUN, False, "grub-autorun.cfg"),
    ],
)
def test_menus_match_expected_files(
    render_fn: Callable[..., str], rescue: dict[str, object], memtest: bool, expected: str
) -> None:
    assert render_fn(make_ctx(**rescue), memtest=memtest) == (FIXTURES / expected).read_text()


def test_both_menus_offer_the_same_entries_and_default() -> None:
    ctx = make_ctx(**AUTORUN)
    iso, grub = bootcfg.render_isolinux(ctx), bootcfg.render_grub(ctx)
    for entry in bootcfg.ENTRIES:
        assert f"mkrec.run={entry.run}" in iso and f"mkrec.run={entry.run}" in grub
    assert "DEFAULT unattended" in iso and "set default=unattended" in grub


def test_console_adds_serial_and_kernel_console() -> None:
    plain, serial = make_ctx(), make_ctx(console="ttyS1,9600n8")
    assert "console=" not in bootcfg.kernel_cmdline(plain)
    assert bootcfg.kernel_cmdline(serial) == "quiet console=tty0 console=ttyS1,9600n8"
    assert "SERIAL 1 9600" in bootcfg.render_isolinux(serial)
    assert "serial --unit=1 --speed=9600" in bootcfg.render_grub(serial)
    assert "SERIAL" not in bootcfg.render_isolinux(plain) and "serial" not in bootcfg.render_grub(plain)


def test_serial_of() -> None:
    assert bootcfg.serial_of("ttyS0,115200") == bootcfg.Serial(0, 115200)
    assert bootcfg.serial_of("ttyS2") == bootcfg.Serial(2, 9600)
    assert bootcfg.serial_of("tty0") is None


def test_zero_timeout_boots_at_once_in_isolinux() -> None:
    # isolinux waits forever on TIMEOUT 0; GRUB boots at once on 0.
    ctx = make_ctx(timeout=0)
    assert "TIMEOUT 1\n" in bootcfg.render_isolinux(ctx)
    assert "set timeout=0\n" in bootcfg.render_grub(ctx)


def test_embedded_grub_config_searches_the_tag_file() -> None:
    text = bootcfg.render_grub_embedded(make_ctx(), "/boot/grub/mkrec-X.id")
    assert "search --no-floppy --set=root --file /boot/grub/mkrec-X.id" in text
    assert "configfile ($root)/boot/grub/grub.cfg" in text
    assert "set prefix" not in text, "modules must keep coming from the built-in memdisk"


def test_missing_template_value_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("{{ missing }}")
    with pytest.raises(jinja2.UndefinedError):
        render(tmp_path, "t.j2")
