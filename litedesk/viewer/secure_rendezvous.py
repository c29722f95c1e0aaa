"""Secure TCP to the rendezvous server before a request carries a sign-in token.

A RustDesk client signed in to an API server does not send its token in
the clear: before its first request it waits for the server's
C{KeyExchange} (rustdesk C{src/common.rs} C{secure_tcp}, "mainly for the
security of token" in C{src/client.rs}), checks the server key's signature
on the server's fresh X25519 key, answers with its own key and a sealed
session key, and seals every frame after (docs/protocol.rst §5.10; the
server's side is L{litedesk.rendezvous.secure_tcp}).  The viewer does the
same on every TCP rendezvous connection that carries a token.

Like RustDesk, it does not fall back to plaintext: a server that offers no
key exchange within L{OFFER_WAIT}, or signs it with another key, gets no
token and the connection fails with the reason.  (A LiteDesk server offers
after half a second of silence; OSS hbbs never does, but it does not check
tokens either.)  Over WebSocket RustDesk skips this, and so do we.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from nacl.exceptions import BadSignatureError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import VerifyKey
from twisted.internet.defer import CancelledError, Deferred, TimeoutError

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.links import LinkError, RendezvousLink, ServerLinks, open_rendezvous
from litedesk.viewer.refusals import ConnectError
from litedesk.wire.secretbox import KEY_LENGTH, ZERO_NONCE, SecretChannel

__all__ = ["CANNOT_SECURE", "OFFER_WAIT", "answer_offer", "secure_link", "secured_rendezvous"]

#: How long to wait for the server's offer: a LiteDesk server makes it after
#: 0.5 s of silence; the rest is for a slow network.
OFFER_WAIT = 5.0
CANNOT_SECURE = "cannot secure rendezvous connection"
_T = TypeVar("_T")


def answer_offer(offer: rz.KeyExchange, server_pk: bytes) -> tuple[rz.KeyExchange, bytes]:
    """Our answer to the server's offer, and the session key it carries.

    @raise ConnectError: the offer is not one key signed by C{server_pk}.
    """
    if not server_pk:
        raise ConnectError(CANNOT_SECURE, "no server key to check the key exchange with (--key)")
    if len(offer.keys) != 1:
        raise ConnectError(CANNOT_SECURE, f"key exchange with {len(offer.keys)} keys, not 1")
    try:
        their_pk = VerifyKey(server_pk).verify(offer.keys[0])
    except (BadSignatureError, ValueError):
        raise ConnectError(
            CANNOT_SECURE, "the key exchange is not signed by the server key given (--key)"
        ) from None
    if len(their_pk) != KEY_LENGTH:
        raise ConnectError(CANNOT_SECURE, f"key exchange with a {len(their_pk)}-byte key")
    ours = PrivateKey.generate()
    session_key = os.urandom(KEY_LENGTH)
    sealed = Box(ours, PublicKey(their_pk)).encrypt(session_key, ZERO_NONCE).ciphertext
    return rz.KeyExchange(keys=[bytes(ours.public_key), bytes(sealed)]), session_key


async def secure_link(
    reactor: Any, link: RendezvousLink, server_pk: bytes, wait: float = OFFER_WAIT
) -> None:
    """Key C{link} with the server before anything is sent on it.

    @raise ConnectError: no offer in time, a bad one, or the server hung up.
    """
    got: Deferred[rz.KeyExchange | None] = Deferred()

    def settle(value: rz.KeyExchange | None, result: _T) -> _T:
        if not got.called:
            got.callback(value)
        return result  # the link's own Deferreds go on as they were

    link.key_exchange.addCallback(lambda offer: settle(offer, offer))
    link.closed.addBoth(lambda result: settle(None, result))
    got.addTimeout(wait, reactor)
    try:
        offer = await got
    except (CancelledError, TimeoutError):
        offer = None
    if offer is None:
        link.close()
        raise ConnectError(
            CANNOT_SECURE,
            f"the server closed the connection or offered no key exchange within {wait:g} s "
            "(the sign-in token is only sent encrypted)",
        )
    try:
        answer, key = answer_offer(offer, server_pk)
    except ConnectError:
        link.close()
        raise
    link.send(rz.RendezvousMessage(key_exchange=answer))
    link.channel = SecretChannel(key)


async def secured_rendezvous(
    reactor: Any, server: tuple[str, int], links: ServerLinks | None, server_pk: bytes
) -> RendezvousLink | None:
    """A new TCP rendezvous connection, keyed; C{None} over WebSocket (not keyed).

    @raise ConnectError: the server cannot be reached, or not keyed.
    """
    if links is not None and links.websocket:
        return None
    try:
        if links is not None:
            link = await links.open_rendezvous(reactor)
        else:
            link = await open_rendezvous(reactor, *server)
    except LinkError as e:
        raise ConnectError("cannot reach rendezvous server", str(e)) from None
    await secure_link(reactor, link, server_pk)
    return link
