# -*- test-case-name: tests.test_relay -*-
"""hbbr-compatible relay: protocol (wire only) and the controller that owns the state.

Wire behaviour (rustdesk-protocol.md section 6)::

    peer -> relay   BytesCodec frame: RendezvousMessage{request_relay{uuid, licence_key}}
    peer -> relay   any bytes (kept, in order, until the partner arrives)
    relay -> peer   nothing of its own, ever; only the partner's bytes

Two connections whose first frames carry the same uuid are paired and from
then on each one's bytes are written, unchanged, to the other.  A connection
whose first frame is bad, whose key is wrong, or whose deadline passes is
closed without a reply, and the reason is logged.

Backpressure: each leg is registered as a streaming producer on its partner's
transport, so a partner whose write buffer passes C{bufferSize} pauses the
leg's reading, and TCP flow control carries the stall back to the sender.
A leg pauses for four independent reasons (partner's buffer full, bandwidth
limit, its own early-byte buffer full while waiting, the process-wide
early-data budget spent) and reads only when none holds.

Early data: until it is paired a leg reads in small pieces and holds at most
C{early_buffer} bytes (its first frame, then what its peer sends before the
partner arrives).  Every leg may hold a small reserve, enough for a first frame
and a TLS ClientHello; beyond it, it draws grants from one L{EarlyBudget} for
the whole process, so memory for early data stays bounded however many legs
wait.  A leg that gets no grant stops reading (its bytes stay in the kernel,
nothing is dropped) and is resumed, in the order the legs asked, when another
leg's grants come back (paired or closed) or when its own partner arrives.
Paired legs read C{read_size} bytes at a time.

When one leg ends, the other stops reading, flushes what it already holds
and closes; if that flush does not finish within the drain deadline it is
aborted.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import termios
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from twisted.internet import main, tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.relay.limiter import (
    BandwidthSettings,
    EarlyBudget,
    PairLimiter,
    TokenBucket,
    mbps_to_bytes,
)
from litedesk.relay.table import (
    Conn,
    ConnectionLimits,
    Deadlines,
    Pair,
    PairingTable,
    Phase,
    check_first_frame,
)
from litedesk.wire.addrmangle import normalize_host

_splice = getattr(os, "splice", None)
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


class _SharedIO:
    """A scratch buffer and an empty pipe shared by every leg of the process.

    The reactor runs one C{doRead} at a time and each leaves both empty (what
    cannot be sent at once is copied into the transport's own buffer), so one
    of each serves any number of pairs at no per-pair cost.
    """

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pipe_size = 65536
        try:
            self.pipe_size = fcntl.fcntl(self.pipe_w, fcntl.F_SETPIPE_SZ, max(size, _PIPE_SIZE))
        except (OSError, AttributeError):
            pass

    def drain(self, n: int) -> bytes:
        """Read exactly C{n} bytes that are known to be in the pipe."""
        parts = []
        while n > 0:
            chunk = os.read(self.pipe_r, n)
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)


_PIPE_SIZE = 1 << 20
_shared: _SharedIO | None = None
_ReadResult = ConnectionLost | ConnectionDone | None


def _shared_io(size: int) -> _SharedIO:
    global _shared
    if _shared is None or len(_shared.buf) < size:
        if _shared is not None:
            os.close(_shared.pipe_r)
            os.close(_shared.pipe_w)
        _shared = _SharedIO(size)
    return _shared


_MODE_TWISTED = 0
_MODE_INTO = 1
_MODE_SPLICE = 2
_MODE_AUTO = 3
_MODES = {"twisted": 0, "recv_into": 1, "splice": 2, "auto": 3}

# read_mode "auto": a read of at least _BULK_READ bytes switches a leg to
# splice, one under _SMALL_READ switches it back.
_BULK_READ = 65536
_SMALL_READ = 8192

_LATE_ATTRS = (
    "producer",
    "streamingProducer",
    "producerPaused",
    "dataBuffer",
    "offset",
    "disconnecting",
)

_PAUSE_CONSUMER = 1
_PAUSE_LIMIT = 2
_PAUSE_WAIT = 4
_PAUSE_BUDGET = 8

# A leg in its first frame may hold the frame and its length header.
_MAX_HEADER = 4
# At most one "early-data budget exhausted" warning per this many seconds: a
# flood would otherwise write one line per paused connection.
EXHAUSTED_LOG_INTERVAL = 10.0


@dataclass(frozen=True)
class RelaySettings:
    """Everything that tunes the relay (see L{litedesk.relay.service} for the options).

    @ivar read_size: bytes per C{recv} and the write-buffer size at which a
        leg pauses its partner; the relay holds at most about twice this per
        direction.
    @ivar early_buffer: bytes kept from a waiting connection before it is
        paused until its partner arrives (RustDesk and LiteDesk peers send at
        most a TLS ClientHello or a few messages before that).
    @ivar early_budget: early bytes all unpaired legs together may hold beyond
        their reserves; a leg that would exceed it is paused until it frees
        (0: no limit).
    @ivar early_reserve: early bytes every unpaired leg may hold whatever the
        budget: its first frame and a ClientHello get through a flood.
    @ivar unpaired_read: bytes per C{recv} until a leg is paired (also the
        size of each grant from the budget); small so that a waiting leg never
        allocates a C{read_size} buffer.
    @ivar max_first_frame: largest first-frame payload accepted.
    @ivar fast_write: send straight to the socket when its buffer is empty
        instead of waiting a reactor turn.
    @ivar read_mode: how a paired TCP leg reads: C{"twisted"} (the transport's
        C{recv} and C{dataReceived}), C{"recv_into"} (one process-wide buffer,
        no allocation per read) or C{"splice"} (kernel-side copy through one
        process-wide pipe) or C{"auto"} (C{recv_into} while reads are small,
        C{splice} once a read fills C{bulk_read} bytes, back when one is
        small: interactive traffic keeps the cheaper small-message path, bulk
        transfers skip the user-space copy).  All but C{"twisted"} need
        C{fast_write}.
    @ivar splice_max: in splice mode, move up to this many bytes per call
        when the partner's socket has room for them (0: C{read_size}).
    @ivar reads_per_turn: in splice mode, how many full reads one readiness
        event may move before returning to the reactor.
    """

    deadlines: Deadlines = field(default_factory=Deadlines)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    bandwidth: BandwidthSettings = field(default_factory=BandwidthSettings)
    read_size: int = 256 * 1024
    early_buffer: int = 64 * 1024
    early_budget: int = 16 * 1024 * 1024
    early_reserve: int = 4 * 1024
    unpaired_read: int = 16 * 1024
    max_first_frame: int = 64 * 1024
    fast_write: bool = True
    read_mode: str = "auto"
    reads_per_turn: int = 1
    splice_max: int = 0


def _peer_text(addr: IAddress | None) -> str:
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
        "transport",
        "connected",
        "_relay",
        "ip",
        "conn",
        "_buf",
        "_partner",
        "_pair",
        "_is_a",
        "_limiter",
        "_paused",
        "_resume_call",
        "_tcp",
        "_sock",
        "_aborted",
        "_bulk",
        "_mode",
        "_credit",
        "reason",
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
        return _peer_text(t.getPeer()) if t is not None else "?"

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
            for name in _LATE_ATTRS:
                setattr(t, name, getattr(t, name))
            try:
                t.setTcpNoDelay(True)
            except OSError:
                pass
            if self._relay.settings.fast_write:
                self._sock = t.socket
        self.conn = self._relay.table.accept(self, self.ip)

    def dataReceived(self, data: bytes) -> None:
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

    def _handshake(self, data: bytes) -> None:
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

    def _keep_early(self, data: bytes) -> None:
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
                self._pause(_PAUSE_WAIT)
                return
            want = min(relay.settings.unpaired_read, cap - self._credit)
            granted = relay.early_request(self, want)
            if not granted:
                self._pause(_PAUSE_BUDGET)
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
        self._unpause(_PAUSE_BUDGET)
        if not self._paused:
            self._account_early()

    # -- data path --------------------------------------------------------

    def _forward(self, data: bytes, partner: RelayProtocol) -> None:
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
        return (
            t is not None
            and not t._tempDataLen
            and t.offset == len(t.dataBuffer)
            and bool(t.connected)
            and not t.disconnecting
        )

    def write(self, data: bytes) -> None:
        """Write to this leg's peer, straight to the socket when nothing is queued."""
        sock = self._sock
        t = self._tcp
        if sock is not None and t is not None:
            if self._out_idle():
                try:
                    sent = sock.send(data)
                except OSError:  # EAGAIN, or an error the transport will see itself
                    sent = 0
                if sent == len(data):
                    return
                if sent:
                    data = data[sent:]
            t.write(data)  # type: ignore[no-untyped-call]
            return
        assert self.transport is not None
        self.transport.write(data)

    def _write_view(self, view: memoryview) -> None:
        """L{write} for a slice of the shared buffer (copied only if it must wait)."""
        sock = self._sock
        t = self._tcp
        assert sock is not None and t is not None
        if self._out_idle():
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
        if mode == "twisted" or t is None or self._sock is None or partner._sock is None:
            return
        _shared_io(self._relay.settings.read_size)
        if _splice is None and mode in ("splice", "auto"):
            mode = "recv_into"
        self._mode = _MODES[mode]
        if not isinstance(t, RelayServerTransport):
            t.doRead = self._read_fast  # type: ignore[method-assign]

    def _read_fast(self) -> _ReadResult:
        """The paired leg's C{doRead} in the non-Twisted read modes."""
        mode = self._mode
        if mode == _MODE_SPLICE or (mode == _MODE_AUTO and self._bulk):
            return self._read_splice()
        return self._read_into()

    def _read_into(self) -> _ReadResult:
        partner = self._partner
        t = self._tcp
        sock = self._sock
        assert t is not None and sock is not None
        if partner is None:
            return tcp.Connection.doRead(t)
        io = _shared_io(self._relay.settings.read_size)
        try:
            n = sock.recv_into(io.buf, min(t.bufferSize, len(io.buf)))
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        if not n:
            return main.CONNECTION_DONE
        if n >= _BULK_READ:
            self._bulk = True
        partner._write_view(io.view[:n])
        self._count(n)
        return None

    def _read_splice(self) -> _ReadResult:
        partner = self._partner
        t = self._tcp
        if partner is None or not partner._out_idle() or _splice is None:
            return self._read_into()
        assert t is not None
        io = _shared_io(self._relay.settings.read_size)
        flags = _SPLICE_FLAGS
        want = min(t.bufferSize, io.pipe_size)
        splice_max = self._relay.settings.splice_max
        if splice_max > want:
            # Move more per call only as far as the partner's socket can take it
            # now, so what is left over (copied to user space) stays small.
            room = partner._send_room()
            if room > want:
                want = min(room, splice_max, io.pipe_size)
        sock_out = partner._sock
        assert self._sock is not None and sock_out is not None
        fd_in = self._sock.fileno()
        fd_out = sock_out.fileno()
        # Keep moving while the socket fills whole reads and the partner takes
        # everything: saves a trip through the reactor per read.
        for _ in range(self._relay.settings.reads_per_turn):
            try:
                n = _splice(fd_in, io.pipe_w, want, flags=flags)
            except BlockingIOError:
                return None
            except OSError:
                return main.CONNECTION_LOST
            if not n:
                return main.CONNECTION_DONE
            if n < _SMALL_READ:
                self._bulk = False
            try:
                m = _splice(io.pipe_r, fd_out, n, flags=flags)
            except OSError:
                m = 0
            if m < n:
                rest = io.drain(n - m)
                pt = partner._tcp
                assert pt is not None
                pt.write(rest)  # type: ignore[no-untyped-call]
            self._count(n)
            if m < n or n < want or self._paused or self._partner is None:
                break
        return None

    def _send_room(self) -> int:
        """Free space in this leg's kernel send buffer, bytes (0 if unknown)."""
        sock = self._sock
        if sock is None:
            return 0
        try:
            sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        return int(sndbuf - int.from_bytes(raw, sys.byteorder, signed=True))

    def buffered(self) -> int:
        """Bytes waiting in this leg's user-space write buffer."""
        t = self._tcp
        if t is None:
            return 0
        return len(t.dataBuffer) - t.offset + t._tempDataLen

    def _limit_pause(self, delay: float) -> None:
        if self._paused & _PAUSE_LIMIT:
            return
        self._pause(_PAUSE_LIMIT)
        self._resume_call = self._relay.clock.callLater(delay, self._limit_resume)

    def _limit_resume(self) -> None:
        self._resume_call = None
        self._unpause(_PAUSE_LIMIT)

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
        self._pause(_PAUSE_CONSUMER)

    def resumeProducing(self) -> None:
        self._unpause(_PAUSE_CONSUMER)

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


def _no_fileno() -> int:
    return -1


class RelayServerTransport(tcp.Server):
    """C{tcp.Server} for relay legs, installed on the relay's TCP port.

    - C{doRead} of a paired leg goes to the leg's fast path (no bound method
      stored per connection);
    - C{logstr} and C{repstr}, two strings Twisted builds for every
      connection, and the bound C{fileno} are computed when used instead of
      kept (about 220 bytes per connection).
    """

    def doRead(self) -> _ReadResult:  # type: ignore[override]
        p = self.protocol
        if isinstance(p, RelayProtocol) and p._mode and p._partner is not None:
            return p._read_fast()
        return tcp.Server.doRead(self)

    @property
    def fileno(self) -> Callable[[], int]:
        try:
            return self.socket.fileno
        except AttributeError:  # after connectionLost deleted the socket
            return _no_fileno

    @fileno.setter
    def fileno(self, value: Callable[[], int]) -> None:
        pass

    @fileno.deleter
    def fileno(self) -> None:
        pass

    @property
    def logstr(self) -> str:
        return f"{self._getLogPrefix(self.protocol)},{self.sessionno},{self.hostname}"

    @logstr.setter
    def logstr(self, value: str) -> None:
        pass

    @property
    def repstr(self) -> str:
        port = self.server._realPortNumber if self.server is not None else "?"
        return f"<{self.protocol.__class__.__name__} #{self.sessionno} on {port}>"

    @repstr.setter
    def repstr(self, value: str) -> None:
        pass


@dataclass(frozen=True)
class RelayStats:
    """Live counters.

    @ivar early_bytes: bytes held now by legs not yet paired (first frames
        and early data).
    @ivar early_granted: bytes of the early-data budget granted now.
    @ivar early_budget: the budget (0: no limit).
    @ivar early_paused: legs not reading until the budget frees.
    @ivar early_exhausted: times a leg had to wait for the budget, so far.
    """

    connections: int
    handshaking: int
    waiting: int
    active_pairs: int
    pairs_finished: int
    bytes_relayed: int
    early_bytes: int = 0
    early_granted: int = 0
    early_budget: int = 0
    early_paused: int = 0
    early_exhausted: int = 0


class Relay:
    """State and policy of the relay: table, limits, lists, logging.

    @ivar licence: required C{licence_key}; empty means no check.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, settings: RelaySettings, licence: str = "") -> None:
        self.clock = clock
        self.seconds: Callable[[], float] = clock.seconds
        self.settings = settings
        self.licence = licence
        self.table: PairingTable[RelayProtocol] = PairingTable(
            clock, settings.deadlines, settings.limits
        )
        self.total_bucket = TokenBucket(
            mbps_to_bytes(settings.bandwidth.total_bandwidth), clock.seconds()
        )
        self.blacklist: frozenset[str] = frozenset()
        b = settings.bandwidth
        self._limits_active = bool(b.single_bandwidth or b.total_bandwidth or b.limit_speed)
        self.early: EarlyBudget[RelayProtocol] = EarlyBudget(settings.early_budget)
        self.early_reserve = min(settings.early_reserve, settings.early_buffer)
        self._handshake_cap = max(settings.early_buffer, settings.max_first_frame + _MAX_HEADER)
        self._exhausted_logged = float("-inf")
        self._exhausted_unlogged = 0

    # -- accept -----------------------------------------------------------

    def build(self, addr: IAddress) -> RelayProtocol | None:
        host = getattr(addr, "host", None)
        ip = sys.intern(normalize_host(host)) if isinstance(host, str) else "local"
        refusal = self.table.check_accept(ip)
        if refusal is not None:
            if refusal.limit == "blocklist":
                self._log.warn(
                    "relay refused {peer}: address is in the blocklist",
                    peer=_peer_text(addr),
                    limit="blocklist",
                    relay_event="refused",
                )
            else:
                self._log.warn(
                    "relay refused {peer}: limit {limit} reached ({count} of {value})",
                    peer=_peer_text(addr),
                    limit=refusal.limit,
                    value=refusal.value,
                    count=refusal.count,
                    relay_event="refused",
                )
            return None
        return RelayProtocol(self, ip)

    # -- pairing ----------------------------------------------------------

    def first_frame(self, proto: RelayProtocol, uuid: str, rest: bytes) -> None:
        conn = proto.conn
        assert conn is not None
        pair = self.table.first_frame(conn, uuid)
        if pair is None:
            if rest:
                proto._keep_early(rest)
            return
        a, b = pair.a.handle, pair.b.handle
        a._attach(b, pair, True)
        b._attach(a, pair, False)
        read_size = self.settings.read_size
        for leg in (a, b):
            if leg._tcp is not None:
                leg._tcp.bufferSize = read_size
        a._use_read_mode(b)
        b._use_read_mode(a)
        ta, tb = a.transport, b.transport
        assert ta is not None and tb is not None
        ta.registerProducer(b, True)  # type: ignore[attr-defined]
        tb.registerProducer(a, True)  # type: ignore[attr-defined]
        if self._limits_active:
            now = self.seconds()
            lim = PairLimiter(self.settings.bandwidth, self.total_bucket, now)
            a._limiter = b._limiter = lim
            for leg in (b, a):
                if leg.ip in self.blacklist:
                    self.throttle(pair, lim, "blacklist", now, leg.peer)
                    break
            self._fit_reads(pair, lim)
        self._log.info(
            "relay paired {uuid}: {a_peer} with {b_peer}",
            uuid=uuid,
            a_peer=a.peer,
            b_peer=b.peer,
            relay_event="paired",
        )
        early = a._take_early()
        if early:
            a._forward(early, b)
        if rest:
            b._forward(rest, a)
        # Both legs' grants go back to the budget only now that the early
        # bytes have left the buffer.
        self._early_done(a)
        self._early_done(b)
        a._unpause(_PAUSE_WAIT | _PAUSE_BUDGET)
        b._unpause(_PAUSE_WAIT | _PAUSE_BUDGET)

    # -- early data -------------------------------------------------------

    def early_cap(self, phase: Phase) -> int:
        """Most early bytes one leg may hold in C{phase} (its whole first frame fits)."""
        return self._handshake_cap if phase is Phase.HANDSHAKE else self.settings.early_buffer

    def early_request(self, proto: RelayProtocol, n: int) -> int:
        """Grant C{proto} up to C{n} more early bytes, or queue it (0) and say so."""
        granted = self.early.request(proto, n)
        if not granted:
            self._exhausted(proto)
        return granted

    def _exhausted(self, proto: RelayProtocol) -> None:
        now = self.seconds()
        if now - self._exhausted_logged < EXHAUSTED_LOG_INTERVAL:
            self._exhausted_unlogged += 1
            return
        self._log.warn(
            "relay early-data budget of {limit} bytes exhausted: {peer} and {others} other "
            "waiting connections stop reading until it frees (their bytes stay in the "
            "kernel); {suppressed} more pauses since the last warning",
            limit=self.early.limit,
            peer=proto.peer,
            others=self.early.waiting - 1,
            granted=self.early.granted,
            suppressed=self._exhausted_unlogged,
            relay_event="early_budget_exhausted",
        )
        self._exhausted_logged = now
        self._exhausted_unlogged = 0

    def _early_done(self, proto: RelayProtocol) -> None:
        """C{proto} was paired or is gone: its grants go to the legs waiting for them."""
        credit = proto._credit
        if not credit:
            return
        proto._credit = 0
        extra = credit - self.early_reserve
        if extra <= 0 and not self.early.is_waiting(proto):
            return
        for leg, n in self.early.release(proto, max(extra, 0)):
            leg._granted(n)

    def _fit_reads(self, pair: Pair[RelayProtocol], lim: PairLimiter) -> None:
        """Read in pieces of about 50 ms at the pair's rate, so a limit is smooth."""
        rates = [r for r in (lim.bucket.rate, self.total_bucket.rate) if r]
        if not rates:
            return
        size = int(min(self.settings.read_size, max(16384, min(rates) * 0.05)))
        for c in (pair.a, pair.b):
            t = c.handle._tcp
            if t is not None:
                t.bufferSize = size

    def throttle(
        self, pair: Pair[RelayProtocol], lim: PairLimiter, why: str, now: float, peer: str = ""
    ) -> None:
        if not lim.throttle(why, now):
            return
        self._fit_reads(pair, lim)
        s = self.settings.bandwidth
        if why == "blacklist":
            self._log.warn(
                "relay pair {uuid} throttled to limit-speed {limit_speed} Mb/s: "
                "{peer} is in the blacklist",
                uuid=pair.uuid,
                limit="blacklist",
                limit_speed=s.limit_speed,
                peer=peer,
                relay_event="throttled",
            )
        else:
            elapsed = now - pair.started
            self._log.warn(
                "relay pair {uuid} throttled to limit-speed {limit_speed} Mb/s: average "
                "{average:.1f} Mb/s over {elapsed:.0f} s exceeds downgrade-threshold "
                "{threshold} x single-bandwidth {single} Mb/s",
                uuid=pair.uuid,
                limit="downgrade-threshold",
                limit_speed=s.limit_speed,
                average=lim.total_bytes / max(elapsed, 1e-9) / mbps_to_bytes(1),
                elapsed=elapsed,
                threshold=s.downgrade_threshold,
                single=s.single_bandwidth,
                relay_event="throttled",
            )

    def maybe_downgrade(self, pair: Pair[RelayProtocol], lim: PairLimiter, now: float) -> None:
        if lim.should_downgrade(now):
            self.throttle(pair, lim, "downgrade", now)

    # -- closing ----------------------------------------------------------

    def closing(self, proto: RelayProtocol, reason: str, warn: bool) -> None:
        """C{proto} is being closed by the relay for C{reason}."""
        log = self._log.warn if warn else self._log.info
        log(
            "relay closed {peer}: {reason}",
            peer=proto.peer,
            reason=reason,
            relay_event="closed",
        )
        self.lost(proto, reason)

    def lost(self, proto: RelayProtocol, reason: str) -> None:
        self._early_done(proto)
        conn = proto.conn
        if conn is None:
            return
        pair = self.table.lost(conn, f"{reason} ({proto.peer})")
        if pair is None:
            return
        if pair.alive == 1:
            pair.partner(conn).handle.partner_gone()
            return
        a, b = pair.a.handle, pair.b.handle
        self._log.info(
            "relay pair {uuid} finished after {duration:.3f} s ({reason}): "
            "{a_peer} sent {a_to_b} bytes, {b_peer} sent {b_to_a} bytes",
            uuid=pair.uuid,
            a_peer=a.peer,
            b_peer=b.peer,
            a_to_b=pair.a_to_b,
            b_to_a=pair.b_to_a,
            duration=pair.ended - pair.started,
            reason=pair.reason,
            throttled=a._limiter.throttled if a._limiter is not None else None,
            relay_event="pair_finished",
        )

    # -- timers and lists -------------------------------------------------

    def sweep(self) -> None:
        """Close every connection whose deadline has passed (run by a TimerService)."""
        try:
            for proto, reason in self.table.expire():
                proto.close(reason)
        except Exception:
            self._log.failure("relay sweep failed")

    def set_blocklist(self, ips: Iterable[str]) -> None:
        """Refuse these addresses from now on and close their open connections."""
        new = frozenset(ips)
        added = new - self.table.blocklist
        self.table.blocklist = new
        for conn in self.table.connections_from(added):
            conn.handle.close("address added to the blocklist", warn=True)

    def set_blacklist(self, ips: Iterable[str]) -> None:
        """Throttle pairs with these addresses to limit-speed, now and later."""
        new = frozenset(ips)
        added = new - self.blacklist
        self.blacklist = new
        if not added or not self._limits_active:
            return
        now = self.seconds()
        for conn in self.table.connections_from(added):
            proto = conn.handle
            pair = conn.pair
            if conn.phase is Phase.PAIRED and proto._limiter is not None and pair is not None:
                self.throttle(pair, proto._limiter, "blacklist", now, proto.peer)

    def stats(self) -> RelayStats:
        t = self.table
        return RelayStats(
            connections=t.connections,
            handshaking=t.handshaking,
            waiting=t.waiting_count,
            active_pairs=len(t.pairs),
            pairs_finished=t.pairs_finished,
            bytes_relayed=t.bytes_relayed(),
            early_bytes=sum(c.handle.held() for c in t.unpaired_conns()),
            early_granted=self.early.granted,
            early_budget=self.early.limit,
            early_paused=self.early.waiting,
            early_exhausted=self.early.exhausted,
        )

    def max_buffered(self) -> int:
        """The largest user-space write buffer of any paired leg, in bytes."""
        best = 0
        for pair in self.table.pairs:
            for c in (pair.a, pair.b):
                best = max(best, c.handle.buffered())
        return best


class RelayFactory(ServerFactory):
    """Builds a L{RelayProtocol} per accepted connection, or refuses it."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def buildProtocol(self, addr: IAddress) -> RelayProtocol | None:  # type: ignore[override]
        return self.relay.build(addr)
