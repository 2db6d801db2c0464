"""The data key of an encrypted set: made at random for each set, wrapped with age (pyrage, in this
process) for the [security] recipients and/or with the passphrase, kept wrapped in every manifest,
and unwrapped with an identity file (--identity) or a passphrase typed on the console.

The passphrase wraps the key with scrypt (fixed N = 2^17, r = 8, p = 1) and ChaCha20-Poly1305 rather
than age's scrypt recipient: age's decryptors refuse a work factor above what they measure this
machine to do in about a second, so a slow rescue machine (or an emulator) would refuse the set.

The key and the passphrase never reach a log, a file in the clear or a command line."""

from __future__ import annotations

import base64
import contextlib
import getpass
import os
import stat
import sys
from pathlib import Path

import pyrage
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mkrec.backup.encryption import CIPHER, KEY_SIZE, TAG_SIZE, SetCipher
from mkrec.backup.manifest import Encryption, KeyKind, WrappedKey
from mkrec.backup.setreader import BackupSet
from mkrec.config import Encrypt, SecurityConfig
from mkrec.errors import MkrecError

SECRET_PREFIX = "AGE-SECRET-KEY-"
TRIES = 3  # passphrases typed on the console
SCRYPT_LOG_N = 17  # 128 MiB and about half a second on a PC; recorded with each wrapped key
SCRYPT_LOG_N_MAX = 22  # what a reader accepts: a damaged manifest cannot ask for 4 GiB
SALT_SIZE = 16
PASSPHRASE_AD = b"mkrec passphrase"


def parse_recipients(texts: tuple[str, ...] | list[str]) -> list[pyrage.x25519.Recipient]:
    out = []
    for text in texts:
        try:
            out.append(pyrage.x25519.Recipient.from_str(text.strip()))
        except pyrage.RecipientError:
            shown = text if not text.startswith(SECRET_PREFIX) else "AGE-SECRET-KEY-…"
            raise MkrecError(
                f"[security] recipients: {shown!r} is not an age public key",
                hint='give public keys as age-keygen prints them ("age1…"), never the secret key',
            ) from None
    return out


def read_passphrase_file(path: Path) -> str:
    """The passphrase on the file's first line; the file must be readable by its owner alone."""
    where = f"[security] passphrase_file {path}"
    try:
        mode = path.stat().st_mode
        with open(path, encoding="utf-8") as fh:
            line = fh.readline().rstrip("\r\n")
    except FileNotFoundError:
        raise MkrecError(
            f"{where}: no such file", hint='create it (mode 600) or set passphrase_file = ""'
        ) from None
    except (OSError, UnicodeError) as exc:
        raise MkrecError(f"{where}: cannot read it ({exc.__class__.__name__})") from None
    if not stat.S_ISREG(mode):
        raise MkrecError(f"{where}: not a regular file")
    if mode & 0o077:
        raise MkrecError(
            f"{where}: readable by others (mode {stat.S_IMODE(mode):o})", hint=f"chmod 600 {path}"
        )
    if not line:
        raise MkrecError(f"{where}: the first line (the passphrase) is empty")
    return line


def describe_security(cfg: SecurityConfig) -> str:
    """Raise MkrecError for a [security] section that cannot encrypt; say what it will do."""
    if cfg.encrypt is Encrypt.NONE:
        return 'backup sets are not encrypted ([security] encrypt = "none")'
    recipients = parse_recipients(cfg.recipients)
    if cfg.passphrase_file is not None:
        read_passphrase_file(cfg.passphrase_file)
    if not recipients and cfg.passphrase_file is None:
        raise MkrecError(
            '[security] encrypt = "age" needs recipients or a passphrase_file',
            hint='add recipients = ["age1…"] (age-keygen prints one) or passphrase_file = "/root/mkrec.pass"',
        )
    ways = [f"{len(recipients)} age recipient(s)"] if recipients else []
    ways += ["a passphrase"] if cfg.passphrase_file is not None else []
    return f"sets are encrypted; their key is wrapped for {' and '.join(ways)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _passphrase_aead(passphrase: str, salt: bytes, log_n: int) -> ChaCha20Poly1305:
    kek = Scrypt(salt=salt, length=KEY_SIZE, n=1 << log_n, r=8, p=1).derive(passphrase.encode())
    return ChaCha20Poly1305(kek)


def wrap_with_passphrase(key: bytes, passphrase: str) -> bytes:
    """log2(N) (one byte), the salt, the sealed key. Each salt makes a new key-encryption key, used
    once: a fixed nonce is safe."""
    salt = os.urandom(SALT_SIZE)
    sealed = _passphrase_aead(passphrase, salt, SCRYPT_LOG_N).encrypt(bytes(12), key, PASSPHRASE_AD)
    return bytes([SCRYPT_LOG_N]) + salt + sealed


