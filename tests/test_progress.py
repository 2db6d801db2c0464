from __future__ import annotations

import io

import pytest

from mkrec.progress import Progress, format_eta


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_show_bytes_rate_eta_and_tag() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress("backup /", 100 * 1024**2, stream=out, interval=10, clock=clock)
    p.set_tag("volume 2")
    clock.now = 5.0
    p.update(10 * 1024**2)  # under the interval: nothing printed yet
    assert out.getvalue() == ""
    clock.now = 10.0
    p.update(50 * 1024**2)
    line = out.getvalue().strip()
    assert line == "backup /  volume 2  50.0 MiB of 100.0 MiB (50%)  5.0 MiB/s  ETA 00:10"
    p.finish()
    assert len(out.getvalue().strip().splitlines()) == 2


def test_unknown_total_shows_bytes_and_rate() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress("tar", stream=out, clock=clock)
    clock.now = 2.0
    p.update(4 * 1024**2)
    p.finish()
    assert out.getvalue().strip() == "tar  4.0 MiB  2.0 MiB/s"


def test_format_eta() -> None:
    assert format_eta(59) == "00:59"
    assert format_eta(3725) == "1:02:05"
    assert format_eta(float("nan")) == "--:--"


def test_an_underestimated_total_grows_instead_of_passing_100_percent() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress("backup /", 100, stream=out, interval=0, clock=clock)
    clock.now = 1.0
    p.update(150)
    assert "150 B of 150 B (100%)" in out.getvalue()


def test_under_the_journal_only_the_last_line_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr is the journal (JOURNAL_STREAM names it): no line every ten seconds, one at the end."""
    monkeypatch.setattr("mkrec.progress.stderr_is_journal", lambda: True)
    out, clock = io.StringIO(), Clock()
    p = Progress("backup /", 100, stream=out, interval=10, clock=clock)
    for second in range(1, 100):
        clock.now = float(second * 60)
        p.update(second)
    assert out.getvalue() == ""
    p.finish()
    assert out.getvalue().startswith("backup /  99 B of 100 B (99%)")
