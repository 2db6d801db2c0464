"""One stream through Python: read the source (tar's stdout, or a device image), keep a running
SHA-256, catalog the tar members as they go by, cut the bytes into frames, compress them on all
cores and hand them to cutstream in order."""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from mkrec.backup.catalog import entry_line
from mkrec.backup.cutstream import CutStream
from mkrec.backup.frames import FRAME_SIZE, Frame, FrameCompressor
from mkrec.backup.tarscan import Entry, TarScanner


@dataclass(frozen=True)
class StreamSummary:
    size: int
    sha256: str
    entries: int


def pump(
    source: BinaryIO,
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
) -> StreamSummary:
    """Read `source` to its end through frames into `cut` (whose stream must be started).

    Catalog lines are attached to the frame holding the member's first header, so they land in
    the catalog of the volume that holds it. For an image (scan_tar=False), `first_lines` (its one catalog
    line) go with the first frame."""
    sha = hashlib.sha256()
    pending: list[Entry] = []
    scanner = TarScanner(pending.append) if scan_tar else None
    compressor = FrameCompressor(level, threads)
    start = 0  # uncompressed offset of the next frame
    count = 0
    # A reader thread keeps tar's pipe drained (and hashes: hashlib releases the GIL) while this
    # thread scans, hands frames to the compressors and writes pieces.
    chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                chunk = source.read(frame_size)
                if chunk:
                    sha.update(chunk)
                chunks.put(chunk)
                if not chunk:
                    return
        except BaseException as exc:
            chunks.put(exc)

    def emit(raw: bytes) -> None:
        nonlocal start, count
        end = start + len(raw)
        lines = list(first_lines or []) if start == 0 else []
        while pending and pending[0].offset < end:
            lines.append(entry_line(stream, pending.pop(0)))
        count += len(lines)
        for frame in compressor.submit(raw, start, lines):
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
            chunk = chunks.get()
            if isinstance(chunk, BaseException):
                raise chunk
            if not chunk:
                break
            if scanner:
                scanner.feed(chunk)
            emit(chunk)
            if progress:
                progress(start)
        if start == 0:
            emit(b"")  # an empty source is still one (empty) frame: every stream has a piece
        for frame in compressor.close():
            deliver(frame)
    except BaseException:
        stop.set()
        compressor.abort()
        with contextlib.suppress(queue.Empty):
            chunks.get_nowait()  # let a blocked reader finish its put and see stop
        raise
    reader.join()
    return StreamSummary(start, sha.hexdigest(), count)