def unwrap_with_passphrase(blob: bytes, passphrase: str) -> bytes | None:
    """The key, or None when the passphrase (or the blob) is not the right one."""
    if len(blob) != 1 + SALT_SIZE + KEY_SIZE + TAG_SIZE or not 10 <= blob[0] <= SCRYPT_LOG_N_MAX:
        return None
    log_n, salt, sealed = blob[0], blob[1 : 1 + SALT_SIZE], blob[1 + SALT_SIZE :]
    try:
        return _passphrase_aead(passphrase, salt, log_n).decrypt(bytes(12), sealed, PASSPHRASE_AD)
    except InvalidTag:
        return None


def new_set_key(cfg: SecurityConfig) -> tuple[bytes, Encryption]:
    """A random data key and the manifest's record of it, wrapped."""
    describe_security(cfg)
    key = os.urandom(KEY_SIZE)
    keys = []
    if cfg.recipients:
        wrapped = pyrage.encrypt(key, parse_recipients(cfg.recipients))
        keys.append(WrappedKey(KeyKind.X25519, [r.strip() for r in cfg.recipients], _b64(wrapped)))
    if cfg.passphrase_file is not None:
        wrapped = wrap_with_passphrase(key, read_passphrase_file(cfg.passphrase_file))
        keys.append(WrappedKey(KeyKind.SCRYPT, [], _b64(wrapped)))
    return key, Encryption(CIPHER, keys)


# ---- opening a set ----


def _who(enc: Encryption) -> str:
    """Whom the set opens for, for the error line."""
    parts = [r for k in enc.keys for r in k.recipients]
    if any(k.kind is KeyKind.SCRYPT for k in enc.keys):
        parts.append("its passphrase")
    return ", ".join(parts)


def _identities(path: Path, what: str = "--identity") -> tuple[list[pyrage.x25519.Identity], str]:
    """The age identities in an identity file, else its first line as a passphrase."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MkrecError(f"{what} {path}: no such file") from None
    except (OSError, UnicodeError) as exc:
        raise MkrecError(f"{what} {path}: cannot read it ({exc.__class__.__name__})") from None
    secrets = [line.strip() for line in lines if line.strip().startswith(SECRET_PREFIX)]
    identities = []
    for n, secret in enumerate(secrets, 1):
        try:
            identities.append(pyrage.x25519.Identity.from_str(secret))
        except pyrage.IdentityError:
            raise MkrecError(f"{what} {path}: secret key {n} is not a valid age identity") from None
    return identities, "" if identities else (lines[0] if lines else "")


def _try(enc: Encryption, identities: list[pyrage.x25519.Identity], passphrase: str) -> bytes | None:
    for wrapped in enc.keys:
        data = base64.b64decode(wrapped.data)
        key = None
        if wrapped.kind is KeyKind.X25519 and identities:
            with contextlib.suppress(pyrage.DecryptError):
                key = bytes(pyrage.decrypt(data, identities))
        elif wrapped.kind is KeyKind.SCRYPT and passphrase:
            key = unwrap_with_passphrase(data, passphrase)
        if key is not None:
            return key
    return None


def unwrap_key(enc: Encryption, set_name: str, identity: Path | None) -> bytes:
    """The set's data key, from --identity or, on a terminal, from what the person types."""
    if enc.cipher != CIPHER:
        raise MkrecError(f"{set_name}: cipher {enc.cipher!r} is not one this mkrec reads ({CIPHER})")
    if identity is not None:
        key = _try(enc, *_identities(identity))
        if key is None:
            raise MkrecError(
                f"--identity {identity} does not open backup set {set_name}",
                hint=f"it opens with the identity of {_who(enc)}",
            )
        return key
    if not sys.stdin.isatty():
        raise MkrecError(
            f"backup set {set_name} is encrypted: give --identity FILE",
            hint=f"the age identity file of {_who(enc)} (or a file holding the passphrase)",
        )
    return _ask(enc, set_name)


def _ask(enc: Encryption, set_name: str) -> bytes:
    """On the console: the passphrase (hidden) when the set has one, else the identity file's path
    (a USB stick mounted in the rescue system)."""
    by_passphrase = any(k.kind is KeyKind.SCRYPT for k in enc.keys)
    for _ in range(TRIES):
        if by_passphrase:
            key = _try(enc, [], getpass.getpass(f"Passphrase of backup set {set_name}: "))
        else:
            answer = input(f"Backup set {set_name} is encrypted. Path of the age identity file: ").strip()
            try:
                key = _try(enc, *_identities(Path(answer), "identity file")) if answer else None
            except MkrecError as exc:  # a typo in the path: say so and ask again
                print(exc.message, flush=True)
                continue
        if key is not None:
            return key
        print("That does not open the set.", flush=True)
    raise MkrecError(f"backup set {set_name}: not opened", hint=f"it opens with {_who(enc)}")


def unlock(bset: BackupSet, identity: Path | None) -> None:
    """Give an encrypted set its key (a plain set needs none; --identity is then ignored)."""
    enc = bset.encryption
    if enc is None or bset.cipher is not None:
        return
    key = unwrap_key(enc, bset.set_name, identity)
    bset.cipher = SetCipher(key, bset.set_id)
