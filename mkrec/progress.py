"""Progress for long work: bytes, rate, ETA, and an optional 'volume N' tag.

Library-like code (cutstream, the ISO writer) takes a plain callback `progress(done, total)`;
the CLI passes a Progress instance's update method. On a terminal the line is redrawn in place;
elsewhere (CI, a log) a plain line is printed every `interval` seconds and at the end; under
systemd's journal only the line at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from mkrec.log import stderr_is_journal
from mkrec.sizes import format_size

ProgressCallback = Callable[[int, int], None]


def format_eta(seconds: float) -> str:
    if seconds < 0 or seconds != seconds or seconds > 99 * 3600:
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(
        self,
        label: str,
        total: int = 0,
        *,
        stream: TextIO | None = None,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        # Under systemd the journal keeps every line: only the final one is worth keeping there.
        self.interval = 0.2 if self.tty else float("inf") if stderr_is_journal() else interval
        self.clock = clock
        self.start = clock()
        self.last_print = self.start
        self.done = 0
        self.tag = ""

    def line(self) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        parts = [self.label]
        if self.tag:
            parts.append(self.tag)
        if self.total:
            pct = 100.0 * self.done / self.total
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            parts.append(f"{format_size(self.done)} of {format_size(self.total)} ({pct:.0f}%)")
            parts.append(f"{format_size(rate)}/s")
            parts.append(f"ETA {format_eta(eta)}")
        else:
            parts.append(f"{format_size(self.done)}")
            parts.append(f"{format_size(rate)}/s")
        return "  ".join(parts)

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total:
            self.total = total
        if self.total and done > self.total:  # totals are estimates (used blocks): never show 101%
            self.total = done
        now = self.clock()
        if now - self.last_print >= self.interval:
            self.last_print = now
            self._emit()

    def set_tag(self, tag: str) -> None:
        self.tag = tag

    def _emit(self, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        self._emit(final=True)
