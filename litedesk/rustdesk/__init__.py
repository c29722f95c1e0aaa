"""RustDesk's peer-to-peer secure channel (docs/protocol.rst §11).

A stock RustDesk session starts with a key exchange on the TCP stream itself:
the host sends C{SignedId}, the client answers C{PublicKey}, and from then on
every BytesCodec frame is an XSalsa20-Poly1305 secretbox whose nonce is a
per-direction counter.  This package implements that layer and nothing above
it: what runs inside (Hash, LoginRequest, video...) is an inner protocol's job.

L{litedesk.rustdesk.secure} is the sans-IO core (handshake states, counters);
L{litedesk.rustdesk.channel} the Twisted protocol that runs it on a transport.

Starting the host side on a listening port (this signature is stable)::

    def rustdesk_host_factory(
        identity_signing_key: nacl.signing.SigningKey,
        peer_id: str,
        inner_factory: twisted.internet.interfaces.IProtocolFactory,
        clock: twisted.internet.interfaces.IReactorTime,
        *,
        allow_insecure: bool = False,
    ) -> twisted.internet.protocol.ServerFactory

    reactor.listenTCP(0, rustdesk_host_factory(key, "123456789", inner, reactor),
                      interface="127.0.0.1")

- C{identity_signing_key}: the host's Ed25519 identity, the key the rendezvous
  server signs for C{peer_id} (C{IdPk{id, pk}}); it signs the per-connection
  X25519 key in C{SignedId}.
- C{peer_id}: the host's RustDesk ID, the C{id} of the signed C{IdPk}.
- C{inner_factory}: builds one inner protocol per connection, once the
  handshake has ended.  The inner protocol sees the session as a plaintext
  RustDesk stream: C{dataReceived} gets BytesCodec frames, each holding one
  decrypted serialized C{hbb.Message}, and what it writes to its transport
  must be BytesCodec frames, each of which is encrypted and sent as one
  frame.  So L{litedesk.session.framing.MessageProtocol} subclasses work as
  inner protocols unchanged.  Its transport's C{encrypted} attribute says
  whether the session is encrypted (False only with C{allow_insecure}).
- C{clock}: schedules the handshake deadline (C{task.Clock} in tests).
- C{allow_insecure}: accept a client that declines encryption (an empty
  C{PublicKey} or an empty C{Message}) and run the session in plaintext,
  logged as insecure; without it such a client is refused with a
  C{LoginResponse} error it shows, and the connection is closed.

The client side (for the viewer) is L{rustdesk_client_factory}, the same
framing with the roles swapped; L{host_key_from_signed_id_pk} checks the
rendezvous server's signature on the host's key before it is used.
"""

from __future__ import annotations

from litedesk.rustdesk.channel import (
    ChannelTransport,
    SecureChannelProtocol,
    rustdesk_client_factory,
    rustdesk_host_factory,
)
from litedesk.rustdesk.secure import host_key_from_signed_id_pk

__all__ = [
    "ChannelTransport",
    "SecureChannelProtocol",
    "host_key_from_signed_id_pk",
    "rustdesk_client_factory",
    "rustdesk_host_factory",
]
