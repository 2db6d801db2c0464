"""Encrypted sets: every zstd frame and every catalog sealed on its own with ChaCha20-Poly1305 under
the set's random data key (mkrec.backup.setkey wraps that key for the people who may open the set).

Frames stay independent, so extracting one file, a missing volume and a resumed restore work as in a
plain set. Each stream gets its own key, derived from the data key and the stream's name (unique
in a set), and a frame's nonce is its uncompressed offset in the stream: a (key, nonce) pair is
never used twice. The associated data binds the set id, the stream and the offset, so a frame
moved to another place, stream or set fails to open, as does any changed byte."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mkrec.backup.frames import FrameError

CIPHER = "chacha20-poly1305"
KEY_SIZE = 32
TAG_SIZE = 16  # what sealing adds to every frame and catalog
FULL_CATALOG_SLOT = 0  # the whole-set catalog's nonce; a volume's catalog part uses its number (1...)


def _derive(key: bytes, purpose: str) -> ChaCha20Poly1305:
    sub = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=purpose.encode()).derive(key)
    return ChaCha20Poly1305(sub)


def _nonce(number: int) -> bytes:
    return number.to_bytes(12, "big")


@dataclass(frozen=True)
class StreamCipher:
    """Seals and opens the frames of one stream; safe to use from several threads."""

    aead: ChaCha20Poly1305
    set_id: str
    stream: str

    def _ad(self, uoffset: int) -> bytes:
        return f"mkrec frame\0{self.set_id}\0{self.stream}\0{uoffset}".encode()

    def seal(self, data: bytes, uoffset: int) -> bytes:
        return self.aead.encrypt(_nonce(uoffset), data, self._ad(uoffset))

    def open(self, data: bytes, uoffset: int) -> bytes:
        """The frame's compressed bytes; FrameError naming the stream and frame when any byte is
        changed, the frame is not the one at uoffset, or it belongs to another set."""
        try:
            return self.aead.decrypt(_nonce(uoffset), data, self._ad(uoffset))
        except InvalidTag:
            raise FrameError(
                f"stream {self.stream}, frame at offset {uoffset}: fails authentication "
                "(changed, moved or from another set)"
            ) from None


class SetCipher:
    """The data key of one set: stream ciphers and the catalogs' sealing."""

    def __init__(self, key: bytes, set_id: str) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a data key has {KEY_SIZE} bytes, not {len(key)}")
        self.set_id = set_id
        self._key = key
        self._catalogs = _derive(key, f"mkrec catalog {set_id}")
        self._streams: dict[str, StreamCipher] = {}

    def __repr__(self) -> str:  # never the key, whatever prints this
        return f"SetCipher(set {self.set_id})"

    def stream(self, name: str) -> StreamCipher:
        if name not in self._streams:
            aead = _derive(self._key, f"mkrec stream {self.set_id} {name}")
            self._streams[name] = StreamCipher(aead, self.set_id, name)
        return self._streams[name]

    def _catalog_ad(self, slot: int) -> bytes:
        return f"mkrec catalog\0{self.set_id}\0{slot}".encode()

    def seal_catalog(self, data: bytes, slot: int) -> bytes:
        """slot: the volume number of a catalog part, FULL_CATALOG_SLOT for the whole-set catalog."""
        return self._catalogs.encrypt(_nonce(slot), data, self._catalog_ad(slot))

    def open_catalog(self, data: bytes, slot: int, where: str) -> bytes:
        try:
            return self._catalogs.decrypt(_nonce(slot), data, self._catalog_ad(slot))
        except InvalidTag:
            raise FrameError(f"{where}: fails authentication (changed, or of another set)") from None
