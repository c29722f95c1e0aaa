# -*- test-case-name: tests.test_rustdesk_viewer -*-
"""The viewer's side of one session stream: a LiteDesk host or a RustDesk host.

Both kinds of host speak first (docs/protocol.rst §11.5): a C{SignedId}
whose signed C{IdPk} either carries LiteDesk's mark (the host also speaks
LiteDesk's TLS 1.3 session) or does not (a stock RustDesk host).
L{HostDetector} reads that one frame, then:

- marked: answers with its TLS ClientHello; the stream, with anything read
  past the frame, goes to the TLS client session exactly as before;
- not marked, and signed by the host key the rendezvous server vouches
  for: RustDesk's secure channel, client side, with the same
  L{litedesk.session.viewer_session.ViewerSession} inside;
- anything else (not a C{SignedId}, a signature by another key, a RustDesk
  host that cannot be authenticated): the connection is closed with a
  reason the person sees.  Nothing falls back to plaintext.

A LiteDesk host older than this protocol sends nothing and waits for the
ClientHello: after L{LEGACY_HOST_WAIT} seconds of silence the viewer sends
it.  Waiting is safe because silence can only lead to TLS, never away from
it, and a RustDesk host always speaks at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nacl.signing import VerifyKey
from twisted.internet.interfaces import IProtocol, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.rustdesk.channel import MAX_HANDSHAKE_FRAME, SecureChannelProtocol
from litedesk.rustdesk.detect import SessionStarterFactory
from litedesk.rustdesk.secure import ClientHandshake, read_first_message
from litedesk.session.switching import SwitchingProtocol
from litedesk.session.viewer_session import SessionError, ViewerSession

__all__ = ["LEGACY_HOST_WAIT", "PROTOCOL_LITEDESK", "PROTOCOL_RUSTDESK", "HostDetector"]

# A host that says nothing for this long is a LiteDesk host from before
# RustDesk support (it waits for our ClientHello).  A RustDesk host sends
# SignedId as soon as its stream exists; on a relay that is when its leg
# reaches the relay, which follows the viewer's request within a second or
# two even on a slow link, hence the margin.
LEGACY_HOST_WAIT = 5.0

PROTOCOL_LITEDESK = "litedesk-tls"
PROTOCOL_RUSTDESK = "rustdesk"


class HostDetector(SwitchingProtocol):
    """Reads the host's first frame and answers in the protocol it names.

    @ivar protocol: L{PROTOCOL_LITEDESK}, L{PROTOCOL_RUSTDESK} or None
        (undecided, or refused).
    @ivar close_reason: why the detector closed the connection, or None.
    """

    legacy_host_wait: float = LEGACY_HOST_WAIT
    _log = Logger()

    def __init__(
        self,
        session: ViewerSession,
        make_tls: Callable[[], IProtocol],
        host_key: VerifyKey | None,
        peer_id: str,
        clock: IReactorTime,
    ) -> None:
        """
        @param session: the viewer session, run inside whichever protocol.
        @param make_tls: builds the TLS client protocol around C{session}
            (pinned to the host key); not yet connected.
        @param host_key: the host's Ed25519 key as the rendezvous server
            signed it, or None on a direct connection to an address (TLS
            pinning then authenticates a LiteDesk host; a RustDesk host
            cannot be authenticated and is refused).
        @param peer_id: the host's id, which a RustDesk host's C{SignedId}
            must name.
        """
        self.session = session
        self._make_tls = make_tls
        self._host_key = host_key
        self._peer_id = peer_id
        self._clock = clock
        self._buffer = bytearray()
        self._timer: Any = None
        self.protocol: str | None = None
        self.close_reason: str | None = None

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self.legacy_host_wait, self._silent)

    def preamble_received(self, data: bytes) -> None:
        if self.close_reason is not None or not data:
            return
        self._buffer += data
        buf = self._buffer
        header_len = (buf[0] & 0x03) + 1
        if len(buf) < header_len:
            return
        length = int.from_bytes(buf[:header_len], "little") >> 2
        if length > MAX_HANDSHAKE_FRAME:
            self._refuse("not a LiteDesk or RustDesk host", f"first frame of {length} bytes")
            return
        if len(buf) < header_len + length:
            return
        self._cancel_timer()
        end = header_len + length
        self._decide(bytes(buf[header_len:end]), bytes(buf[end:]))

    def _decide(self, payload: bytes, rest: bytes) -> None:
        first = read_first_message(payload, self._host_key)
        if not first.signed:
            self._refuse("not a LiteDesk or RustDesk host", "its first message is not SignedId")
            return
        if self._host_key is not None and not first.verified:
            self._refuse(
                "host key mismatch",
                "the host's SignedId is not signed by the key the ID server vouches for",
            )
            return
        if first.offers_tls:
            self.protocol = PROTOCOL_LITEDESK
            # Nothing follows SignedId until we answer; pass on what did anyway.
            self.switch_protocol(self._make_tls(), rest)
            return
        if self._host_key is None:
            self._refuse(
                "cannot verify a RustDesk host",
                "connect by id through the ID server, which vouches for the host's key",
            )
            return
        self.protocol = PROTOCOL_RUSTDESK
        # The session was made before the host was known: it prefers VP9
        # with a RustDesk host, as a stock client does.
        self.session.rustdesk = True
        self._log.info("The host speaks RustDesk's protocol; using its secure channel")
        channel = SecureChannelProtocol(
            ClientHandshake(self._host_key, self._peer_id),
            SessionStarterFactory(lambda: self.session),
            self._clock,
            "client",
        )
        # The channel reads SignedId again from the stream and answers it.
        self.switch_protocol(channel, bytes(self._buffer))

    def _silent(self) -> None:
        self._timer = None
        if self._buffer or self.close_reason is not None:
            return
        self._log.info(
            "The host said nothing for {seconds} s: an older LiteDesk host; starting TLS",
            seconds=self.legacy_host_wait,
        )
        self.protocol = PROTOCOL_LITEDESK
        self.switch_protocol(self._make_tls())

    def _refuse(self, reason: str, detail: str) -> None:
        self._cancel_timer()
        self.close_reason = f"{reason}: {detail}"
        self._log.warn("Session refused: {reason}: {detail}", reason=reason, detail=detail)
        if self.session.error is None:
            self.session.error = SessionError(reason, detail)
        transport = self.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:  # pragma: no cover - every TCP transport can abort
                transport.loseConnection()

    def preamble_lost(self, reason: Failure) -> None:
        self._cancel_timer()
        # The session never saw the stream; it still has to hear that it ended.
        self.session.connectionLost(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        super().connectionLost(reason)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
