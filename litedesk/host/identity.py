"""The host agent's persistent identity: id, uuid and Ed25519 key.

Created on first start in the config directory (0700) with 0600 files, and
never changed afterwards unless the operator asks (``--id``):

- ``id``: the RustDesk id other people type (9 digits by default);
- ``uuid``: the machine id (``/etc/machine-id``) or a random one; the
  rendezvous server binds the id to it;
- ``id_ed25519``: the identity key (libsodium 64-byte secret, base64, the
  same format as the server's), whose public half is registered with the
  server and is the key of the host's TLS certificate.
"""

from __future__ import annotations

import os
import re
import secrets
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from litedesk.wire.keys import KeyFileError, load_or_create

ID_FILE = "id"
UUID_FILE = "uuid"
MACHINE_ID_PATHS = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
# RustDesk accepts ids of 6-16 characters: a letter or digit first, then word
# characters or '-'.  Server-side the minimum length is 6 bytes.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w-]{5,15}$")


class IdentityError(Exception):
    """The config directory holds something unusable."""


@dataclass(frozen=True)
class HostIdentity:
    peer_id: str
    uuid: bytes
    signing_key: SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)


def write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600 (the file may hold secrets)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def new_peer_id() -> str:
    """A random 9-digit id that does not start with 0."""
    return str(100_000_000 + secrets.randbelow(900_000_000))


def validate_peer_id(peer_id: str) -> str:
    if not ID_PATTERN.match(peer_id):
        raise IdentityError(
            f"invalid id {peer_id!r}: use 6-16 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return peer_id


def machine_uuid() -> bytes:
    for path in MACHINE_ID_PATHS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text:
            return text.encode()
    return uuidlib.uuid4().hex.encode()


def load_or_create_identity(config_dir: Path, requested_id: str | None = None) -> HostIdentity:
    """Load the identity, creating what is missing; C{requested_id} replaces the id."""
    ensure_private_dir(config_dir)
    id_path = config_dir / ID_FILE
    if requested_id is not None:
        peer_id = validate_peer_id(requested_id)
        if not id_path.exists() or id_path.read_text().strip() != peer_id:
            write_private(id_path, peer_id + "\n")
    elif id_path.exists():
        peer_id = validate_peer_id(id_path.read_text().strip())
    else:
        peer_id = new_peer_id()
        write_private(id_path, peer_id + "\n")
    uuid_path = config_dir / UUID_FILE
    if uuid_path.exists():
        uuid = uuid_path.read_text().strip().encode()
        if not uuid:
            raise IdentityError(f"{uuid_path} is empty")
    else:
        uuid = machine_uuid()
        write_private(uuid_path, uuid.decode() + "\n")
    try:
        key, _ = load_or_create(config_dir)
    except KeyFileError as e:
        raise IdentityError(str(e)) from None
    os.chmod(config_dir / "id_ed25519.pub", 0o600)
    return HostIdentity(peer_id, uuid, key)
