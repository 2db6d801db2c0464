"""Independent zstd frames: the unit that can be read alone.

The uncompressed stream is cut into frames of FRAME_SIZE input bytes, each compressed as its own zstd
frame (content size and checksum in the frame header, so a damaged frame is detected when read).
Frames are compressed on a thread pool — zstandard releases the GIL — and handed back strictly in
order, with at most a few in flight so memory stays flat whatever the data size. In an encrypted
set the same workers seal each compressed frame (mkrec.backup.encryption).

Data that is already compressed (archives, media, packages, encrypted files) costs zstd's level 3
four times the CPU of level 1 and gains nothing at either: a frame whose samples do not compress is
compressed at level 1 (still a real zstd frame, and still compressed where part of it can be).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import zstandard

FRAME_SIZE = 4 * 1024 * 1024
PROBE_SAMPLES = 4  # spread over the frame
PROBE_SIZE = 16 * 1024  # each; 1.5 % of a frame, compressed at level 1
PROBE_RATIO = 0.97  # samples that shrink less than 3 % mark the frame as incompressible
FAST_LEVEL = 1


@dataclass
class Frame:
    """One compressed frame and what came with its input: catalog lines of the members whose
    first header lies inside it."""

    uoffset: int
    usize: int
    data: bytes
    entries: list[str] = field(default_factory=list)


Seal = Callable[[bytes, int], bytes]  # a compressed frame and its uncompressed offset -> encrypted


def effective_threads(threads: int) -> int:
    return threads if threads > 0 else (os.cpu_count() or 1)


class FrameCompressor:
    """submit() raw frames in stream order; ready frames come back, in the same order, from
    submit() and close(). At most `2 * threads` frames are in flight."""

    def __init__(self, level: int = 3, threads: int = 0, seal: Seal | None = None) -> None:
        self.level = level
        self.seal = seal
        self.threads = effective_threads(threads)
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="zstd")
        self._pending: deque[tuple[Future[bytes], int, int, list[str], Callable[[], None] | None]] = deque()
        self._limit = 2 * self.threads

    def _contexts(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdCompressor]:
        # A ZstdCompressor is not thread-safe: one pair (configured, fast) per worker thread.
        pair = getattr(self._local, "pair", None)
        if pair is None:
            fast = min(self.level, FAST_LEVEL)
            pair = tuple(
                zstandard.ZstdCompressor(level=lvl, write_checksum=True, write_content_size=True)
                for lvl in (self.level, fast)
            )
            self._local.pair = pair
        return pair

    def _compress(self, raw: bytes | memoryview, uoffset: int) -> bytes:
        cctx, fast = self._contexts()
        if self.level > FAST_LEVEL and incompressible(raw, fast):
            cctx = fast
        data = bytes(cctx.compress(raw))
        return self.seal(data, uoffset) if self.seal else data

    def submit(
        self,
        raw: bytes | memoryview,
        uoffset: int,
        entries: list[str],
        release: Callable[[], None] | None = None,
    ) -> Iterator[Frame]:
        """`release` is called once `raw` is no longer needed: the caller may reuse its buffer."""
        future = self._pool.submit(self._compress, raw, uoffset)
        self._pending.append((future, uoffset, len(raw), entries, release))
        while self._pending and (len(self._pending) > self._limit or self._pending[0][0].done()):
            yield self._pop()

    def _pop(self) -> Frame:
        future, uoffset, usize, entries, release = self._pending.popleft()
        data = future.result()
        if release:
            release()
        return Frame(uoffset, usize, data, entries)

    def close(self) -> Iterator[Frame]:
        while self._pending:
            yield self._pop()
        self._pool.shutdown()

    def abort(self) -> None:
        for future, *_ in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)


def incompressible(raw: bytes | memoryview, fast: zstandard.ZstdCompressor) -> bool:
    """Do samples spread over `raw` fail to shrink even by PROBE_RATIO at the fast level?"""
    if len(raw) < PROBE_SAMPLES * PROBE_SIZE * 4:
        return False  # small frames: the probe would cost a noticeable share of the work
    step = (len(raw) - PROBE_SIZE) // (PROBE_SAMPLES - 1)
    view = memoryview(raw)
    packed = sum(len(fast.compress(view[i * step : i * step + PROBE_SIZE])) for i in range(PROBE_SAMPLES))
    return packed >= PROBE_RATIO * PROBE_SAMPLES * PROBE_SIZE


class FrameError(ValueError):
    pass


def decompress_frame(data: bytes, usize: int) -> bytes:
    """One frame back to its input; FrameError when it is damaged (zstd checksum) or short."""
    try:
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=usize)
    except zstandard.ZstdError as exc:
        raise FrameError(str(exc)) from None
    if len(out) != usize:
        raise FrameError(f"frame gives {len(out)} bytes, the index says {usize}")
    return out
