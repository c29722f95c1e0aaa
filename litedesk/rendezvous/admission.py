"""Which punch/relay requests reach a host: per connection and per source IP.

Sans-IO (the caller passes the time); apart from the controller because it is
a policy against unauthenticated clients with its own limits and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.floodguard import FloodGuard
from litedesk.rendezvous.sinks import ReplySink

#: A stock RustDesk client resends an unanswered PunchHoleRequest on the same
#: TCP connection, three times in all (src/client.rs _start_inner,
#: "for i in 1..=3"); every RequestRelay attempt opens a new connection
#: (client.rs request_relay: "use different socket ... for each attempt").
#: So one connection carries at most three identical PunchHoleRequests or
#: exactly one RequestRelay, never both.
MAX_PUNCH_REPEATS = 3
#: Punch/relay requests per second from one source IP, and the burst.  One
#: connect costs a stock client at most 3 + 3 requests.
DEFAULT_REQUEST_RATE = 2.0
REQUEST_BURST_FACTOR = 10.0

_TOO_MANY = "Too many connection requests from your address; try again in a few seconds"


@dataclass(slots=True)
class _ConnRequests:
    """What one TCP connection has asked for so far."""

    kind: str
    peer_id: str
    count: int = 1


class RequestAdmission:
    """Admits punch/relay requests; counts and logs each refusal with its reason.

    @ivar requests: what each open connection has asked for so far.
    """

    _log = Logger(namespace="litedesk.rendezvous.server.RendezvousServer")

    def __init__(self, guard: FloodGuard | None, counters: dict[str, int]) -> None:
        if guard is None:  # (not `or`: an empty FloodGuard is falsy)
            guard = FloodGuard(DEFAULT_REQUEST_RATE, DEFAULT_REQUEST_RATE * REQUEST_BURST_FACTOR)
        self.guard = guard
        self.counters = counters
        self.requests: dict[ReplySink, _ConnRequests] = {}

    def forget(self, conn: ReplySink) -> None:
        """C{conn} closed."""
        self.requests.pop(conn, None)

    def admit(self, conn: ReplySink, kind: str, peer_id: str, now: float) -> bool:
        """May this punch/relay request go to a host?  False: refused, close.

        Each request makes an online host act (open a relay leg, punch, listen),
        so a connection gets what a stock client needs and no more
        (L{MAX_PUNCH_REPEATS}), and one source IP gets a token bucket.
        """
        seen = self.requests.get(conn)
        if seen is not None:
            repeat = kind == seen.kind == "punch_hole_request" and peer_id == seen.peer_id
            if not repeat or seen.count >= MAX_PUNCH_REPEATS:
                self.counters["requests_refused_connection"] += 1
                self._log.warn(
                    "Refused {kind} for {peer_id} from {ip}: request {n} on one TCP "
                    "connection after {first} for {first_id}; closing",
                    kind=kind,
                    peer_id=peer_id,
                    ip=conn.addr[0],
                    n=seen.count + 1,
                    first=seen.kind,
                    first_id=seen.peer_id,
                )
                return False
        if not self.guard.allow(conn.addr[0], now):
            self.counters["requests_refused_rate"] += 1
            self._log.warn(
                "Refused {kind} for {peer_id} from {ip}: more than {rate}/s punch/relay "
                "requests from this IP; closing",
                kind=kind,
                peer_id=peer_id,
                ip=conn.addr[0],
                rate=self.guard.rate,
            )
            # Stock clients show these texts as the reason (client.rs bails
            # with other_failure / refuse_reason).
            if kind == "punch_hole_request":
                resp = rz.PunchHoleResponse(other_failure=_TOO_MANY)
                conn.send_message(rz.RendezvousMessage(punch_hole_response=resp))
            else:
                rr = rz.RelayResponse(refuse_reason=_TOO_MANY)
                conn.send_message(rz.RendezvousMessage(relay_response=rr))
            return False
        if seen is None:
            self.requests[conn] = _ConnRequests(kind, peer_id)
        else:
            seen.count += 1
        return True
