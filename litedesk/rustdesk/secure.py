# -*- test-case-name: tests.test_rustdesk_secure -*-
"""Sans-IO core of RustDesk's session encryption (docs/protocol.rst §11).

Nothing here touches a socket or a clock: L{HostHandshake} and
L{ClientHandshake} turn the one handshake message each side receives into an
L{Outcome} (what to send back, the key, or why the session is refused), and
L{SecretChannel} seals and opens frame payloads with the per-direction
counters.  L{litedesk.rustdesk.channel} runs them on a Twisted transport.

The payloads handled here are BytesCodec frame payloads (docs/protocol.rst
§2.1); framing is the protocol's job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import DecodeError
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from litedesk.proto import message_pb2
from litedesk.wire.keys import sign_id_pk, verify_id_pk
from litedesk.wire.secretbox import (
    KEY_LENGTH,
    ZERO_NONCE,
    DecryptError,
    SecretChannel,
    nonce,
)

__all__ = [
    "INSECURE_REFUSAL",
    "KEY_LENGTH",
    "ClientHandshake",
    "DecryptError",
    "FirstMessage",
    "Handshake",
    "HostHandshake",
    "Outcome",
    "SecretChannel",
    "host_key_from_signed_id_pk",
    "nonce",
    "open_signed_id",
    "read_first_message",
]

# The key exchange's box uses an all-zero nonce (docs/protocol.rst §11.2).
_ZERO_NONCE = ZERO_NONCE

# What a client that declines encryption is told, as a LoginResponse error: a
# stock client shows any unknown error string in a "Login Error" box.  It
# declines because it holds no server-signed key for this host, which is
# what the user can fix.
INSECURE_REFUSAL = (
    "This host accepts encrypted connections only: set the ID server's Key in "
    "the client's network settings and connect again."
)


@dataclass(frozen=True)
class Outcome:
    """How a handshake ended.

    @ivar reply: a plaintext C{Message} payload to send before anything else,
        or None.
    @ivar key: the session key when the session is encrypted from now on.
    @ivar refusal: why the session must be closed (after sending C{reply}),
        or None when it goes on.
    @ivar insecure: why the session goes on in plaintext (only when the
        caller allowed it), or None.
    """

    reply: bytes | None = None
    key: bytes | None = None
    refusal: str | None = None
    insecure: str | None = None


class Handshake(Protocol):
    """What L{litedesk.rustdesk.channel} needs of either side's handshake."""

    def begin(self) -> bytes | Outcome | None:
        """At connection: a payload to send before waiting, a finished handshake, or None."""

    def receive(self, payload: bytes) -> Outcome:
        """The peer's one handshake frame payload, judged."""


def _parse_message(payload: bytes) -> message_pb2.Message | None:
    msg = message_pb2.Message()
    try:
        msg.ParseFromString(payload)
    except (DecodeError, RecursionError, ValueError):
        return None
    return msg


def open_signed_id(signed: bytes, signer: VerifyKey) -> tuple[str, bytes] | None:
    """Check a signed C{IdPk} (combined: signature || message); C{(id, pk)} or None.

    Like RustDesk's C{decode_id_pk}, only a 32-byte C{pk} counts.
    """
    try:
        body = signer.verify(signed)
    except (BadSignatureError, ValueError, TypeError):
        return None
    idpk = _parse_message_idpk(body)
    if idpk is None or len(idpk[1]) != KEY_LENGTH:
        return None
    return idpk


def _parse_message_idpk(body: bytes) -> tuple[str, bytes] | None:
    idpk = message_pb2.IdPk()
    try:
        idpk.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError):
        return None
    return idpk.id, idpk.pk


