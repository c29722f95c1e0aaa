# -*- test-case-name: tests.test_relay -*-
"""One relay leg (L{RelayProtocol}): its first frame, early data, pausing and data path.

The protocol is wire only; every decision that involves other legs (pairing,
limits, the early-data budget, logging) is made by the L{Relay} controller in
L{litedesk.relay.server}, which the leg calls.  See that module for the wire
behaviour, backpressure and early-data rules.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING

from twisted.internet import tcp
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.relay.fastread import ReadResult, read_into, read_splice
from litedesk.relay.limiter import PairLimiter
from litedesk.relay.settings import MODE_AUTO, MODE_SPLICE, MODES
from litedesk.relay.sharedio import shared_io, splice
from litedesk.relay.table import Conn, Pair, Phase, check_first_frame
from litedesk.twisted_internals import buffered_bytes, output_idle, settle_attributes

if TYPE_CHECKING:
    from litedesk.relay.server import Relay

#: What a leg may be given to forward: bytes from Twisted, or a view a
#: WebSocket leg unmasked (valid during the call only).
Chunk = bytes | bytearray | memoryview

# Transport attributes Twisted sets only when first used; connectionMade sets
# them up front (twisted_internals.settle_attributes), see there for why.
_LATE_ATTRS = (
    "producer",
    "streamingProducer",
    "producerPaused",
    "dataBuffer",
    "offset",
    "disconnecting",
)

# Why a leg is not reading (a bit each); it reads again only when none is set.
PAUSE_CONSUMER = 1
PAUSE_LIMIT = 2
PAUSE_WAIT = 4
PAUSE_BUDGET = 8


def peer_text(addr: IAddress | None) -> str:
    """C{host:port} or C{[v6]:port} for logs."""
    host = getattr(addr, "host", None)
    port = getattr(addr, "port", None)
    if host is None:
        return str(addr)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


@implementer(IPushProducer)
class RelayProtocol(Protocol):
    """One leg: parses the first frame, then hands bytes to its partner."""

    _log = Logger()

    # Slots keep an idle leg small (a pair is two of these plus two transports).
    __slots__ = (
        "_aborted",
        "_buf",
        "_bulk",
        "_credit",
        "_is_a",
        "_limiter",
        "_mode",
        "_pair",
        "_partner",
        "_paused",
        "_relay",
        "_resume_call",
        "_sock",
        "_tcp",
        "conn",
        "connected",
        "ip",
        "reason",
        "transport",
    )

    def __init__(self, relay: Relay, ip: str) -> None:
        self.transport = None
        self.connected = 0
        self._relay = relay
        self.ip = ip
        self.conn: Conn[RelayProtocol] | None = None
        self._buf: bytearray | None = None
        self._partner: RelayProtocol | None = None
        self._pair: Pair[RelayProtocol] | None = None
        self._is_a = False
        self._limiter: PairLimiter | None = None
        self._paused = 0
        self._resume_call: IDelayedCall | None = None
        self._tcp: tcp.Connection | None = None
        self._sock: socket.socket | None = None
        self._aborted = False
        self._bulk = False
        self._mode = 0
        # Early bytes this leg may hold until it is paired: the reserve plus
        # what the budget granted; 0 once paired or closed.
        self._credit = relay.early_reserve
        self.reason = ""

    @property
    def peer(self) -> str:
        """The peer's address as text, for logs."""
        t = self.transport
        return peer_text(t.getPeer()) if t is not None else "?"

    # -- IProtocol --------------------------------------------------------

    def connectionMade(self) -> None:
        t = self.transport
        assert t is not None
        if isinstance(t, tcp.Connection):
            self._tcp = t
            # Give every transport the attributes that pairing and writing set
            # later, always in this order: CPython then keeps the instance
            # dicts in their compact shared-key form (about 0.8 KiB less each).
            # (Reading t.__dict__ would itself allocate a dict per transport.)
            # Small reads until paired (see _fit_unpaired_read); the pairing
            # sets read_size.
            t.bufferSize = min(self._relay.settings.unpaired_read, self._credit)
            settle_attributes(t, _LATE_ATTRS)
            with contextlib.suppress(OSError):
                t.setTcpNoDelay(True)
            if self._relay.settings.fast_write:
                self._sock = t.socket
        self.conn = self._relay.table.accept(self, self.ip)

    def dataReceived(self, data: Chunk) -> None:
        partner = self._partner
        if partner is not None:
            self._forward(data, partner)
            return
        conn = self.conn
        if conn is None or conn.phase is Phase.CLOSED:
            return
        if conn.phase is Phase.HANDSHAKE:
            self._handshake(data)
        elif conn.phase is Phase.WAITING:
            self._keep_early(data)
        if self._partner is None and not self._aborted:
            self._account_early()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()
        self._resume_call = None
        if not self.reason:
            err = reason.value
            self.reason = (
                "closed by peer"
                if isinstance(err, type(connectionDone.value))
                else (f"connection lost: {err.__class__.__name__}")
            )
        self._relay.lost(self, self.reason)
        self._buf = None
        self._sock = None

    # -- first frame ------------------------------------------------------

    def _handshake(self, data: Chunk) -> None:
        if self._buf is None:
            self._buf = bytearray(data)
        else:
            self._buf += data
        buf = self._buf
        header_len = (buf[0] & 3) + 1
        if len(buf) < header_len:
            return
        length = int.from_bytes(buf[:header_len], "little") >> 2
        limit = self._relay.settings.max_first_frame
        if length > limit:
            self.close(f"first frame of {length} bytes exceeds max-first-frame {limit}", warn=True)
            return
        end = header_len + length
        if len(buf) < end:
            return
        payload = bytes(buf[header_len:end])
        rest = bytes(buf[end:])
        self._buf = None
        result = check_first_frame(payload, self._relay.licence)
        if result.reason:
            self.close(result.reason, warn=True)
            return
        self._relay.first_frame(self, result.uuid, rest)

    # -- pairing (called by the Relay) ------------------------------------

    def _attach(self, partner: RelayProtocol, pair: Pair[RelayProtocol], is_a: bool) -> None:
        self._partner = partner
        self._pair = pair
        self._is_a = is_a

    def _take_early(self) -> bytes:
        data = bytes(self._buf) if self._buf else b""
        self._buf = None
        return data

    # -- early data (unpaired legs) ---------------------------------------------

    def _keep_early(self, data: Chunk) -> None:
        if self._buf is None:
            self._buf = bytearray(data)
        else:
            self._buf += data

    def held(self) -> int:
        """Early bytes (first frame included) this leg holds now."""
        return len(self._buf) if self._buf is not None else 0

    def _account_early(self) -> None:
        """After a read while unpaired: ask for more room, or stop reading."""
        held = self.held()
        relay = self._relay
        conn = self.conn
        cap = relay.early_cap(conn.phase if conn is not None else Phase.WAITING)
        while held >= self._credit:
            if self._credit >= cap:
                self._pause(PAUSE_WAIT)
                return
            want = min(relay.settings.unpaired_read, cap - self._credit)
            granted = relay.early_request(self, want)
            if not granted:
                self._pause(PAUSE_BUDGET)
                return
            self._credit += granted
        self._fit_unpaired_read(held)

    def read_allowance(self) -> int:
        """Bytes this leg takes in its next read (0 while it must not read)."""
        if self._paused:
            return 0
        if self._partner is not None:
            return self._relay.settings.read_size
        return max(0, min(self._relay.settings.unpaired_read, self._credit - self.held()))

    def _fit_unpaired_read(self, held: int) -> None:
        """Never read more than this leg may still hold (one C{recv} is one allocation)."""
        t = self._tcp
        room = self._credit - held
        if t is not None and room > 0:
            t.bufferSize = min(self._relay.settings.unpaired_read, room)

    def _granted(self, n: int) -> None:
        """The budget granted a queued request: read again."""
        self._credit += n
        self._unpause(PAUSE_BUDGET)
        if not self._paused:
            self._account_early()

    # -- data path --------------------------------------------------------

    def _forward(self, data: Chunk, partner: RelayProtocol) -> None:
        partner.write(data)
        self._count(len(data))

    def _count(self, n: int) -> None:
        pair = self._pair
        assert pair is not None
        if self._is_a:
            pair.a_to_b += n
        else:
            pair.b_to_a += n
        now = self._relay.seconds()
        pair.last_activity = now
        lim = self._limiter
        if lim is not None:
            delay = lim.consume(n, now)
            if lim.throttled is None and now - lim.started > lim.settings.downgrade_start_check:
                self._relay.maybe_downgrade(pair, lim, now)
            if delay > 0.0:
                self._limit_pause(delay)

    def _out_idle(self) -> bool:
        """Nothing queued for this leg's peer: a direct send keeps the byte order."""
        t = self._tcp
        return t is not None and output_idle(t) and bool(t.connected) and not t.disconnecting

    def write(self, data: Chunk) -> None:
        """Write to this leg's peer, straight to the socket when nothing is queued.

        C{data} is a view of a shared scratch buffer when a WebSocket partner
        unmasked it there (litedesk/websocket/fastpath.py): sent as it is,
        copied to bytes if it must wait (Twisted queues bytes only), never kept.
        """
        sock = self._sock
        t = self._tcp
        if sock is not None and t is not None:
            # _out_idle inlined: this runs for every chunk relayed.
            if output_idle(t) and t.connected and not t.disconnecting:
                try:
                    sent = sock.send(data)
                except OSError:  # EAGAIN, or an error the transport will see itself
                    sent = 0
                if sent == len(data):
                    return
                if sent:
                    data = memoryview(data)[sent:].tobytes()
            t.write(data if type(data) is bytes else bytes(data))  # type: ignore[no-untyped-call]
            return
        assert self.transport is not None
        if type(data) is not bytes and not getattr(self.transport, "accepts_buffers", False):
            data = bytes(data)  # Twisted's transports take bytes only
        self.transport.write(data)  # type: ignore[arg-type]

    def _write_view(self, view: memoryview) -> None:
        """L{write} for a slice of the shared buffer (copied only if it must wait)."""
        sock = self._sock
        t = self._tcp
        assert sock is not None and t is not None
        if output_idle(t) and t.connected and not t.disconnecting:
            try:
                sent = sock.send(view)
            except OSError:
                sent = 0
            if sent == len(view):
                return
            view = view[sent:]
        t.write(view.tobytes())  # type: ignore[no-untyped-call]

    # -- replacement doRead for paired legs (see RelaySettings.read_mode) --------

    def _use_read_mode(self, partner: RelayProtocol) -> None:
        mode = self._relay.settings.read_mode
        t = self._tcp
        if t is None:
            # A WebSocket leg: from now on its bridge reads binary frames
            # without autobahn (litedesk/websocket/fastpath.py).
            start = getattr(self.transport, "start_fast_path", None)
            if start is not None:
                start()
            return
        if mode == "twisted" or t is None or self._sock is None or partner._sock is None:
            return
        shared_io(self._relay.settings.read_size, self._relay.settings.splice_max)
        if splice is None and mode in ("splice", "auto"):
            mode = "recv_into"
        self._mode = MODES[mode]
        if not getattr(t, "routes_fast_reads", False):
            # A transport the relay's port did not build (see
            # install_connection_class): send its reads here directly.
            t.doRead = self._read_fast  # type: ignore[method-assign]

    def _read_fast(self) -> ReadResult:
        """The paired leg's C{doRead} in the non-Twisted read modes."""
        mode = self._mode
        if mode == MODE_SPLICE or (mode == MODE_AUTO and self._bulk):
            return read_splice(self)
        return read_into(self)

    def buffered(self) -> int:
        """Bytes waiting in this leg's user-space write buffer."""
        t = self._tcp
        if t is None:
            # A WebSocket leg's transport knows its connection's buffer.
            other = getattr(self.transport, "buffered", None)
            return int(other()) if other is not None else 0
        return buffered_bytes(t)

    def set_read_size(self, size: int) -> None:
        """Read up to C{size} bytes at a time (TCP or WebSocket leg)."""
        t = self._tcp
        if t is not None:
            t.bufferSize = size
            return
        setter = getattr(self.transport, "set_read_size", None)
        if setter is not None:
            setter(size)

    def touch(self) -> None:
        """The peer sent something that is not forwarded (a WebSocket ping or text
        message): like hbbr, count it as activity against the idle deadline."""
        pair = self._pair
        if pair is not None:
            pair.last_activity = self._relay.seconds()

    def _limit_pause(self, delay: float) -> None:
        if self._paused & PAUSE_LIMIT:
            return
        self._pause(PAUSE_LIMIT)
        self._resume_call = self._relay.clock.callLater(delay, self._limit_resume)

    def _limit_resume(self) -> None:
        self._resume_call = None
        self._unpause(PAUSE_LIMIT)

    def _pause(self, bit: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._paused |= bit

    def _unpause(self, bit: int) -> None:
        if self._paused & bit:
            self._paused &= ~bit
            if not self._paused and self.transport is not None:
                self.transport.resumeProducing()  # type: ignore[attr-defined]

    # -- IPushProducer: the partner's transport drives these ----------------

    def pauseProducing(self) -> None:
        self._pause(PAUSE_CONSUMER)

    def resumeProducing(self) -> None:
        self._unpause(PAUSE_CONSUMER)

    def stopProducing(self) -> None:
        self.partner_gone()

    # -- closing ----------------------------------------------------------

    def partner_gone(self) -> None:
        """The partner ended: flush what is queued for our peer, then close."""
        if self._partner is None:
            return
        self._partner = None
        if not self.reason:
            self.reason = "partner closed"
        t = self.transport
        if t is None:
            return
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()
        self._resume_call = None
        t.unregisterProducer()  # type: ignore[attr-defined]
        t.loseConnection()

    def close(self, reason: str, warn: bool = False, abort: bool = True) -> None:
        """Close with C{reason} logged; the table forgets the connection now."""
        if self._aborted:
            return
        self._aborted = True
        self.reason = reason
        self._relay.closing(self, reason, warn)
        t = self.transport
        if t is None:
            return
        if abort:
            t.abortConnection()  # type: ignore[attr-defined]
        else:
            t.loseConnection()
