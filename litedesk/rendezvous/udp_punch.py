"""UDP punch brokering for RustDesk 1.4.1 and later: the rules, sans-IO.

What the peers do (RustDesk C{src/client.rs} C{_start}, C{_start_inner},
C{test_udp_uat}; C{src/rendezvous_mediator.rs} C{handle_punch_hole},
C{punch_udp_hole}; C{src/common.rs} C{punch_udp}), with the option
C{enable-udp-punch} on:

1. The viewer opens a UDP socket and sends C{TestNatRequest{}} (3 bytes) from
   it to the server's UDP port P, again every 20 ms growing to 200 ms,
   until its TCP request goes out.  It takes its public UDP port from a
   C{TestNatResponse} on that socket, or from public STUN servers, which it
   probes from I{another} socket.
2. Its C{PunchHoleRequest} (TCP or WebSocket) carries that port in
   C{udp_port}; 0 when it has none.
3. The server's C{PunchHole} to the host carries C{udp_port}.
4. The host opens a fresh UDP socket, sends its C{PunchHoleSent} from it to
   port P (three copies, 10-30 ms apart) and sends empty datagrams to the
   viewer's IP (as the server saw it) at C{udp_port}.  It sends no TCP
   C{PunchHoleSent} for that request.
5. The server answers the viewer, on its TCP or WebSocket connection, with
   C{PunchHoleResponse{socket_addr = the source of the UDP PunchHoleSent,
   is_udp = true}}; the viewer aims its UDP socket there, and a KCP stream
   follows the first datagrams.

What the server must not do is answer by UDP: a forged source would turn
any UDP answer bigger than its request into amplified traffic at a victim,
and C{TestNatResponse} (6-8 bytes) is bigger than the 3-byte request.  So
the server never answers C{TestNatRequest} by UDP.  It notes where the
request came from instead, the NAT mapping of the viewer's punch socket,
and forwards I{that} port when the viewer's request asks for a UDP punch
at all.  That also mends a flaw of the stock viewer: the STUN port it
sends is another socket's, at which nobody listens.

L{UdpPunchBroker} holds the two tables this needs, both bounded and
short-lived: the UDP C{TestNatRequest} sources seen recently (per IP) and
the punches waiting for a host's UDP C{PunchHoleSent} (per viewer
connection).  The controller (L{litedesk.rendezvous.server}) does the
sending; docs/protocol.rst §5.12 describes the behaviour.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from litedesk.rendezvous.registry import source_site
from litedesk.wire.address import Address

#: How long a UDP TestNatRequest's source counts as the viewer's punch
#: socket.  The viewer stops the test right before its PunchHoleRequest, and
#: re-sends that request on the same connection after 3 and 9 s more.
OBSERVATION_TTL = 20.0
#: IPs whose recent UDP TestNatRequest sources are kept; more evicts the
#: oldest.  Spoofed sources can fill the table (then real viewers fall back
#: to the port they sent), never grow it.
MAX_OBSERVED_SOURCES = 16_384
#: Recent source ports kept per IP (viewers behind one NAT, reconnects).
PORTS_PER_SOURCE = 4
#: How long a pushed UDP punch waits for the host's PunchHoleSent.  A viewer
#: waits at most 3 + 6 + 9 s on its connection, and the listener closes a
#: connection silent for 30 s.
PUNCH_TTL = 30.0
#: Punches waiting at once.  Each belongs to a parked viewer connection, which
#: the connection limits already bound; this is a second bound.
MAX_PENDING = 65_536


@dataclass(frozen=True, slots=True)
class PortChoice:
    """The C{udp_port} to push to the host (0: no UDP punch) and why, for the log."""

    port: int
    reason: str


@dataclass(slots=True)
class PendingPunch:
    """A C{PunchHole} with C{udp_port} pushed for one viewer connection."""

    peer_id: str
    host_sites: frozenset[str]
    expires: float
    refused: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """What a UDP C{PunchHoleSent} may do.

    C{accepted}: deliver it to the viewer.  Otherwise C{reason} says why not,
    C{waiting} whether a punch was pending for that viewer at all (if not,
    it is mostly a stock host's second and third copy), and C{first_refusal}
    whether this is the first refusal for that punch (worth a warning; the
    rest are noise: a spoofer may send thousands).
    """

    accepted: bool
    reason: str = ""
    waiting: bool = False
    first_refusal: bool = False


class UdpPunchBroker:
    """Recent UDP NAT-test sources and pending UDP punches, on the caller's clock.

    Sans-IO: every method takes the time (seconds); nothing here sends.
    """

    def __init__(
        self,
        *,
        observation_ttl: float = OBSERVATION_TTL,
        max_sources: int = MAX_OBSERVED_SOURCES,
        ports_per_source: int = PORTS_PER_SOURCE,
        punch_ttl: float = PUNCH_TTL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.observation_ttl = observation_ttl
        self.max_sources = max(1, max_sources)
        self.ports_per_source = max(1, ports_per_source)
        self.punch_ttl = punch_ttl
        self.max_pending = max(1, max_pending)
        # ip -> [(port, time)], oldest first; the dict in order of last update.
        self._seen: OrderedDict[str, list[tuple[int, float]]] = OrderedDict()
        # viewer connection address -> its punch; in order of (re)arming.
        self._pending: OrderedDict[Address, PendingPunch] = OrderedDict()

    # -- the viewer's UDP NAT test --------------------------------------------

    def observe(self, source: Address, now: float) -> None:
        """A UDP C{TestNatRequest} came from C{source} (already normalised)."""
        self._expire_seen(now)
        ip, port = source
        ports = self._seen.pop(ip, [])
        ports = [(p, t) for p, t in ports if p != port and now - t <= self.observation_ttl]
        ports.append((port, now))
        self._seen[ip] = ports[-self.ports_per_source :]
        while len(self._seen) > self.max_sources:
            self._seen.popitem(last=False)

    def viewer_port(self, ip: str, claimed: int, now: float) -> PortChoice:
        """The C{udp_port} for a C{PunchHoleRequest} from C{ip} that sent C{claimed}.

        Only a request that asks for a UDP punch (C{claimed > 0}) gets one:
        RustDesk 1.4.2 and later send a second request without UDP in
        parallel, whose TCP punch a UDP answer would spoil.  The port is the
        one the viewer's own UDP NAT test came from when the server saw one
        from that IP: the claimed one if it is among them, else the most
        recent.  Without one the claimed port stands, if it is a port.
        """
        if claimed <= 0:
            return PortChoice(0, "")
        seen = self._seen.get(ip, [])
        ports = [p for p, t in seen if now - t <= self.observation_ttl]
        if claimed in ports:
            return PortChoice(claimed, "(as sent, where its UDP NAT test came from)")
        if ports:
            return PortChoice(ports[-1], f"(from its UDP NAT test; it sent {claimed})")
        if claimed > 0xFFFF:
            return PortChoice(0, f"({claimed} is not a port)")
        return PortChoice(claimed, "(as sent; no UDP NAT test seen from its IP)")

    def observed_sources(self) -> int:
        return len(self._seen)

    def _expire_seen(self, now: float) -> None:
        # Entries are in order of their last update: the stale ones are first.
        while self._seen:
            ip, ports = next(iter(self._seen.items()))
            if now - ports[-1][1] <= self.observation_ttl:
                return
            del self._seen[ip]

    # -- punches waiting for the host ------------------------------------------

    def expect(self, viewer: Address, peer_id: str, host_ips: Iterable[str], now: float) -> None:
        """A C{PunchHole} with C{udp_port} went to C{peer_id} for C{viewer}.

        C{host_ips} are the host's registered addresses: its UDP
        C{PunchHoleSent} must come from one of their sites (an IPv4 address,
        an IPv6 /64), since a UDP source can be forged.
        """
        self._expire_pending(now)
        self._pending.pop(viewer, None)
        sites = frozenset(_site(ip) for ip in host_ips if ip)
        self._pending[viewer] = PendingPunch(peer_id, sites, now + self.punch_ttl)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)

    def claim(self, viewer: Address, peer_id: str, source_ip: str, now: float) -> Claim:
        """A UDP C{PunchHoleSent} from C{source_ip} for C{viewer}, naming C{peer_id}.

        Accepted once: the punch is then no longer pending.
        """
        self._expire_pending(now)
        pending = self._pending.get(viewer)
        if pending is None:
            return Claim(False, "no UDP punch is waiting for that viewer")
        if peer_id != pending.peer_id:
            reason = f"it names {peer_id[:100]!r}, the punch was for {pending.peer_id!r}"
        elif _site(source_ip) not in pending.host_sites:
            reason = "it does not come from the host's registered address"
        else:
            del self._pending[viewer]
            return Claim(True)
        first = not pending.refused
        pending.refused = True
        return Claim(False, reason, waiting=True, first_refusal=first)

    def forget(self, viewer: Address) -> None:
        """The viewer's connection is gone (or answered otherwise)."""
        self._pending.pop(viewer, None)

    def pending_count(self) -> int:
        return len(self._pending)

    def _expire_pending(self, now: float) -> None:
        while self._pending:
            viewer, pending = next(iter(self._pending.items()))
            if pending.expires > now:
                return
            del self._pending[viewer]


def _site(ip: str) -> str:
    """L{source_site}, without parsing an IPv4 address (it is its own site)."""
    return source_site(ip) if ":" in ip else ip