@dataclass(frozen=True)
class FirstMessage:
    """What a host's first frame says, as a viewer reads it before choosing.

    @ivar signed: the payload is a C{Message{signed_id}}.
    @ivar verified: the signature verified with the host key given (False
        when none was given or it did not verify).
    @ivar peer_id: the id inside the signed C{IdPk} ("" when unreadable).
    @ivar offers_tls: the signed C{IdPk} carries LiteDesk's mark: the host
        speaks LiteDesk's TLS session too.
    """

    signed: bool
    verified: bool
    peer_id: str = ""
    offers_tls: bool = False


def read_first_message(payload: bytes, host_key: VerifyKey | None) -> FirstMessage:
    """Judge a host's first frame payload without answering it.

    Without C{host_key} (a direct connection to an address not yet known)
    the C{IdPk} is read unverified: its mark then only chooses TLS, whose
    own pinning authenticates the host; nothing unverified ever chooses a
    RustDesk session.
    """
    msg = _parse_message(payload)
    if msg is None or msg.WhichOneof("union") != "signed_id":
        return FirstMessage(signed=False, verified=False)
    signed = msg.signed_id.id
    body: bytes | None
    verified = False
    if host_key is not None:
        try:
            body = host_key.verify(signed)
            verified = True
        except (BadSignatureError, ValueError, TypeError):
            body = None
    else:
        body = signed[64:] if len(signed) > 64 else None
    idpk = message_pb2.IdPk()
    if body is not None:
        try:
            idpk.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError):
            return FirstMessage(signed=True, verified=False)
    return FirstMessage(
        signed=True, verified=verified, peer_id=idpk.id, offers_tls=idpk.litedesk_tls
    )


def host_key_from_signed_id_pk(server_key: bytes, signed: bytes, peer_id: str) -> VerifyKey | None:
    """The host's Ed25519 key from the server-signed C{IdPk} of a punch or relay answer.

    None unless the rendezvous server's key C{server_key} signed it, the id
    is C{peer_id} and the key is 32 bytes (what RustDesk's client checks
    before it waits for C{SignedId}).
    """
    opened = verify_id_pk(server_key, signed) if len(server_key) == KEY_LENGTH else None
    if opened is None:
        return None
    signed_id, pk = opened
    if signed_id != peer_id or len(pk) != KEY_LENGTH:
        return None
    return VerifyKey(pk)


class HostHandshake:
    """The host's side: send C{SignedId}, then judge the client's one answer.

    Follows RustDesk's C{create_tcp_connection} (src/server.rs): a
    C{PublicKey} with a 32-byte C{asymmetric_value} must open (box, zero
    nonce) to a 32-byte key; a C{PublicKey} with an empty one, any other
    message or an empty one means the client declines encryption; a key of
    another length or a payload that is not a C{Message} ends the session.
    Where RustDesk then runs in plaintext, this refuses unless
    C{allow_insecure}.
    """

    def __init__(
        self,
        identity_signing_key: SigningKey,
        peer_id: str,
        *,
        allow_insecure: bool = False,
        ephemeral: PrivateKey | None = None,
        offer_tls: bool = False,
    ) -> None:
        self._signing_key = identity_signing_key
        self._peer_id = peer_id
        self._allow_insecure = allow_insecure
        # A LiteDesk host marks its signed IdPk so that a LiteDesk viewer
        # answers with TLS instead (docs/protocol.rst §11.5).
        self._offer_tls = offer_tls
        # A fresh X25519 pair per connection; tests inject one for the vectors.
        self._ephemeral = ephemeral if ephemeral is not None else PrivateKey.generate()

    def begin(self) -> bytes:
        """The C{Message{signed_id}} payload the host sends first, then it waits."""
        msg = message_pb2.Message()
        msg.signed_id.id = sign_id_pk(
            self._signing_key,
            self._peer_id,
            bytes(self._ephemeral.public_key),
            litedesk_tls=self._offer_tls,
        )
        return msg.SerializeToString()

    def receive(self, payload: bytes) -> Outcome:
        """Judge the client's first frame payload."""
        msg = _parse_message(payload)
        if msg is None:
            return Outcome(refusal="handshake: first frame is not a Message")
        if msg.WhichOneof("union") != "public_key":
            return self._declined("client sent no PublicKey")
        their_pk = msg.public_key.asymmetric_value
        if not their_pk:
            return self._declined("client sent an empty PublicKey")
        if len(their_pk) != KEY_LENGTH:
            return Outcome(refusal=f"handshake: PublicKey of {len(their_pk)} bytes")
        try:
            key = Box(self._ephemeral, PublicKey(their_pk)).decrypt(
                msg.public_key.symmetric_value, _ZERO_NONCE
            )
        except (CryptoError, ValueError, TypeError):
            return Outcome(refusal="handshake: sealed session key does not open")
        if len(key) != KEY_LENGTH:
            return Outcome(refusal=f"handshake: session key of {len(key)} bytes")
        return Outcome(key=bytes(key))

    def _declined(self, why: str) -> Outcome:
        if self._allow_insecure:
            return Outcome(insecure=why)
        refusal = message_pb2.Message()
        refusal.login_response.error = INSECURE_REFUSAL
        return Outcome(
            reply=refusal.SerializeToString(), refusal=f"insecure session refused: {why}"
        )


