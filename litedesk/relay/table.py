"""The relay's pairing table and deadlines, without any I/O.

A connection goes through these phases::

    HANDSHAKE --first frame ok--> WAITING --same uuid arrives--> PAIRED
        |                            |                              |
        +--first-frame deadline      +--partner deadline            +--idle deadline
                                                                    +--partner gone: drain deadline

The table keeps the waiting map (uuid -> connection), the per-address and
unpaired counts that the accept-time limits need, and the deadlines.
It never closes anything itself: L{PairingTable.expire} returns what the
caller must close and why.  Time comes from an injected C{IReactorTime}
(C{reactor} in the server, C{task.Clock} in tests), read only through
C{seconds()}.

First-frame and partner deadlines need no timer objects: every connection in
a phase has the same timeout, so the insertion-ordered dicts of handshaking
and waiting connections are also ordered by deadline, and leaving a phase is
one C{del}.  Idle and drain deadlines live in a heap whose entries carry a
generation number (bumping it cancels older entries without searching).  The
idle deadline is lazy: a pair's entry is re-armed at C{last_activity + idle}
when it comes due, so busy pairs cost one heap operation per idle period, not
one per chunk.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.messages import parse_rendezvous

H = TypeVar("H")


class Phase(enum.IntEnum):
    HANDSHAKE = 0
    WAITING = 1
    PAIRED = 2
    CLOSED = 3


@dataclass(frozen=True)
class Deadlines:
    """Seconds; 0 disables a deadline."""

    first_frame: float = 30.0
    partner: float = 30.0
    idle: float = 30.0
    drain: float = 30.0


@dataclass(frozen=True)
class ConnectionLimits:
    """Accept-time limits; 0 means unlimited."""

    max_per_ip: int = 256
    max_unpaired: int = 10000


#: Every C{Refusal.limit} L{PairingTable.check_accept} can give: the
#: relay counts refusals by these (a fixed set, the metrics' labels).
REFUSAL_LIMITS: tuple[str, ...] = ("blocklist", "max-connections-per-ip", "max-unpaired")


@dataclass(frozen=True)
class Refusal:
    """Why a connection was refused at accept; C{limit} names the option."""

    limit: str
    value: int
    count: int


class Conn(Generic[H]):
    """One accepted connection as the table sees it.

    @ivar handle: the caller's object (the protocol), returned by L{expire}.
    @ivar since: when it was accepted, then when its first frame arrived.
    """

    __slots__ = ("gen", "handle", "ip", "pair", "phase", "since", "uuid")

    def __init__(self, handle: H, ip: str, now: float) -> None:
        self.handle = handle
        self.ip = ip
        self.phase = Phase.HANDSHAKE
        self.uuid = ""
        self.pair: Pair[H] | None = None
        self.gen = 0
        self.since = now


class Pair(Generic[H]):
    """Two connections with the same uuid.

    @ivar a: the connection that waited.
    @ivar b: the connection that arrived second.
    @ivar a_to_b: bytes read from C{a} (and forwarded to C{b}); C{b_to_a} likewise.
    @ivar reason: why the pair ended (set by the first event that ends it).
    """

    __slots__ = (
        "a",
        "a_to_b",
        "alive",
        "b",
        "b_to_a",
        "ended",
        "gen",
        "last_activity",
        "reason",
        "started",
        "uuid",
    )

    def __init__(self, uuid: str, a: Conn[H], b: Conn[H], now: float) -> None:
        self.uuid = uuid
        self.a = a
        self.b = b
        self.started = now
        self.last_activity = now
        self.a_to_b = 0
        self.b_to_a = 0
        self.gen = 0
        self.reason = ""
        self.ended = 0.0
        self.alive = 2

    def partner(self, conn: Conn[H]) -> Conn[H]:
        return self.b if conn is self.a else self.a


#: How many ended pairs L{PairingTable.history} keeps (the console's history).
HISTORY_LENGTH = 500


@dataclass(frozen=True, slots=True)
class EndedPair:
    """What is left of a finished pair for the console: no uuid (it was a
    pairing secret), the two addresses, bytes each way, times and why it ended."""

    a_ip: str
    b_ip: str
    a_to_b: int
    b_to_a: int
    started: float
    ended: float
    reason: str


# Heap entry kinds.
_K_IDLE = 2
_K_DRAIN = 3

REASON_FIRST_FRAME_TIMEOUT = "first-frame timeout"
REASON_PARTNER_TIMEOUT = "partner timeout"
REASON_IDLE = "idle timeout"
REASON_DRAIN = "drain timeout"


class PairingTable(Generic[H]):
    """Waiting map, pairs, counts and deadlines of the relay.

    @ivar blocklist: normalised addresses refused at accept.
    """

    def __init__(
        self,
        clock: IReactorTime,
        deadlines: Deadlines = Deadlines(),
        limits: ConnectionLimits = ConnectionLimits(),
    ) -> None:
        self.clock = clock
        self.deadlines = deadlines
        self.limits = limits
        self.blocklist: frozenset[str] = frozenset()
        self.waiting: dict[str, Conn[H]] = {}
        self._handshaking: dict[Conn[H], None] = {}
        self.pairs: set[Pair[H]] = set()
        self.per_ip: dict[str, int] = {}
        self.connections = 0
        self.unpaired = 0
        self.bytes_finished = 0
        self.pairs_finished = 0
        #: The last L{HISTORY_LENGTH} finished pairs, oldest first (bounded memory).
        self.history: deque[EndedPair] = deque(maxlen=HISTORY_LENGTH)
        self._heap: list[tuple[float, int, int, int, Conn[H] | Pair[H]]] = []
        self._seq = itertools.count()

    # -- scheduling -------------------------------------------------------

    def _push(self, delay: float, kind: int, target: Conn[H] | Pair[H]) -> None:
        if delay > 0:
            when = self.clock.seconds() + delay
            heapq.heappush(self._heap, (when, next(self._seq), kind, target.gen, target))

    def expire(self) -> list[tuple[H, str]]:
        """Pop every due deadline; return C{(handle, reason)} for each connection to abort.

        The connections stay in the table until the caller reports them with
        L{lost}, so each is returned once per deadline that fires.
        """
        now = self.clock.seconds()
        out: list[tuple[H, str]] = []
        self._expire_handshakes(now, out)
        self._expire_waiting(now, out)
        self._expire_heap(now, out)
        return out

    def _expire_handshakes(self, now: float, out: list[tuple[H, str]]) -> None:
        """Connections with no first frame in time; oldest first, so stop at the first young one."""
        limit = self.deadlines.first_frame
        if not limit or not self._handshaking:
            return
        due = []
        for conn in self._handshaking:
            if conn.since + limit > now:
                break
            due.append(conn)
        for conn in due:
            del self._handshaking[conn]
            out.append((conn.handle, REASON_FIRST_FRAME_TIMEOUT))

    def _expire_waiting(self, now: float, out: list[tuple[H, str]]) -> None:
        """Waiters whose partner did not come in time; in arrival order like the handshakes."""
        limit = self.deadlines.partner
        if not limit or not self.waiting:
            return
        late = []
        for uuid, conn in self.waiting.items():
            if conn.since + limit > now:
                break
            late.append(uuid)
        for uuid in late:
            out.append((self.waiting.pop(uuid).handle, REASON_PARTNER_TIMEOUT))

    def _expire_heap(self, now: float, out: list[tuple[H, str]]) -> None:
        """The due entries of the deadline heap: idle pairs and drain deadlines."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, kind, gen, target = heapq.heappop(heap)
            if target.gen != gen:
                continue
            if isinstance(target, Pair):
                if kind == _K_IDLE:
                    self._expire_idle(target, gen, now, out)
                continue
            target.gen += 1
            out.append((target.handle, REASON_DRAIN))

    def _expire_idle(self, pair: Pair[H], gen: int, now: float, out: list[tuple[H, str]]) -> None:
        # Traffic moves last_activity without touching the heap, so a popped
        # idle entry may be early: push it back for the real deadline.
        due_at = pair.last_activity + self.deadlines.idle
        if due_at > now:
            heapq.heappush(self._heap, (due_at, next(self._seq), _K_IDLE, gen, pair))
            return
        pair.gen += 1
        if not pair.reason:
            pair.reason = REASON_IDLE
        for c in (pair.a, pair.b):
            if c.phase is not Phase.CLOSED:
                out.append((c.handle, REASON_IDLE))

    # -- events -----------------------------------------------------------

    def check_accept(self, ip: str) -> Refusal | None:
        """Whether a new connection from C{ip} (normalised) may be accepted."""
        if ip in self.blocklist:
            return Refusal("blocklist", 0, 0)
        lim = self.limits
        n = self.per_ip.get(ip, 0)
        if lim.max_per_ip and n >= lim.max_per_ip:
            return Refusal("max-connections-per-ip", lim.max_per_ip, n)
        if lim.max_unpaired and self.unpaired >= lim.max_unpaired:
            return Refusal("max-unpaired", lim.max_unpaired, self.unpaired)
        return None

    def accept(self, handle: H, ip: str) -> Conn[H]:
        """Register a connection that passed L{check_accept}; arm its first-frame deadline."""
        conn = Conn(handle, ip, self.clock.seconds())
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        self.connections += 1
        self.unpaired += 1
        self._handshaking[conn] = None
        return conn

    def first_frame(self, conn: Conn[H], uuid: str) -> Pair[H] | None:
        """A valid first frame arrived: pair with a waiter, or wait; None while waiting."""
        if conn.phase is not Phase.HANDSHAKE:
            raise ValueError(f"first frame in phase {conn.phase.name}")
        self._handshaking.pop(conn, None)
        conn.uuid = uuid
        now = self.clock.seconds()
        other = self.waiting.pop(uuid, None)
        if other is None:
            conn.phase = Phase.WAITING
            conn.since = now
            self.waiting[uuid] = conn
            return None
        conn.uuid = uuid = other.uuid  # one copy of the string per pair
        pair = Pair(uuid, other, conn, now)
        other.phase = conn.phase = Phase.PAIRED
        other.pair = conn.pair = pair
        self.unpaired -= 2
        self.pairs.add(pair)
        self._push(self.deadlines.idle, _K_IDLE, pair)
        return pair

    def lost(self, conn: Conn[H], reason: str) -> Pair[H] | None:
        """A connection is gone.

        @return: its pair if it had one; the pair has C{alive == 0} when this
            was its last connection (then it is finished and its record is due).
        """
        phase = conn.phase
        if phase is Phase.CLOSED:
            return None
        conn.phase = Phase.CLOSED
        conn.gen += 1
        self.connections -= 1
        n = self.per_ip[conn.ip] - 1
        if n:
            self.per_ip[conn.ip] = n
        else:
            del self.per_ip[conn.ip]
        if phase is Phase.HANDSHAKE:
            self.unpaired -= 1
            self._handshaking.pop(conn, None)
            return None
        if phase is Phase.WAITING:
            self.unpaired -= 1
            if self.waiting.get(conn.uuid) is conn:
                del self.waiting[conn.uuid]
            return None
        pair = conn.pair
        assert pair is not None
        pair.alive -= 1
        if pair.alive == 1:
            pair.gen += 1
            if not pair.reason:
                pair.reason = reason
            other = pair.partner(conn)
            self._push(self.deadlines.drain, _K_DRAIN, other)
        else:
            self.pairs.discard(pair)
            pair.ended = self.clock.seconds()
            self.pairs_finished += 1
            self.bytes_finished += pair.a_to_b + pair.b_to_a
            self.history.append(
                EndedPair(
                    pair.a.ip,
                    pair.b.ip,
                    pair.a_to_b,
                    pair.b_to_a,
                    pair.started,
                    pair.ended,
                    pair.reason,
                )
            )
        return pair

    def connections_from(self, ips: Iterable[str]) -> list[Conn[H]]:
        """Open connections whose address is in C{ips} (for a reloaded blocklist)."""
        wanted = set(ips) & self.per_ip.keys()
        if not wanted:
            return []
        out = [c for c in self._handshaking if c.ip in wanted]
        out.extend(c for c in self.waiting.values() if c.ip in wanted)
        for pair in self.pairs:
            out.extend(c for c in (pair.a, pair.b) if c.ip in wanted and c.phase is Phase.PAIRED)
        return out

    def unpaired_conns(self) -> Iterator[Conn[H]]:
        """Connections still handshaking or waiting for their partner."""
        yield from self._handshaking
        yield from self.waiting.values()

    @property
    def waiting_count(self) -> int:
        return len(self.waiting)

    @property
    def handshaking(self) -> int:
        return self.unpaired - len(self.waiting)

    def bytes_relayed(self) -> int:
        """Bytes forwarded so far, finished and live pairs together."""
        return self.bytes_finished + sum(p.a_to_b + p.b_to_a for p in self.pairs)


# -- first frame -----------------------------------------------------------


@dataclass(frozen=True)
class FirstFrame:
    """The outcome of checking a first frame: C{uuid} if good, else C{reason}."""

    uuid: str = ""
    reason: str = ""


def check_first_frame(payload: bytes, licence: str) -> FirstFrame:
    """Apply hbbr's checks to the first frame's payload.

    It must parse as C{RendezvousMessage{request_relay}}; with a non-empty
    C{licence}, C{licence_key} must equal it; C{uuid} must not be empty.
    """
    msg = parse_rendezvous(payload)
    if msg is None:
        return FirstFrame(reason="first frame is not a RendezvousMessage")
    which = msg.WhichOneof("union")
    if which != "request_relay":
        return FirstFrame(reason=f"first frame is {which or 'empty'}, not request_relay")
    rr: rz.RequestRelay = msg.request_relay
    if licence and rr.licence_key != licence:
        return FirstFrame(reason="wrong licence key")
    if not rr.uuid:
        return FirstFrame(reason="empty uuid")
    return FirstFrame(uuid=rr.uuid)
