"""Which relay a request may name: the relays a viewer can legitimately have been given.

hbbs forwards whatever relay a requester names, so anyone with the key could
make every online host connect to a listener of their choosing; LiteDesk
forwards only relays it announces, its own, or one the host itself named to
that viewer.  Sans-IO; apart from the controller as a policy with its own
tests.
"""

from __future__ import annotations

from litedesk.rendezvous.relaylist import DEFAULT_RELAY_PORT, RelayList
from litedesk.wire.address import parse_host_port
from litedesk.wire.addrmangle import normalize_host

#: How long a relay a host named in its answer stays usable by that viewer:
#: a stock client asks for the relay after failing the direct path (up to
#: 18 s) and retries 3 times with 18 s each.
VOUCH_WINDOW = 120.0
MAX_VOUCHED = 10_000


def normalize_relay(entry: str) -> tuple[str, int] | None:
    """A relay entry as C{(host, port)} for comparison; None if it does not parse.

    Host names compare case-insensitively, IP addresses in their normal form
    (C{::ffff:1.2.3.4} is C{1.2.3.4}); the port defaults to 21117 as clients do
    (RustDesk C{check_port(relay_server, RELAY_PORT)}).
    """
    try:
        host, port = parse_host_port(entry, DEFAULT_RELAY_PORT)
    except ValueError:
        return None
    host = host.strip().rstrip(".").lower()
    if not host:
        return None
    return normalize_host(host), port


class RelayVouchers:
    """The relays each viewer may name for each host, and for how long."""

    def __init__(self, relays: RelayList, own_relay_port: int = 0) -> None:
        self.relays = relays
        #: The TCP port of the relay running in this process (0: none).
        self.own_relay_port = own_relay_port
        # (host id, viewer IP) -> (relay the host itself named, expiry)
        self._vouched: dict[tuple[str, str], tuple[tuple[str, int], float]] = {}

    def known(
        self, relay_server: str, local_ip: str, viewer_ip: str, peer_id: str, now: float
    ) -> bool:
        """Is C{relay_server} one a stock viewer of C{peer_id} can legitimately name?

        The viewer takes it from the host's answer (PunchHoleResponse.relay_server,
        RustDesk client.rs _start_inner), which the host took from our push or
        from its own relay-server option or derived (rendezvous host:port+1,
        rendezvous_mediator.rs get_relay_server).  So: empty (host's default),
        a relay we announce, our own relay on the address this request came
        to, or a relay the registered host itself named to this viewer's IP.
        """
        if not relay_server.strip():
            return True
        want = normalize_relay(relay_server)
        if want is None:
            return False
        for entry in self.relays.configured:
            if normalize_relay(entry) == want:
                return True
        if self.own_relay_port and want == (normalize_host(local_ip), self.own_relay_port):
            return True
        vouched = self._vouched.get((peer_id, viewer_ip))
        return vouched is not None and vouched[0] == want and vouched[1] > now

    def vouch(
        self,
        host_ip: str | None,
        answer_ip: str,
        peer_id: str,
        relay_server: str,
        viewer_ip: str,
        now: float,
    ) -> None:
        """Remember the relay a host named in its answer to C{viewer_ip}, if it is the host.

        Only an answer from the registered host's IP counts: anyone can send a
        PunchHoleSent naming any id.  C{host_ip} is the registered host's IP
        (None: not registered), C{answer_ip} where the answer came from.
        """
        if not relay_server.strip():
            return
        relay = normalize_relay(relay_server)
        if host_ip is None or relay is None:
            return
        if normalize_host(host_ip) != normalize_host(answer_ip):
            return
        if len(self._vouched) >= MAX_VOUCHED:
            self._vouched = {k: v for k, v in self._vouched.items() if v[1] > now}
            while len(self._vouched) >= MAX_VOUCHED:
                del self._vouched[next(iter(self._vouched))]
        self._vouched[(peer_id, viewer_ip)] = (relay, now + VOUCH_WINDOW)