class ClientHandshake:
    """The client's side: check C{SignedId}, answer C{PublicKey}.

    Follows RustDesk's C{secure_connection} (src/client.rs) where it
    succeeds.  Where RustDesk falls back to plaintext (no signed host key, a
    first message that is not a C{SignedId}, a bad signature or another id)
    this refuses, unless C{allow_insecure}: then it sends what RustDesk sends
    (an empty C{Message}, or an empty C{PublicKey} after a bad signature).
    """

    def __init__(
        self,
        host_key: VerifyKey | None,
        peer_id: str,
        *,
        allow_insecure: bool = False,
        ephemeral: PrivateKey | None = None,
        session_key: bytes | None = None,
    ) -> None:
        self._host_key = host_key
        self._peer_id = peer_id
        self._allow_insecure = allow_insecure
        self._ephemeral = ephemeral if ephemeral is not None else PrivateKey.generate()
        self._session_key = session_key if session_key is not None else os.urandom(KEY_LENGTH)

    def begin(self) -> Outcome | None:
        """None: wait for the host's C{SignedId}; else the handshake is already over.

        Without a signed host key RustDesk sends an empty C{Message} at once
        and does not wait for anything.
        """
        if self._host_key is not None:
            return None
        return self._declined("no server-signed host key", message_pb2.Message())

    def receive(self, payload: bytes) -> Outcome:
        """Judge the host's first frame payload."""
        msg = _parse_message(payload)
        if msg is None or msg.WhichOneof("union") != "signed_id" or self._host_key is None:
            return self._declined("host sent no SignedId", message_pb2.Message())
        opened = open_signed_id(msg.signed_id.id, self._host_key)
        if opened is None:
            empty_pk = message_pb2.Message()
            empty_pk.public_key.SetInParent()
            return self._declined("SignedId not signed by the host's key", empty_pk)
        signed_id, their_pk = opened
        if signed_id != self._peer_id:
            return self._declined(f"SignedId names id {signed_id!r}", message_pb2.Message())
        sealed = Box(self._ephemeral, PublicKey(their_pk)).encrypt(self._session_key, _ZERO_NONCE)
        reply = message_pb2.Message()
        reply.public_key.asymmetric_value = bytes(self._ephemeral.public_key)
        reply.public_key.symmetric_value = bytes(sealed.ciphertext)
        return Outcome(reply=reply.SerializeToString(), key=self._session_key)

    def _declined(self, why: str, reply: message_pb2.Message) -> Outcome:
        if self._allow_insecure:
            return Outcome(reply=reply.SerializeToString(), insecure=why)
        return Outcome(refusal=f"insecure session refused: {why}")
