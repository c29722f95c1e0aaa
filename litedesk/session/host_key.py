"""The host's identity key as a viewer checks it, and the errors that refuse it.

A host is known by one 32-byte Ed25519 key: the key it registers with the
rendezvous server and the key of its TLS certificate.  This module holds what
both the pinning (L{litedesk.session.pinning}) and the known-hosts file
(L{litedesk.session.known_hosts}) need about that key: its length, reading it
out of a certificate, checking the server's signature on it, and the two
refusals a viewer reports.  It is separate so that neither of those has to
import the other or the TLS plumbing.
"""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from litedesk.wire.keys import verify_id_pk

__all__ = [
    "HOST_KEY_LENGTH",
    "HostKeyMismatch",
    "UnverifiedHostKey",
    "certificate_key",
    "host_key_from_signed_id_pk",
    "key_b64",
    "raw_public_key",
]

HOST_KEY_LENGTH = 32


def key_b64(key: bytes | None) -> str:
    """A key as people read it in messages and in known_hosts: base64."""
    return base64.b64encode(key).decode("ascii") if key is not None else "(none)"


class HostKeyMismatch(Exception):
    """The TLS peer did not prove possession of the expected host key.

    Its message always starts with C{"host key mismatch"}, the reason the
    viewer prints.

    @ivar expected: the pinned 32-byte Ed25519 public key.
    @ivar presented: the key in the host's certificate (None if it had no
        usable Ed25519 key).
    """

    def __init__(self, expected: bytes | None, presented: bytes | None, detail: str = "") -> None:
        message = (
            f"host key mismatch: expected {key_b64(expected)}, "
            f"the host presented {key_b64(presented)}"
        )
        if detail:
            message += f"; {detail}"
        super().__init__(message)
        self.expected = expected
        self.presented = presented
        self.detail = detail


class UnverifiedHostKey(Exception):
    """The rendezvous server's signed C{IdPk} does not vouch for this host.

    Its message starts with C{"key mismatch"}: the server that answered is not
    the one whose public key the viewer was configured with, or it answered
    for another id.
    """


def host_key_from_signed_id_pk(
    server_public_key: bytes, signed_id_pk: bytes, host_id: str
) -> bytes:
    """Return the host key that the rendezvous server vouches for.

    @param server_public_key: the 32-byte Ed25519 key the viewer was
        configured with (C{--key}).
    @param signed_id_pk: the C{pk} field of C{PunchHoleResponse} or
        C{RelayResponse} (64-byte signature followed by C{IdPk}).
    @param host_id: the id the viewer asked for.
    @raise UnverifiedHostKey: the signature does not verify, the signed id is
        another one, or the signed key is not a 32-byte key.
    """
    verified = verify_id_pk(server_public_key, signed_id_pk)
    if verified is None:
        raise UnverifiedHostKey(
            "key mismatch: the rendezvous server's signature on the host key does not "
            "verify with the configured server key"
        )
    signed_id, pk = verified
    if signed_id != host_id:
        raise UnverifiedHostKey(
            f"key mismatch: the rendezvous server signed a key for id {signed_id!r}, "
            f"not {host_id!r}"
        )
    if len(pk) != HOST_KEY_LENGTH:
        raise UnverifiedHostKey(
            f"key mismatch: the signed host key is {len(pk)} bytes, not {HOST_KEY_LENGTH}"
        )
    return pk


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of an Ed25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def certificate_key(cert: x509.Certificate | None) -> bytes | None:
    """The raw Ed25519 public key of C{cert}, or None for anything else."""
    if cert is None:
        return None
    try:
        key = cert.public_key()
    except Exception:
        return None
    if not isinstance(key, Ed25519PublicKey):
        return None
    return raw_public_key(key)
