"""Byte sizes as people write them ("650M", "4.7G", "2100000K", "dvd") and as we print them."""

from __future__ import annotations

import re

# Binary units, as mkCDrec and the tape tools count them.
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'650M' -> 681574400. Raises ValueError with what is allowed."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text
    if not isinstance(text, str):
        raise ValueError(f'expected a size like "650M", got {text!r}')
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f'{text!r} is not a size; write a number with K, M, G or T, e.g. "650M" or "4.7G"')
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def format_size(n: float) -> str:
    """681574400 -> '650.0 MiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
