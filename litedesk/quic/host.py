# -*- test-case-name: tests.test_quic_hostile -*-
"""The host's QUIC socket: viewers' QUIC connections on one UDP port.

L{QuicHost} is a Twisted C{DatagramProtocol}.  It runs on a port it is
given: C{reactor.listenUDP(port, QuicHost(...))} for a fixed port, or
L{QuicHost.attach} for a UDP socket that is already bound (the port a hole
punch opened: the punching's protocol hands the socket over and QUIC goes
on from the same address the peer already reaches).

Datagrams are routed to their connection by destination connection ID, not
by address, so a viewer whose address changes (a NAT rebinding, a laptop on
another network) stays on its connection; aioquic validates the new path
(C{PATH_CHALLENGE}) before it sends there more than the anti-amplification
limit allows.

Anyone can send datagrams here, so what they can make the host hold is
bounded (the same rule as the TCP session, docs/protocol.rst §8.4):

- a datagram that is not a QUIC packet of a known connection, or not a
  full-size (1200-byte) C{Initial} of a supported version that decrypts
  with its connection ID's Initial keys, is dropped without an answer and
  without state (a forged Initial costs one key derivation and one failed
  decryption);
- at most L{MAX_HANDSHAKES} handshakes are in progress at a time, at most
  L{MAX_HANDSHAKES_PER_SOURCE} from one source address, each with an
  absolute deadline (L{HANDSHAKE_TIMEOUT}); further C{Initial}s are dropped
  (the viewer's QUIC retransmits);
- once half of either is taken, a new C{Initial} gets a stateless C{Retry}
  and only its repetition with the token (which proves the sender receives
  at its source address) may take a slot: forged source addresses, such as
  a genuine viewer's, can hold at most half of the slots (an idle host
  answers at once, without the extra round trip);
- at most L{MAX_CONNECTIONS} connections exist at all; each session is then
  admitted by the session layer as over TCP
  (L{litedesk.session.admission});
- a session is built only once the handshake completes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aioquic._buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, encode_quic_retry, pull_quic_header
from aioquic.quic.retry import QuicRetryTokenHandler
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IProtocol, IReactorTime, IUDPTransport
from twisted.logger import Logger

from litedesk.quic.link import Address, DatagramOwner, QuicLink
from litedesk.quic.stream_transport import udp_address

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_HANDSHAKES",
    "MAX_HANDSHAKES_PER_SOURCE",
    "QuicHost",
]

#: Handshakes in progress at a time: each holds a connection's TLS state.
MAX_HANDSHAKES = 32
#: ...of them from one source address.
MAX_HANDSHAKES_PER_SOURCE = 4
#: QUIC connections at all, established or not.
MAX_CONNECTIONS = 256
#: Seconds from the first Initial to a completed handshake (as over TCP).
HANDSHAKE_TIMEOUT = 10.0
# Refused Initials are logged at most this often (a flood must not flood the log).
_REFUSAL_LOG_INTERVAL = 10.0

SessionFactory = Callable[[IPv4Address | IPv6Address], IProtocol | None]


class QuicHost(DatagramOwner):
    """Accepts viewers' QUIC connections and runs a session on each.

    @ivar session_factory: called with the viewer's address once a
        handshake completes; returns the session protocol (a
        L{litedesk.session.host_session.HostSession}), or None to refuse.
    @ivar dropped: datagrams dropped without state (not QUIC, unknown
        connection, no room, a bad token).
    @ivar retries: C{Retry} packets sent (address validation under load).
    """

    _log = Logger()

    def __init__(
        self,
        configuration: QuicConfiguration,
        session_factory: SessionFactory,
        clock: IReactorTime,
        *,
        max_handshakes: int = MAX_HANDSHAKES,
        max_handshakes_per_source: int = MAX_HANDSHAKES_PER_SOURCE,
        max_connections: int = MAX_CONNECTIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.configuration = configuration
        self.session_factory = session_factory
        self.clock = clock
        self.max_handshakes = max_handshakes
        self.max_handshakes_per_source = max_handshakes_per_source
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.links: set[QuicLink] = set()
        self.handshaking: dict[QuicLink, str] = {}
        self._by_cid: dict[bytes, QuicLink] = {}
        self._per_source: dict[str, int] = {}
        self.dropped = 0
        self.retries = 0
        self._tokens = QuicRetryTokenHandler()
        self._refused = 0
        self._refusal_logged_at: float | None = None
        #: Called when the last connection has ended (a punched socket's
        #: owner closes the socket then).
        self.emptied: Callable[[], object] | None = None
        #: Offered every datagram first on a punched socket: the punch answers
        #: its own late datagrams (a viewer repeating a SELECT whose
        #: acknowledgement was lost) and returns True for them.
        self.non_quic: Callable[[bytes, Address], bool] | None = None

    def attach(self, port: IUDPTransport) -> None:
        """Take over an already bound UDP port (its previous protocol is done)."""
        port.protocol = self  # type: ignore[attr-defined]
        self.makeConnection(port)

    # -- datagrams ---------------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            self._route(datagram, addr)
        except Exception:
            # Nothing a peer sends may stop this socket's reader.
            self.dropped += 1
            self._log.failure("Dropping a datagram from {peer}", peer=addr)

    def _route(self, data: bytes, addr: Address) -> None:
        if self.non_quic is not None and self.non_quic(data, addr):
            return
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            self.dropped += 1
            return
        link = self._by_cid.get(header.destination_cid)
        if link is not None:
            link.datagram_received(data, addr)
            return
        if (
            header.packet_type != QuicPacketType.INITIAL
            or len(data) < SMALLEST_MAX_DATAGRAM_SIZE
            or header.version not in self.configuration.supported_versions
        ):
            # No version negotiation either: an answer to a spoofed source
            # would make this socket a reflector.
            self.dropped += 1
            return
        source = str(addr[0])
        odcid: bytes | None = header.destination_cid
        retry_scid: bytes | None = None
        if header.token:
            # An Initial after our Retry: its source address is proven.
            odcid = self._validated(header.destination_cid, header.token, addr)
            retry_scid = header.destination_cid
        elif self._busy(source):
            self._send_retry(header.version, header.destination_cid, header.source_cid, addr)
            return
        if odcid is None or not self._has_room(source):
            self.dropped += 1
            if odcid is not None:
                self._refusal(source)
            return
        self._accept(data, addr, source, odcid, retry_scid)

    def _accept(
        self,
        data: bytes,
        addr: Address,
        source: str,
        odcid: bytes,
        retry_scid: bytes | None,
    ) -> None:
        connection = QuicConnection(
            configuration=self.configuration,
            original_destination_connection_id=odcid,
            retry_source_connection_id=retry_scid,
        )
        now = self.clock.seconds()
        connection.receive_datagram(data, addr, now=now)
        first_flight = connection.datagrams_to_send(now=now)
        if not first_flight:
            # It did not decrypt (a forged Initial): the connection is
            # forgotten before it holds a slot.
            self.dropped += 1
            return
        link = QuicLink(
            connection, self, self.clock, addr, handshake_timeout=self.handshake_timeout
        )
        self.links.add(link)
        self.handshaking[link] = source
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._by_cid[retry_scid or odcid] = link
        self._by_cid[connection.host_cid] = link
        link.start(first_flight)

    # -- address validation under load (RFC 9000 §8.1.2) ------------------------------

    def _busy(self, source: str) -> bool:
        """Half the handshake slots (in all, or of C{source}) are taken: new
        Initials must prove their source address with a Retry first, so
        senders of forged source addresses can take no more than half."""
        return (
            len(self.handshaking) >= self.max_handshakes // 2
            or self._per_source.get(source, 0) >= self.max_handshakes_per_source // 2
        )

    def _send_retry(self, version: int, dcid: bytes, scid: bytes, addr: Address) -> None:
        # Stateless: everything needed later is in the sealed token.  A
        # Retry is smaller than the 1200-byte Initial it answers, so no
        # amplification either.
        retry_scid = os.urandom(self.configuration.connection_id_length)
        token = self._tokens.create_token(
            address=addr,
            original_destination_connection_id=dcid,
            retry_source_connection_id=retry_scid,
            now=self.clock.seconds(),
        )
        self.retries += 1
        self.send_datagram(
            encode_quic_retry(
                version=version,
                source_cid=retry_scid,
                destination_cid=scid,
                original_destination_cid=dcid,
                retry_token=token,
            ),
            addr,
        )

    def _validated(self, dcid: bytes, token: bytes, addr: Address) -> bytes | None:
        """The original destination connection ID a valid token seals, or None."""
        try:
            return self._tokens.validate_token(
                address=addr, destination_cid=dcid, token=token, now=self.clock.seconds()
            )
        except ValueError:
            return None

    def handshakes_from(self, source: str) -> int:
        """Handshakes in progress from the address C{source}."""
        return self._per_source.get(source, 0)

    def _has_room(self, source: str) -> bool:
        return (
            len(self.links) < self.max_connections
            and len(self.handshaking) < self.max_handshakes
            and self._per_source.get(source, 0) < self.max_handshakes_per_source
        )

    def _refusal(self, source: str) -> None:
        self._refused += 1
        now = self.clock.seconds()
        last = self._refusal_logged_at
        if last is None or now - last >= _REFUSAL_LOG_INTERVAL:
            self._refusal_logged_at = now
            self._log.warn(
                "Dropping QUIC handshakes: {handshakes} in progress ({from_source} from "
                "{source}), {connections} connections; {refused} dropped so far",
                handshakes=len(self.handshaking),
                from_source=self._per_source.get(source, 0),
                source=source,
                connections=len(self.links),
                refused=self._refused,
            )

    # -- LinkOwner ---------------------------------------------------------------

    def cid_issued(self, link: QuicLink, cid: bytes) -> None:
        self._by_cid[cid] = link

    def cid_retired(self, link: QuicLink, cid: bytes) -> None:
        if self._by_cid.get(cid) is link:
            del self._by_cid[cid]

    def link_established(self, link: QuicLink) -> IProtocol | None:
        self._handshake_over(link)
        return self.session_factory(udp_address(link.peer_address))

    def link_ended(self, link: QuicLink) -> None:
        self._handshake_over(link)
        self.links.discard(link)
        for cid in [c for c, owner in self._by_cid.items() if owner is link]:
            del self._by_cid[cid]
        if not self.links and self.emptied is not None:
            self.emptied()

    def _handshake_over(self, link: QuicLink) -> None:
        source = self.handshaking.pop(link, None)
        if source is None:
            return
        left = self._per_source.get(source, 1) - 1
        if left > 0:
            self._per_source[source] = left
        else:
            self._per_source.pop(source, None)

    # -- shutting down -------------------------------------------------------------

    def stopProtocol(self) -> None:
        # The port is gone: nothing can be sent or received any more, so no
        # connection may keep timers (or sessions) alive.
        self.close_all()

    def close_all(self) -> None:
        """Close every connection now (before the port stops listening): the
        viewers are told, the sessions end, no timer is left behind."""
        for link in list(self.links):
            link.drop("host shutting down")
