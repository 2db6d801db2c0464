"""A remote file as a seekable, read-only file object: every read becomes a ranged fetch of the
bytes asked for (an HTTP Range request, an `ssh dd` of the span), so pycdlib can open an ISO volume
over the network and a FrameReader reads only the frames it needs. A few recent windows are kept,
and sequential reading fetches ever larger spans (read-ahead) so a verify streams at line speed."""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable

Fetch = Callable[[int, int], bytes]  # (offset, length) -> exactly those bytes (fewer only at the end)

FIRST_SPAN = 64 * 1024  # a seek elsewhere (ISO directory records, a frame) fetches this much at least
MAX_SPAN = 8 * 1024 * 1024  # sequential reading doubles the span up to this
WINDOWS = 4  # recent spans kept: pycdlib goes back and forth between a few sectors


class RangeFile(io.RawIOBase):
    def __init__(self, name: str, size: int, fetch: Fetch) -> None:
        super().__init__()
        self.name = name
        self.size = size
        self._fetch = fetch
        self._pos = 0
        self._span = FIRST_SPAN
        self._next_sequential = -1  # where the last fetched span ended
        self._windows: OrderedDict[int, bytes] = OrderedDict()  # start -> bytes

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buf).cast("B")
        done = 0
        while done < len(view) and self._pos < self.size:
            chunk = self._bytes_at(self._pos, len(view) - done)
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self._pos += len(chunk)
        return done

    def _bytes_at(self, pos: int, wanted: int) -> bytes:
        """Some bytes from pos on (at most wanted): from a kept window, else from a new fetch."""
        for start, data in self._windows.items():
            if start <= pos < start + len(data):
                self._windows.move_to_end(start)
                return data[pos - start : pos - start + wanted]
        self._span = min(self._span * 2, MAX_SPAN) if pos == self._next_sequential else FIRST_SPAN
        length = min(max(wanted, self._span), self.size - pos)
        data = self._fetch(pos, length)
        if not data:
            raise OSError(f"{self.name}: no data at offset {pos} (shorter than its {self.size} bytes)")
        self._next_sequential = pos + len(data)
        self._windows[pos] = data
        while len(self._windows) > WINDOWS:
            self._windows.popitem(last=False)
        return data[:wanted]
