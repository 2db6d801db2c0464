"""One stream through Python: read the source (tar's stdout, or a device image), catalog the tar
members as they go by, cut the bytes into frames, compress them on all cores and hand them to
cutstream in order.

No checksum of the whole uncompressed stream is kept: every zstd frame carries its own (XXH64 of
its content, checked when it is decompressed) and its size is in the frame index, and every piece
has its SHA-256 and CRC32. A SHA-256 over every byte would add a tenth to the CPU time of a backup
on two cores and catch nothing those miss."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mkrec.backup.catalog import entry_line
from mkrec.backup.cutstream import CutStream
from mkrec.backup.frames import FRAME_SIZE, Frame, FrameCompressor, Seal
from mkrec.backup.tarscan import Entry, TarScanner

READ_AHEAD = 4  # frames read ahead of the compressors
PIPE_SIZE = 1024 * 1024  # the default pipe size (64 KiB) costs a wake-up of tar and of us every 64 KiB


def widen_pipe(fd: int) -> None:
    """Grow a pipe's buffer; a no-op where the kernel refuses (then it just costs more wake-ups)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def fill(source: Readable, buf: bytearray) -> int:
    """Read into buf until it is full or the source ends; the number of bytes read."""
    view = memoryview(buf)
    n = 0
    while n < len(buf):
        got = source.readinto(view[n:])
        if not got:
            break
        n += got
    return n


@dataclass(frozen=True)
class StreamSummary:
    size: int
    entries: int


def pump(
    source: Readable,
    stream: str,
    cut: CutStream,
    *,
    level: int = 3,
    threads: int = 0,
    frame_size: int = FRAME_SIZE,
    scan_tar: bool = True,
    first_lines: list[str] | None = None,
    on_frame: Callable[[Frame], None] | None = None,
    progress: Callable[[int], None] | None = None,
    seal: Seal | None = None,
) -> StreamSummary:
    """Read `source` to its end through frames into `cut` (whose stream must be started).

    Catalog lines are attached to the frame holding the member's first header, so they land in
    the catalog of the volume that holds it. For an image (scan_tar=False), `first_lines` (its one catalog
    line) go with the first frame. `seal` encrypts each compressed frame (encrypted sets)."""
    pending: deque[Entry] = deque()
    scanner = TarScanner(pending.append) if scan_tar else None
    compressor = FrameCompressor(level, threads, seal)
    start = 0  # uncompressed offset of the next frame
    count = 0
    # Frames are read into a fixed set of buffers that go back to the pool once compressed: no
    # fresh 4 MiB allocation (and its page faults) per frame, and the pool bounds memory and
    # read-ahead. A reader thread keeps tar's pipe drained while this thread scans, hands frames to
    # the compressors and writes pieces.
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(2 * compressor.threads + READ_AHEAD + 2):
        free.put(bytearray(frame_size))
    chunks: queue.Queue[tuple[bytearray, int] | BaseException] = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                buf = free.get()
                n = fill(source, buf)
                chunks.put((buf, n))
                if not n:
                    return
        except BaseException as exc:
            chunks.put(exc)

    def emit(raw: memoryview, release: Callable[[], None] | None) -> None:
        nonlocal start, count
        end = start + len(raw)
        lines = list(first_lines or []) if start == 0 else []
        while pending and pending[0].offset < end:
            lines.append(entry_line(stream, pending.popleft()))
        count += len(lines)
        for frame in compressor.submit(raw, start, lines, release):
            deliver(frame)
        start = end

    def deliver(frame: Frame) -> None:
        if on_frame:
            on_frame(frame)
        cut.add(frame)

    reader = threading.Thread(target=read, name="stream-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = chunks.get()
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            if not n:
                break
            view = memoryview(buf)[:n]
            if scanner:
                scanner.feed(view)
            emit(view, functools.partial(free.put, buf))
            if progress:
                progress(start)
        if start == 0:
            emit(memoryview(b""), None)  # an empty source is still one (empty) frame: every stream has one
        for frame in compressor.close():
            deliver(frame)
    except BaseException:
        stop.set()
        compressor.abort()
        free.put(bytearray(frame_size))  # let a reader waiting for a buffer see stop
        raise
    reader.join()
    return StreamSummary(start, count)
