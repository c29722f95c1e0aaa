"""Server key files and signed C{IdPk}, in RustDesk's exact formats.

C{id_ed25519} holds standard base64 (padded, no newline) of the 64-byte
libsodium secret key (32-byte seed followed by the 32-byte public key);
C{id_ed25519.pub} holds base64 of the public key.  An operator can copy an
existing hbbs key pair into LiteDesk's data directory and clients keep
working.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from litedesk.proto import message_pb2

SECRET_FILE = "id_ed25519"
PUBLIC_FILE = "id_ed25519.pub"

# The key RustDesk clients send when their "Key" setting is empty.
RS_PUB_KEY = "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw="


class KeyFileError(Exception):
    """A key file exists but does not hold a usable key."""


class BadPublicKey(ValueError):
    """A configured server public key is not base64 of 32 bytes."""


def server_key_bytes(server_key: str) -> bytes:
    """The 32 raw bytes of a server's base64 Ed25519 public key (its id_ed25519.pub).

    Hosts and viewers both check a C{--key} with it before using it.

    @raise BadPublicKey: when C{server_key} is not base64 of 32 bytes.
    """
    try:
        raw = base64.b64decode(server_key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise BadPublicKey("expected the base64 Ed25519 public key")
    return raw


def public_b64(key: SigningKey) -> str:
    return base64.b64encode(bytes(key.verify_key)).decode("ascii")


def secret_b64(key: SigningKey) -> str:
    """The libsodium 64-byte secret key (seed || public key), base64."""
    return base64.b64encode(bytes(key) + bytes(key.verify_key)).decode("ascii")


def signing_key_from_secret(data: bytes) -> SigningKey:
    """Build a signing key from a 64-byte libsodium secret key."""
    if len(data) != 64:
        raise KeyFileError(f"secret key is {len(data)} bytes, expected 64")
    key = SigningKey(data[:32])
    if bytes(key.verify_key) != data[32:]:
        raise KeyFileError("secret key's public half does not match its seed")
    return key


def _b64decode_exact(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _write_private(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def generate_signing_key() -> SigningKey:
    """A new key whose base64 public key has no C{/} (as hbbs: it ends up in URLs)."""
    key = SigningKey.generate()
    for _ in range(300):
        if "/" not in public_b64(key) and ":" not in public_b64(key):
            break
        key = SigningKey.generate()
    return key


def load_or_create(data_dir: Path) -> tuple[SigningKey, bool]:
    """Load C{data_dir/id_ed25519}, creating the pair if absent.

    @return: the key and whether it was created now.
    @raise KeyFileError: the file exists but is not a 64-byte base64 secret key.
    """
    secret_path = data_dir / SECRET_FILE
    if secret_path.exists():
        raw = _b64decode_exact(secret_path.read_text(errors="replace"))
        if raw is None:
            raise KeyFileError(f"{secret_path} is not base64")
        try:
            return signing_key_from_secret(raw), False
        except KeyFileError as e:
            raise KeyFileError(f"{secret_path}: {e}") from None
    key = generate_signing_key()
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_private(data_dir / PUBLIC_FILE, public_b64(key), 0o644)
    _write_private(secret_path, secret_b64(key), 0o600)
    return key, True


@dataclass(frozen=True)
class ServerKey:
    """What the C{--key} option resolves to.

    @ivar licence: the string clients must send as C{licence_key}; empty means
        no check.
    @ivar signing_key: signs C{IdPk}s, or None (then every C{pk} field is empty).
    @ivar created: the key pair was generated at this start.
    """

    licence: str
    signing_key: SigningKey | None
    created: bool = False

    @property
    def public_key(self) -> str:
        return public_b64(self.signing_key) if self.signing_key is not None else ""


def resolve_key_option(key: str, data_dir: Path) -> ServerKey:
    """Apply hbbs' C{-k} semantics.

    - a base64 64-byte secret key: sign with it, require its public key;
    - C{-} or C{_}: load or create C{id_ed25519}, require its public key;
    - empty: load or create C{id_ed25519}, sign, require nothing;
    - anything else: a literal licence string, no signing.
    """
    raw = _b64decode_exact(key) if key else None
    if raw is not None and len(raw) == 64:
        sk = signing_key_from_secret(raw)
        return ServerKey(public_b64(sk), sk)
    if key in ("", "-", "_"):
        sk, created = load_or_create(data_dir)
        return ServerKey(public_b64(sk) if key else "", sk, created)
    return ServerKey(key, None)


def sign_id_pk(
    signing_key: SigningKey, peer_id: str, pk: bytes, *, litedesk_tls: bool = False
) -> bytes:
    """libsodium combined form: 64-byte signature || serialized C{IdPk}.

    C{litedesk_tls} marks a host's C{SignedId} (docs/protocol.rst §11.5).
    """
    msg = message_pb2.IdPk(id=peer_id, pk=pk, litedesk_tls=litedesk_tls).SerializeToString()
    return bytes(signing_key.sign(msg))


def verify_id_pk(server_public: bytes, signed: bytes) -> tuple[str, bytes] | None:
    """Check a server-signed C{IdPk}; return C{(id, pk)} or None if it is not genuine."""
    try:
        msg = VerifyKey(server_public).verify(signed)
    except (BadSignatureError, ValueError, TypeError):
        return None
    idpk = message_pb2.IdPk()
    try:
        idpk.ParseFromString(msg)
    except Exception:
        return None
    return idpk.id, idpk.pk


def main(argv: list[str] | None = None) -> int:
    """C{litedesk-keygen [DIR]}: create or show the server key pair, like rustdesk-utils."""
    args = sys.argv[1:] if argv is None else argv
    data_dir = Path(args[0] if args else ".")
    try:
        key, created = load_or_create(data_dir)
    except (KeyFileError, OSError) as e:
        print(f"litedesk-keygen: {e}", file=sys.stderr)
        return 1
    verb = "created" if created else "existing"
    print(f"{verb} key pair in {data_dir.resolve()}")
    print(f"public key (clients' Key setting): {public_b64(key)}")
    return 0
