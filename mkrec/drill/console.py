"""A QEMU guest run by the drill: the process, its serial console read by a thread, and a wait for
the first of several patterns with a hard deadline and a progress line (phase, elapsed, last line)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from mkrec.drill.report import clean_console
from mkrec.runner import popen

Tick = Callable[[float, str], None]  # (seconds into the phase, last console line)


@dataclass(frozen=True)
class Seen:
    name: str  # the pattern's name, "exit" (QEMU stopped) or "timeout"
    text: str  # what matched; the exit code or the timeout for the other two
    at: int  # offset in the console text (its end for exit and timeout)


class Guest:
    """One QEMU process whose stdio is the guest's first serial port."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._out = bytearray()
        self._err = bytearray()
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: object, into: bytearray) -> None:
        read = stream.read1  # type: ignore[attr-defined]
        while chunk := read(4096):
            with self._lock:
                into += chunk

    def text(self) -> str:
        with self._lock:
            return self._out.decode(errors="replace").replace("\r", "")

    def errors(self) -> str:
        with self._lock:
            return self._err.decode(errors="replace").strip()

    def last_line(self) -> str:
        """The last line drawn, as a person would see it: a progress bar redraws with \\r."""
        with self._lock:
            tail = self._out[-4096:].decode(errors="replace")
        lines = [x.strip() for x in re.split(r"[\r\n]+", clean_console(tail)) if x.strip()]
        return lines[-1] if lines else ""

    def send(self, line: str) -> None:
        if self.proc.stdin is not None and self.proc.poll() is None:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()

    def exited(self) -> int | None:
        code = self.proc.poll()
        if code is not None:
            for t in self._readers:  # what it printed last is read before anyone looks
                t.join(timeout=5)
        return code

    def wait(
        self, patterns: dict[str, str], timeout: float, since: int = 0, tick: Tick | None = None
    ) -> Seen:
        """The first of patterns (name -> regex) seen after offset since, or QEMU's exit, or the
        timeout: never longer than timeout seconds."""
        compiled = {name: re.compile(p) for name, p in patterns.items()}
        start = time.monotonic()
        while True:
            code = self.exited()
            text = self.text()
            found = [(m.start(), name, m) for name, r in compiled.items() if (m := r.search(text, since))]
            if found:
                _, name, m = min(found, key=lambda f: f[0])
                return Seen(name, m.group(0), m.end())
            if code is not None:
                return Seen("exit", str(code), len(text))
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                return Seen("timeout", f"{timeout:.0f}", len(text))
            if tick is not None:
                tick(elapsed, self.last_line())
            time.sleep(0.25)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.exited()

    def __enter__(self) -> Guest:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


class Ticker:
    """The progress line: redrawn on a terminal, a plain line every `interval` seconds elsewhere."""

    def __init__(self, interval: float = 15.0) -> None:
        self.tty = sys.stderr.isatty()
        self.interval = 1.0 if self.tty else interval
        self.last = 0.0

    def for_phase(self, phase: str) -> Tick:
        def tick(elapsed: float, line: str) -> None:
            now = time.monotonic()
            if now - self.last < self.interval:
                return
            self.last = now
            m, s = divmod(int(elapsed), 60)
            text = f"drill: {phase} {m:02d}:{s:02d}  {line[:80]}"
            sys.stderr.write(f"\r\033[K{text}" if self.tty else text + "\n")
            sys.stderr.flush()

        return tick

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
