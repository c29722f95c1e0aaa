# -*- test-case-name: tests.test_rustdesk_secure -*-
"""RustDesk's secure channel as a Twisted protocol (docs/protocol.rst §11).

L{SecureChannelProtocol} sits between a TCP transport and an inner protocol,
as Twisted's TLS wrapper does: it runs the handshake of
L{litedesk.rustdesk.secure}, then builds the inner protocol and gives it a
plaintext RustDesk stream (BytesCodec frames of serialized C{hbb.Message}),
sealing every frame the inner protocol writes and opening every frame the
peer sends.

Bad input never raises out of C{dataReceived}: before the handshake has
ended exactly one frame is read, of at most L{MAX_HANDSHAKE_FRAME} bytes,
within L{SecureChannelProtocol.handshake_timeout} seconds on the injected
clock; afterwards a frame over L{MAX_FRAME_LENGTH} or one that fails its MAC
(tampered, replayed, reordered) closes the connection.  Each close is logged
with its reason, and nothing after the bad frame reaches the inner protocol.

A port forward ends the framing and the sealing after its login
(L{SecureChannelProtocol.set_raw}, which the inner protocol reaches through
L{ChannelTransport.set_raw}): the stream then carries the tunnelled bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from nacl.signing import SigningKey, VerifyKey
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import (
    ClientFactory,
    Factory,
    Protocol,
    ServerFactory,
    connectionDone,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.rustdesk.secure import (
    ClientHandshake,
    DecryptError,
    Handshake,
    HostHandshake,
    Outcome,
    SecretChannel,
)
from litedesk.wire.bytescodec import FrameDecoder, FrameError, encode_frame

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MAX_FRAME_LENGTH",
    "MAX_HANDSHAKE_FRAME",
    "ChannelTransport",
    "SecureChannelProtocol",
    "rustdesk_client_factory",
    "rustdesk_host_factory",
]

# RustDesk waits CONNECT_TIMEOUT (18 s) for the client's PublicKey and
# READ_TIMEOUT (18 s) for the host's SignedId.
HANDSHAKE_TIMEOUT = 18.0
# SignedId is 105 bytes and PublicKey 86: 64 KiB is generous and bounds what a
# peer that has proven nothing can make us buffer.
MAX_HANDSHAKE_FRAME = 64 * 1024
# RustDesk's decoder has no limit of its own (docs/protocol.rst §11); a
# 4K key frame is far below this.
MAX_FRAME_LENGTH = 64 * 1024 * 1024


@implementer(ITransport)
class ChannelTransport:
    """The inner protocol's transport: frames written here leave sealed.

    @ivar encrypted: True when the session is encrypted, False when the
        handshake ended in plaintext (only ever with C{allow_insecure}).
    """

    def __init__(self, channel: SecureChannelProtocol, encrypted: bool) -> None:
        self._channel = channel
        self.encrypted = encrypted
        # The inner protocol writes BytesCodec frames; each is sealed whole.
        self._outgoing = FrameDecoder()

    @property
    def channel(self) -> SecureChannelProtocol:
        """The channel under this transport (its counters, its TCP transport)."""
        return self._channel

    def write(self, data: bytes) -> None:
        if self._channel.raw:
            self._channel.write_raw(data)
            return
        try:
            payloads = self._outgoing.feed(data)
        except FrameError:  # pragma: no cover - MAX_ENCODABLE cannot be exceeded by a header
            self._channel.close("inner protocol wrote an unframed stream")
            return
        for payload in payloads:
            self._channel.send_payload(payload)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._channel.lose_connection()

    def abortConnection(self) -> None:
        self._channel.abort_connection()

    def getPeer(self) -> IAddress:
        return self._channel.outer.getPeer()

    def getHost(self) -> IAddress:
        return self._channel.outer.getHost()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        # Sealing adds 16 bytes a frame and never buffers: the outer
        # transport's flow control is the inner protocol's.
        self._channel.outer.registerProducer(producer, streaming)  # type: ignore[attr-defined]

    def unregisterProducer(self) -> None:
        self._channel.outer.unregisterProducer()  # type: ignore[attr-defined]

    # The inner protocol's flow control of what it reads (a port forward
    # pauses reading while the other side is slow): the outer stream's.
    def pauseProducing(self) -> None:
        self._channel.outer.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self._channel.outer.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        self._channel.outer.stopProducing()  # type: ignore[attr-defined]

    def set_raw(self) -> None:
        """Stop framing and sealing both ways (RustDesk's C{set_raw}): see
        L{SecureChannelProtocol.set_raw}."""
        self._channel.set_raw()


class SecureChannelProtocol(Protocol):
    """One RustDesk connection: handshake, then a sealed stream for an inner protocol.

    @ivar handshake_timeout: seconds from the connection to the end of the
        handshake.
    @ivar max_handshake_frame: the largest frame read before the handshake
        has ended.
    @ivar max_frame_length: the largest frame afterwards.
    @ivar abort_timeout: seconds after a close after which a peer that does
        not read what is still queued is aborted.
    @ivar inner: the inner protocol, once the handshake has ended.
    @ivar close_reason: why this side closed the connection, or None.
    """

    handshake_timeout: float = HANDSHAKE_TIMEOUT
    max_handshake_frame: int = MAX_HANDSHAKE_FRAME
    max_frame_length: int = MAX_FRAME_LENGTH
    abort_timeout: float = 5.0

    _log = Logger()

    def __init__(
        self, handshake: Handshake, inner_factory: IProtocolFactory, clock: IReactorTime, role: str
    ) -> None:
        self._handshake: Handshake | None = handshake
        self._inner_factory = inner_factory
        self._clock = clock
        self._role = role
        self._pending = bytearray()
        self._decoder: FrameDecoder | None = None
        self._secret: SecretChannel | None = None
        self._deadline: Any = None
        self._abort_call: Any = None
        self.inner: IProtocol | None = None
        self.close_reason: str | None = None
        # After set_raw: bytes pass unframed and unsealed both ways.
        self.raw = False
        self._delivering = False

    @property
    def outer(self) -> ITransport:
        assert self.transport is not None
        return self.transport

    @property
    def encrypted(self) -> bool:
        """Whether frames are sealed (False during and after a plaintext handshake)."""
        return self._secret is not None

    @property
    def send_seq(self) -> int:
        return self._secret.send_seq if self._secret is not None else 0

    @property
    def recv_seq(self) -> int:
        return self._secret.recv_seq if self._secret is not None else 0

    # -- connection events -------------------------------------------------

    def connectionMade(self) -> None:
        self._deadline = self._clock.callLater(self.handshake_timeout, self._handshake_timed_out)
        assert self._handshake is not None
        first = self._handshake.begin()
        if isinstance(first, bytes):
            self.outer.write(encode_frame(first))
        elif isinstance(first, Outcome):
            self._finish(first)

    def dataReceived(self, data: bytes) -> None:
        if self.close_reason is not None:
            return
        if self._handshake is not None:
            self._pending += data
            data = self._handshake_frame()
            if self._handshake is not None or self.close_reason is not None:
                return
        if self.raw:
            self._deliver_raw(data)
            return
        assert self._decoder is not None
        self._delivering = True
        try:
            self._deliver_frames(self._decoder, data)
        finally:
            self._delivering = False
        if self.raw and self.close_reason is None:
            # The inner protocol went raw on a frame of this chunk: what
            # followed that frame is tunnelled data.
            self._deliver_raw(self._decoder.take_remainder())

    def _deliver_frames(self, decoder: FrameDecoder, data: bytes) -> None:
        # One frame at a time: after any frame the inner protocol may call
        # set_raw, and the bytes after it must not be parsed as frames.
        chunk = data
        while self.close_reason is None and not self.raw:
            try:
                payloads = decoder.feed(chunk, 1)
            except FrameError as e:
                self.close(f"frame refused: {e}")
                return
            chunk = b""
            if not payloads:
                return
            self._deliver(payloads[0])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel("_deadline")
        self._cancel("_abort_call")
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.connectionLost(reason)

    # -- the handshake -------------------------------------------------------

    def _handshake_frame(self) -> bytes:
        """Take the one handshake frame from C{_pending} if it is complete.

        Returns the bytes after it, which belong to the session.
        """
        buf = self._pending
        if not buf:
            return b""
        header_len = (buf[0] & 0x03) + 1
        if len(buf) < header_len:
            return b""
        length = int.from_bytes(buf[:header_len], "little") >> 2
        if length > self.max_handshake_frame:
            self.close(f"handshake frame of {length} bytes exceeds {self.max_handshake_frame}")
            return b""
        if len(buf) < header_len + length:
            return b""
        payload = bytes(buf[header_len : header_len + length])
        rest = bytes(buf[header_len + length :])
        self._pending = bytearray()
        assert self._handshake is not None
        self._finish(self._handshake.receive(payload))
        return rest

    def _finish(self, outcome: Outcome) -> None:
        self._handshake = None
        self._cancel("_deadline")
        if outcome.reply is not None:
            # The reply is the last plaintext frame; the key (if any) applies
            # from the next one on, both ways (RustDesk's set_key after send).
            self.outer.write(encode_frame(outcome.reply))
        if outcome.refusal is not None:
            self.close(outcome.refusal)
            return
        if outcome.key is not None:
            self._secret = SecretChannel(outcome.key)
            self._log.info(
                "RustDesk session encrypted ({role}) with {peer}",
                role=self._role,
                peer=self._peer(),
            )
        else:
            self._log.warn(
                "RustDesk session NOT encrypted ({role}) with {peer}: {reason}",
                role=self._role,
                peer=self._peer(),
                reason=outcome.insecure,
                insecure=True,
            )
        self._decoder = FrameDecoder(self.max_frame_length)
        inner = self._inner_factory.buildProtocol(self.outer.getPeer())
        if inner is None:
            self.close("inner factory refused the connection")
            return
        self.inner = inner
        inner.makeConnection(ChannelTransport(self, encrypted=self._secret is not None))

    def _handshake_timed_out(self) -> None:
        self._deadline = None
        self.close(f"handshake not finished within {self.handshake_timeout:g} s")

    # -- the session -----------------------------------------------------------

    def _deliver(self, payload: bytes) -> None:
        if self._secret is not None:
            try:
                payload = self._secret.open(payload)
            except DecryptError as e:
                self.close(f"{e}: tampered, replayed or reordered frame")
                return
        if self.inner is not None:
            self.inner.dataReceived(encode_frame(payload))

    def set_raw(self) -> None:
        """From now on the stream is neither framed nor sealed, both ways.

        RustDesk's port forward calls C{set_raw} on both sides after the
        login (hbb_common src/tcp.rs: the codec goes raw and the key is
        dropped; rustdesk src/server/connection.rs, src/port_forward.rs): the
        outer bytes go to the inner protocol as they come, first whatever
        the frame decoder still holds, and the inner protocol's writes go
        out as written.
        """
        if self.raw:
            return
        self.raw = True
        self._secret = None
        self._log.info(
            "RustDesk channel ({role}) with {peer} now carries raw bytes",
            role=self._role,
            peer=self._peer(),
        )
        if not self._delivering and self._decoder is not None:
            # Outside dataReceived the leftover goes now; inside, dataReceived
            # hands it over once the frame that switched has been delivered.
            self._deliver_raw(self._decoder.take_remainder())

    def _deliver_raw(self, data: bytes) -> None:
        if data and self.inner is not None and self.close_reason is None:
            self.inner.dataReceived(data)

    def write_raw(self, data: bytes) -> None:
        """Send C{data} as it is (after L{set_raw})."""
        if self.close_reason is not None or self.transport is None:
            return
        self.outer.write(data)

    def send_payload(self, payload: bytes) -> None:
        """Seal one C{hbb.Message} payload (when encrypted) and send it framed."""
        if self.close_reason is not None or self.transport is None:
            return
        if self._secret is not None:
            payload = self._secret.seal(payload)
        self.outer.write(encode_frame(payload))

    # -- closing ---------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Close because of C{reason} (logged); nothing more is read or sent."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self._log.warn(
            "RustDesk channel closed ({role}) with {peer}: {reason}",
            role=self._role,
            peer=self._peer(),
            reason=reason,
        )
        self._cancel("_deadline")
        self.lose_connection()

    def lose_connection(self) -> None:
        if self.transport is None:
            return
        self.outer.loseConnection()
        if self._abort_call is None:
            self._abort_call = self._clock.callLater(self.abort_timeout, self.abort_connection)

    def abort_connection(self) -> None:
        self._abort_call = None
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        setattr(self, name, None)
        if call is not None and call.active():
            call.cancel()

    def _peer(self) -> str:
        try:
            return str(self.outer.getPeer())
        except Exception:  # pragma: no cover - a transport without an address
            return "?"


class _ChannelFactory(Factory):
    """Builds a L{SecureChannelProtocol} with a fresh handshake per connection."""

    def __init__(
        self,
        make_handshake: Callable[[], Handshake],
        inner_factory: IProtocolFactory,
        clock: IReactorTime,
        role: str,
    ) -> None:
        self._make_handshake = make_handshake
        self.inner_factory = inner_factory
        self.clock = clock
        self.role = role

    def buildProtocol(self, addr: IAddress | None) -> SecureChannelProtocol:
        proto = SecureChannelProtocol(
            self._make_handshake(), self.inner_factory, self.clock, self.role
        )
        proto.factory = self
        return proto

    def startFactory(self) -> None:
        self.inner_factory.doStart()

    def stopFactory(self) -> None:
        self.inner_factory.doStop()


class _HostFactory(_ChannelFactory, ServerFactory):
    pass


class _ClientFactory(_ChannelFactory, ClientFactory):
    pass


def rustdesk_host_factory(
    identity_signing_key: SigningKey,
    peer_id: str,
    inner_factory: IProtocolFactory,
    clock: IReactorTime,
    *,
    allow_insecure: bool = False,
) -> ServerFactory:
    """The host side, for C{listenTCP}: see L{litedesk.rustdesk}'s docstring."""
    return _HostFactory(
        lambda: HostHandshake(identity_signing_key, peer_id, allow_insecure=allow_insecure),
        inner_factory,
        clock,
        "host",
    )


def rustdesk_client_factory(
    host_key: VerifyKey | None,
    peer_id: str,
    inner_factory: IProtocolFactory,
    clock: IReactorTime,
    *,
    allow_insecure: bool = False,
) -> ClientFactory:
    """The client side, for C{connectTCP}.

    C{host_key} is the host's Ed25519 key as the rendezvous server signed
    it (L{litedesk.rustdesk.secure.host_key_from_signed_id_pk}); None means
    no signed key, which is refused unless C{allow_insecure}.  C{peer_id} is
    the host's ID, which its C{SignedId} must name.
    """
    return _ClientFactory(
        lambda: ClientHandshake(host_key, peer_id, allow_insecure=allow_insecure),
        inner_factory,
        clock,
        "client",
    )
