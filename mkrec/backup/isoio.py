"""The file objects pycdlib reads a placed volume's pieces from and writes its image through: a piece
already in the image is skipped over (Span), read back (Window) or stands in by its size alone."""

from __future__ import annotations

import io
import os


class Span:
    """Stands for `n` bytes that are already in the image: the writer skips over them."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class _Source:
    mode = "rb"  # pycdlib wants to see a binary file

    def __init__(self, size: int) -> None:
        self.size = size
        self.pos = 0

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self.pos = (
            pos if whence == os.SEEK_SET else (self.pos + pos if whence == os.SEEK_CUR else self.size + pos)
        )
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _take(self, n: int) -> int:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        self.pos += n
        return n


class InPlace(_Source):
    """A placed piece as pycdlib's data source: reading yields Spans, never bytes."""

    def read(self, n: int = -1) -> Span:
        return Span(self._take(n))


class Window(_Source):
    """A placed piece read for real, for the ordinary way of writing (`size` bytes at `offset`)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__(size)
        self.fd = fd
        self.offset = offset

    def read(self, n: int = -1) -> bytes:
        start = self.offset + self.pos
        return os.pread(self.fd, self._take(n), start)


class Placeholder(_Source):
    """A file known only by its size (sizing a layout before the file exists)."""

    def read(self, n: int = -1) -> bytes:
        return bytes(self._take(n))


class SkipWriter:
    """pycdlib's output file: bytes are written, Spans skipped (their bytes are there already)."""

    def __init__(self, fh: io.BufferedRandom) -> None:
        self.fh = fh

    def write(self, data: bytes | Span) -> int:
        if isinstance(data, Span):
            self.fh.seek(len(data), os.SEEK_CUR)
            return len(data)
        return self.fh.write(data)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        return self.fh.seek(pos, whence)

    def tell(self) -> int:
        return self.fh.tell()
