"""Encrypted sets, the parts without disks: frames and catalogs sealed and opened (a changed byte,
a moved frame, another set fail, naming the stream and frame), the data key wrapped with age and
unwrapped with an identity file or a passphrase, and the [security] checks' one-line errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyrage
import pytest
from pytest_subprocess import FakeProcess

from mkrec.backup.cutstream import Capacity, CutStream, PieceFile, VolumeContent
from mkrec.backup.encryption import FULL_CATALOG_SLOT, TAG_SIZE, SetCipher
from mkrec.backup.frames import FrameError, decompress_frame
from mkrec.backup.manifest import Encryption, KeyKind, Manifest, parse_manifest
from mkrec.backup.setkey import (
    describe_security,
    new_set_key,
    unwrap_key,
    unwrap_with_passphrase,
    wrap_with_passphrase,
)
from mkrec.backup.stream import pump
from mkrec.config import SecurityConfig, config_from_dict
from mkrec.context import Context
from mkrec.errors import MkrecError
from mkrec.preflight import Status, check_security, require_config_ready

SET = "0f1e2d3c-aaaa-bbbb-cccc-000000000001"


def cipher(set_id: str = SET) -> SetCipher:
    return SetCipher(bytes(range(32)), set_id)


def test_frame_round_trip_and_size() -> None:
    s = cipher().stream("sda1.ext4.tar.zst")
    sealed = s.seal(b"compressed frame", 4 << 20)
    assert len(sealed) == len(b"compressed frame") + TAG_SIZE
    assert b"compressed" not in sealed
    assert s.open(sealed, 4 << 20) == b"compressed frame"


def test_changed_byte_names_stream_and_frame() -> None:
    s = cipher().stream("sda1.ext4.tar.zst")
    sealed = bytearray(s.seal(b"x" * 1000, 8 << 20))
    sealed[500] ^= 1
    with pytest.raises(FrameError, match=r"stream sda1.ext4.tar.zst, frame at offset 8388608: fails auth"):
        s.open(bytes(sealed), 8 << 20)


def test_swapped_frames_other_stream_other_set_fail() -> None:
    s = cipher().stream("sda1.ext4.tar.zst")
    first, second = s.seal(b"first", 0), s.seal(b"second", 4 << 20)
    with pytest.raises(FrameError, match="offset 0"):
        s.open(second, 0)  # frames swapped in a piece
    with pytest.raises(FrameError):
        s.open(first, 4 << 20)
    with pytest.raises(FrameError):
        cipher().stream("sda2.ext4.tar.zst").open(first, 0)  # a frame of another stream
    with pytest.raises(FrameError):
        cipher("0f1e2d3c-aaaa-bbbb-cccc-000000000002").stream("sda1.ext4.tar.zst").open(first, 0)


def test_nonces_never_repeat_across_streams() -> None:
    # the same plaintext at the same offset of two streams: different ciphertext (per-stream keys)
    c = cipher()
    assert c.stream("a").seal(b"same", 0) != c.stream("b").seal(b"same", 0)


def test_catalogs_sealed_per_volume() -> None:
    c = cipher()
    part = c.seal_catalog(b'{"path":"etc/shadow"}\n', 2)
    assert b"shadow" not in part
    assert c.open_catalog(part, 2, "vol2") == b'{"path":"etc/shadow"}\n'
    with pytest.raises(FrameError, match="vol3: fails authentication"):
        c.open_catalog(part, 3, "vol3")  # another volume's part
    with pytest.raises(FrameError):
        c.open_catalog(part, FULL_CATALOG_SLOT, "all")


def test_key_never_in_repr() -> None:
    assert bytes(range(32)).hex() not in repr(cipher()) and "\\x00\\x01" not in repr(cipher())


class MemoryStore:
    def __init__(self) -> None:
        self.pieces: dict[str, io.BytesIO] = {}

    def open_piece(self, volume: int, name: str) -> PieceFile:
        self.pieces[name] = io.BytesIO()
        self.pieces[name].close = lambda: None  # type: ignore[method-assign]
        return self.pieces[name]

    def close_piece(self, volume: int, name: str, fh: PieceFile) -> None:
        pass

    def close_volume(self, content: VolumeContent) -> None:
        pass


def test_pump_seals_every_frame_in_place() -> None:
    data = os.urandom(300_000) + b"A" * 500_000
    store = MemoryStore()
    cut = CutStream(store, Capacity(0, 0))
    cut.start_stream("s")
    c = cipher()
    pump(io.BytesIO(data), "s", cut, frame_size=200_000, scan_tar=False, seal=c.stream("s").seal, threads=2)
    piece = cut.end_stream().pieces[0]
    raw = store.pieces[piece.name].getvalue()
    out, pos, upos = b"", 0, 0
    for csize, usize in piece.frames:
        out += decompress_frame(c.stream("s").open(raw[pos : pos + csize], upos), usize)
        pos, upos = pos + csize, upos + usize
    assert out == data
    assert b"A" * 64 not in raw


# ---- the data key ----


@pytest.fixture
def keys(tmp_path: Path) -> tuple[str, Path, Path]:
    ident = pyrage.x25519.Identity.generate()
    id_file = tmp_path / "key.txt"
    id_file.write_text(f"# created: now\n# public key: {ident.to_public()}\n{ident}\n")
    pass_file = tmp_path / "pass"
    pass_file.write_text("correct horse battery staple\n")
    pass_file.chmod(0o600)
    return str(ident.to_public()), id_file, pass_file


def security(**values: object) -> SecurityConfig:
    return config_from_dict({"security": {"encrypt": "age", **values}}).security


def test_wrap_for_recipient_and_passphrase(keys: tuple[str, Path, Path], fp: FakeProcess) -> None:
    # fp: any command started here would fail the test: the key and the passphrase never reach a
    # command line (/proc/*/cmdline), age runs in this process (pyrage)
    public, id_file, pass_file = keys
    key, enc = new_set_key(security(recipients=[public], passphrase_file=str(pass_file)))
    assert [k.kind for k in enc.keys] == [KeyKind.X25519, KeyKind.SCRYPT]
    assert enc.keys[0].recipients == [public]
    # what the manifest holds: the key wrapped, never in the clear, never the passphrase
    text = Manifest("id", "n", "h", "d", "path", 1, 1, [], "c", encryption=enc).to_json()
    assert key.hex() not in text and "horse" not in text
    assert parse_manifest(text, "m").encryption == enc
    assert unwrap_key(enc, "CDrec-x", id_file) == key
    assert unwrap_key(enc, "CDrec-x", pass_file) == key  # a file holding the passphrase


def test_passphrase_wrapping_has_a_fixed_work_factor() -> None:
    key = os.urandom(32)
    blob = wrap_with_passphrase(key, "pass phrase")
    assert blob[0] == 17 and key not in blob
    assert unwrap_with_passphrase(blob, "pass phrase") == key
    assert unwrap_with_passphrase(blob, "pass phrase ") is None
    assert unwrap_with_passphrase(bytes([30]) + blob[1:], "pass phrase") is None  # a damaged N: refused
    assert unwrap_with_passphrase(blob[:-1], "pass phrase") is None


def test_wrong_identity_is_one_line(keys: tuple[str, Path, Path], tmp_path: Path) -> None:
    public, _id, _pass = keys
    _key, enc = new_set_key(security(recipients=[public]))
    other = tmp_path / "other.txt"
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    with pytest.raises(MkrecError) as err:
        unwrap_key(enc, "CDrec-20260314-1509", other)
    assert err.value.message == f"--identity {other} does not open backup set CDrec-20260314-1509"
    assert public in (err.value.hint or "")
    with pytest.raises(MkrecError, match="no such file"):
        unwrap_key(enc, "CDrec-x", tmp_path / "nope")


def test_no_identity_without_terminal_says_what_to_give(keys: tuple[str, Path, Path]) -> None:
    public, _id, _pass = keys
    _key, enc = new_set_key(security(recipients=[public]))
    with pytest.raises(MkrecError, match="is encrypted: give --identity FILE"):
        unwrap_key(enc, "CDrec-x", None)  # pytest's stdin is not a terminal


def test_on_a_terminal_the_person_is_asked(
    keys: tuple[str, Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    public, id_file, pass_file = keys
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    # recipients only: the path of the identity file (a USB stick mounted in the rescue system)
    key, enc = new_set_key(security(recipients=[public]))
    answers = iter(["/nowhere/key.txt", "", str(id_file)])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert unwrap_key(enc, "CDrec-x", None) == key  # a wrong path and an empty answer: asked again
    assert "identity file /nowhere/key.txt: no such file" in capsys.readouterr().out
    # a passphrase: asked hidden (getpass), three tries
    key, enc = new_set_key(security(passphrase_file=str(pass_file)))
    typed = iter(["wrong", "correct horse battery staple"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(typed))
    assert unwrap_key(enc, "CDrec-x", None) == key
    assert "That does not open the set." in capsys.readouterr().out
    monkeypatch.setattr("getpass.getpass", lambda prompt: "wrong")
    with pytest.raises(MkrecError, match="backup set CDrec-x: not opened"):
        unwrap_key(enc, "CDrec-x", None)


def test_security_config_errors(keys: tuple[str, Path, Path], tmp_path: Path) -> None:
    public, id_file, pass_file = keys
    assert "not encrypted" in describe_security(config_from_dict({}).security)
    assert "1 age recipient(s)" in describe_security(security(recipients=[public]))
    with pytest.raises(MkrecError, match=r"'age1nope' is not an age public key"):
        describe_security(security(recipients=["age1nope"]))
    secret = id_file.read_text().splitlines()[-1]
    with pytest.raises(MkrecError) as err:
        describe_security(security(recipients=[secret]))
    assert secret not in str(err.value)  # a secret pasted by mistake is not echoed into logs
    with pytest.raises(MkrecError, match="needs recipients or a passphrase_file"):
        describe_security(security())
    pass_file.chmod(0o644)
    with pytest.raises(MkrecError, match=r"readable by others \(mode 644\)"):
        describe_security(security(passphrase_file=str(pass_file)))
    with pytest.raises(MkrecError, match="no such file"):
        describe_security(security(passphrase_file=str(tmp_path / "none")))
    with pytest.raises(MkrecError, match="not allowed"):
        config_from_dict({"security": {"encrypt": "gpg"}})


def test_preflight_and_build_refuse_a_bad_security_section(tmp_path: Path) -> None:
    ctx = Context(config_from_dict({"security": {"encrypt": "age", "recipients": ["ssh-rsa AAAA"]}}))
    (row,) = list(check_security(ctx))
    assert (row.status, row.detail) == (
        Status.FAIL,
        "[security] recipients: 'ssh-rsa AAAA' is not an age public key",
    )
    with pytest.raises(MkrecError, match="is not an age public key"):
        require_config_ready(ctx)  # mkrec build: before any work
    (row,) = list(check_security(Context(config_from_dict({}))))
    assert row.status is Status.PASS


def test_manifest_rejects_unknown_key_kind() -> None:
    enc = Encryption("chacha20-poly1305", [])
    text = Manifest("id", "n", "h", "d", "path", 1, 1, [], "c", encryption=enc).to_json()
    assert parse_manifest(text, "m").encryption == enc
    bad = text.replace('"keys": []', '"keys": [{"kind": "rsa", "recipients": [], "data": ""}]')
    with pytest.raises(MkrecError, match="unknown key kind 'rsa'"):
        parse_manifest(bad, "m")
