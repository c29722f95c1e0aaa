# -*- test-case-name: tests.test_rendezvous_secure_tcp -*-
"""Secure TCP on the rendezvous port, the server's side (docs/protocol.rst §5.10).

A RustDesk client that holds the server's key and an API login (1.2.3-2 and
later; from 1.4.1 it fails without it) connects to port P and says nothing
until the server's first message.  That message is C{KeyExchange{keys:
[signed]}}, C{signed} being the server's Ed25519 signature over a fresh
X25519 public key in libsodium's combined form (64-byte signature, then the
32-byte key).  The client answers C{KeyExchange{keys: [its X25519 public
key, box(session key)]}} (C{crypto_box}, zero nonce), and from the next
frame on both directions are sealed exactly as a RustDesk peer session is
(L{litedesk.wire.secretbox.SecretChannel}).

Every other client speaks first.  Nothing on the wire tells the two apart
but that silence, so L{SecureTcpServer} starts in L{Phase.WAITING}: bytes
from the client before the protocol calls L{SecureTcpServer.offer} make the
connection plaintext for good, untouched; silence until then gets the
C{KeyExchange}, and the next frame decides.  A C{KeyExchange} answer secures
the stream; any other message is served in plaintext, which is what a
RustDesk client that was merely slow to send expects (since 1.2.0 every
client read skips one unsolicited C{KeyExchange}).

Nothing here touches a socket or a clock: the protocol
(L{litedesk.rendezvous.protocols}) decides when the wait is over and moves
the payloads.  The payloads are whole messages (a BytesCodec frame's payload
on TCP), so a message-oriented transport can use the same object.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.messages import parse_rendezvous
from litedesk.wire.secretbox import KEY_LENGTH, DecryptError, SecretChannel

__all__ = [
    "KEY_EXCHANGE_WAIT",
    "KeyExchangeCounters",
    "Phase",
    "SecureTcpError",
    "SecureTcpServer",
    "key_exchange_offer",
    "open_key_exchange_answer",
]

# How long a silent connection waits for the KeyExchange.  Clients that
# speak first do so within one round trip plus a local NAT-type lookup
# (RustDesk's client waits at most 100 ms for it, a host's punch answer
# follows a 30 ms connect attempt); a logged-in client pays this once per
# rendezvous connection and gives up only after 18 s.
KEY_EXCHANGE_WAIT = 0.5

_ZERO_NONCE = bytes(24)
# crypto_box output for a 32-byte key: 16-byte MAC, then the sealed key.
_SEALED_KEY_LENGTH = KEY_LENGTH + 16


class SecureTcpError(Exception):
    """The client broke the key exchange or a sealed frame; the connection must close."""


class Phase(enum.Enum):
    #: Nothing heard from the client and nothing sent.
    WAITING = "waiting"
    #: Our KeyExchange is out; the client's next frame decides.
    OFFERED = "offered"
    #: Sealed both ways.
    SECURE = "secure"
    #: Plaintext for the rest of the connection.
    PLAIN = "plain"


@dataclass
class KeyExchangeCounters:
    """What happened to the offers on one listener (for logs, tests and the benchmark).

    @ivar offered: KeyExchanges sent to silent clients.
    @ivar secured: connections that answered and are sealed.
    @ivar declined: connections that got the offer and went on in plaintext.
    @ivar failed: connections closed for a broken exchange or frame.
    """

    offered: int = 0
    secured: int = 0
    declined: int = 0
    failed: int = 0


def key_exchange_offer(signing_key: SigningKey, public: PublicKey) -> bytes:
    """The C{RendezvousMessage{key_exchange}} payload offering C{public}.

    RustDesk's client opens the one key with C{crypto_sign_open} under the
    server key it was configured with, so the entry is the combined form.
    """
    signed = bytes(signing_key.sign(bytes(public)))
    return rz.RendezvousMessage(key_exchange=rz.KeyExchange(keys=[signed])).SerializeToString()


def open_key_exchange_answer(payload: bytes, ephemeral: PrivateKey) -> bytes | None:
    """The session key from a client's answer to our offer.

    @return: the 32-byte key, or None when the payload is another message
        (the client declined and talks plaintext).
    @raise SecureTcpError: the payload is not a C{RendezvousMessage}, or a
        C{KeyExchange} that does not carry exactly a 32-byte key and a box
        that opens, under our key, to 32 bytes.
    """
    msg = parse_rendezvous(payload)
    if msg is None:
        raise SecureTcpError("answer to KeyExchange is not a RendezvousMessage")
    if msg.WhichOneof("union") != "key_exchange":
        return None
    keys = msg.key_exchange.keys
    if len(keys) != 2:
        # RustDesk's client always sends its key and the box, nothing else.
        raise SecureTcpError(f"KeyExchange answer with {len(keys)} keys, not 2")
    their_pk, sealed = keys
    if len(their_pk) != KEY_LENGTH:
        raise SecureTcpError(f"KeyExchange answer with a {len(their_pk)}-byte public key")
    if len(sealed) != _SEALED_KEY_LENGTH:
        raise SecureTcpError(f"KeyExchange answer with a {len(sealed)}-byte sealed key")
    try:
        key = Box(ephemeral, PublicKey(their_pk)).decrypt(sealed, _ZERO_NONCE)
    except (CryptoError, ValueError, TypeError) as e:
        raise SecureTcpError("sealed session key does not open") from e
    return bytes(key)


class SecureTcpServer:
    """One rendezvous connection's secure-TCP state, server side.

    The protocol calls L{peer_spoke} whenever bytes arrive, L{offer} when
    the connection has been silent for L{KEY_EXCHANGE_WAIT}, L{receive} for
    every complete frame payload and L{send} for every payload it writes.
    """

    __slots__ = ("_channel", "_counters", "_ephemeral", "_signing_key", "phase")

    def __init__(
        self,
        signing_key: SigningKey,
        counters: KeyExchangeCounters | None = None,
        *,
        ephemeral: PrivateKey | None = None,
    ) -> None:
        self._signing_key = signing_key
        self._counters = counters if counters is not None else KeyExchangeCounters()
        # Tests inject the X25519 key for the vectors; otherwise it is made in
        # offer(), so a client that speaks first costs no key generation.
        self._ephemeral = ephemeral
        self._channel: SecretChannel | None = None
        self.phase = Phase.WAITING

    @property
    def secured(self) -> bool:
        return self.phase is Phase.SECURE

    def peer_spoke(self) -> None:
        """Bytes came in: before an offer that means a plaintext client."""
        if self.phase is Phase.WAITING:
            self.phase = Phase.PLAIN

    def offer(self) -> bytes | None:
        """The KeyExchange payload to send now, or None when it is too late.

        A fresh X25519 key per connection: the server's only contribution to
        the session key, so a recorded exchange replayed on another
        connection cannot open (the client's login token rides in the first
        sealed request).
        """
        if self.phase is not Phase.WAITING:
            return None
        if self._ephemeral is None:
            self._ephemeral = PrivateKey.generate()
        self.phase = Phase.OFFERED
        self._counters.offered += 1
        return key_exchange_offer(self._signing_key, self._ephemeral.public_key)

    def receive(self, payload: bytes) -> bytes | None:
        """One frame payload from the client, as the server should read it.

        @return: the plaintext message payload, or None when the frame was
            the client's half of the key exchange (nothing to handle).
        @raise SecureTcpError: a broken answer or a sealed frame that does
            not open (tampered, replayed, reordered); close the connection.
        """
        if self.phase is Phase.PLAIN:
            return payload
        if self.phase is Phase.SECURE:
            assert self._channel is not None
            try:
                return self._channel.open(payload)
            except DecryptError as e:
                self._counters.failed += 1
                raise SecureTcpError(str(e)) from None
        if self.phase is Phase.WAITING:
            # The protocol reports bytes before frames; a frame without them
            # still means the client spoke first.
            self.phase = Phase.PLAIN
            return payload
        return self._answer(payload)

    def _answer(self, payload: bytes) -> bytes | None:
        assert self._ephemeral is not None
        try:
            key = open_key_exchange_answer(payload, self._ephemeral)
        except SecureTcpError:
            self._counters.failed += 1
            raise
        # The X25519 secret has done its job; dropping it keeps nothing that
        # could open a recorded exchange later.
        self._ephemeral = None
        if key is None:
            self.phase = Phase.PLAIN
            self._counters.declined += 1
            return payload
        self._channel = SecretChannel(key)
        self.phase = Phase.SECURE
        self._counters.secured += 1
        return None

    def send(self, payload: bytes) -> bytes:
        """The payload to frame and write for the message payload C{payload}.

        Sealed once the exchange is done, except an empty payload: that is a
        keep-alive, which RustDesk's peers send and accept unsealed (payloads
        of at most one byte are never opened).
        """
        if self._channel is None or not payload:
            return payload
        return self._channel.seal(payload)
