from __future__ import annotations

import pytest

from mkrec.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("650M", 650 * 1024**2),
        ("4.7G", int(4.7 * 1024**3)),
        ("2100000K", 2_100_000 * 1024),
        ("512", 512),
        ("1T", 1024**4),
        ("64MiB", 64 * 1024**2),
        ("10kb", 10 * 1024),
        (" 1 G ", 1024**3),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "12X", "-5M", "1.2.3G", "ten"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_parse_size_rejects_negative_int() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_size(-1)


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (681574400, "650.0 MiB"), (5 * 1024**4, "5.0 TiB")],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text
