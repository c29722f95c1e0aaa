# -*- test-case-name: tests.test_relay -*-
"""hbbr-compatible relay: the L{Relay} controller that owns the state, and its factory.

The legs are L{litedesk.relay.leg.RelayProtocol}; their settings are
L{litedesk.relay.settings.RelaySettings}.

Wire behaviour (docs/protocol.rst §6)::

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

A leg may also come from the WebSocket listener (L{litedesk.websocket.relay}):
the same L{RelayProtocol} on a transport that turns messages into frames and
back, so it pairs with TCP legs by uuid under the same rules; it has no
socket of its own, so it reads and writes through Twisted (no C{recv_into}
or C{splice}), and L{RelayProtocol.touch} lets its pings count as activity.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from litedesk.relay.leg import PAUSE_BUDGET, PAUSE_WAIT, RelayProtocol, peer_text
from litedesk.relay.limiter import EarlyBudget, PairLimiter, TokenBucket, mbps_to_bytes
from litedesk.relay.settings import RelaySettings
from litedesk.relay.table import REFUSAL_LIMITS, Pair, PairingTable, Phase
from litedesk.wire.addrmangle import normalize_host

if TYPE_CHECKING:
    from litedesk.ops.event_log import EventSink

# A leg in its first frame may hold the frame and its length header.
_MAX_HEADER = 4
# At most one "early-data budget exhausted" warning per this many seconds: a
# flood would otherwise write one line per paused connection.
EXHAUSTED_LOG_INTERVAL = 10.0


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
        #: Where finished pairs and refusals are reported (--event-log); set
        #: by the assembly.
        self.events: EventSink | None = None
        #: Connections refused at accept, by C{Refusal.limit}.
        self.refusals: dict[str, int] = dict.fromkeys(REFUSAL_LIMITS, 0)

    # -- accept -----------------------------------------------------------

    def build(self, addr: IAddress) -> RelayProtocol | None:
        host = getattr(addr, "host", None)
        ip = sys.intern(normalize_host(host)) if isinstance(host, str) else "local"
        refusal = self.table.check_accept(ip)
        if refusal is not None:
            self.refusals[refusal.limit] += 1
            if self.events is not None:
                self.events.relay_refused(ip, refusal.limit)
            if refusal.limit == "blocklist":
                self._log.warn(
                    "relay refused {peer}: address is in the blocklist",
                    peer=peer_text(addr),
                    limit="blocklist",
                    relay_event="refused",
                )
            else:
                self._log.warn(
                    "relay refused {peer}: limit {limit} reached ({count} of {value})",
                    peer=peer_text(addr),
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
            leg.set_read_size(read_size)
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
        a._unpause(PAUSE_WAIT | PAUSE_BUDGET)
        b._unpause(PAUSE_WAIT | PAUSE_BUDGET)

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
            c.handle.set_read_size(size)

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
        if self.events is not None:
            self.events.relay_pair_ended(
                pair.uuid,
                pair.a.ip,
                pair.b.ip,
                pair.a_to_b,
                pair.b_to_a,
                pair.ended - pair.started,
                pair.reason,
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
