"""UDP hole punching through two NATs, birthday probing included (sans-IO).

After the rendezvous exchange each side knows the other's public IP and the
public port the server saw for the other's socket 0.  L{UdpPunch} turns that
into a working UDP path, C{(our socket, peer address)}, on which QUIC then
runs (L{litedesk.quic}).  It only says what to send and when; the Twisted
driver (L{litedesk.nat.udp_puncher}) owns the sockets and the clock.

The datagrams (L{encode}, L{decode}), 30 bytes, network byte order::

    magic "LDPU" | version 1 | kind | token (8) | nonce (8) | echo (8)

C{kind} is PROBE, ACK, SELECT or SELECT_ACK.  The token (L{punch_token}) is
derived from the host's id on both sides, so a probe of another punch on the
same ports is told apart; the nonce is random per attempt and sender, and a
reply echoes the nonce it answers, so a stale reply of an earlier attempt
(same token) never completes this one.

The exchange:

  1. Both sides send PROBE from every socket to every known peer address,
     every 100 ms growing to 250 ms, paced at most L{PROBE_BATCH} per 10 ms
     (the symmetric side's 256 sockets take ~160 ms a round).  Each outgoing
     probe opens our own NAT for that peer address (RFC 5128 section 3.3);
     the peer's first probes are usually dropped by our router, which is why
     both sides repeat.
  2. A PROBE is answered with an ACK from the socket that got it to its
     source.  At the viewer a PROBE or ACK makes C{(socket, source)} a
     candidate: it sends SELECT there (again every 100 ms) and is done when a
     SELECT_ACK comes back.  A SELECT unanswered for L{SELECT_PATIENCE}
     makes the next candidate selected too (at most L{MAX_SELECTS}, all
     repeated), since the host may have taken any of them.  The host's
     winner is the first SELECT; it answers every repeat of it with
     SELECT_ACK, also after it is done, because the viewer starts QUIC only
     after that answer.  Choosing on one side only is ICE's
     controlling-agent rule (RFC 8445 section 8.1).

Hard NATs, by the birthday paradox (RFC 5128 section 3.4; as Tailscale does):
a symmetric NAT (Linux C{MASQUERADE --random-fully}) gives every destination
a new random public port, so the port the rendezvous server saw is useless
to the peer.  When exactly one side is symmetric (L{plan_for}), that side
opens L{HARD_SOCKETS} sockets and probes the cone side from each: 256 fresh
mappings on its NAT, each open only for the cone side's public address.  The
cone side additionally sends probes to L{SPRAY_PORTS} distinct random ports
of the symmetric side's IP (1024..65535, the range nf_nat picks from), at
~1000/s from 150 ms on, so that the hard side's mappings exist first.  Every
sprayed probe leaves a conntrack entry on the cone side's NAT, so a hit
works both ways: the probe reaches hard socket i, and socket i's next
probe passes the cone NAT.  With 256 mappings among 64,512 ports and 2,048
probes the chance that none matches is (1 - 256/64512) ** 2048 ~ 3e-4; a hit
is expected after ~252 probes, about 0.4 s into the punch.  With both sides
symmetric there is no fixed port to aim at on either side (each probe gets
a new random source port too): L{plan_for} returns None and the caller uses
the relay.

A peer that is not LiteDesk: RustDesk (1.4.1 and later) punches with empty
datagrams and then speaks KCP.  Any datagram from the peer's IP that is not
a probe sets L{UdpPunch.foreign} and ends the attempt at once, so the caller
can move on; other junk, probes with another token and probes from another
IP than the peer's (which would let a stranger who knows the host id steer
the viewer's choice) are only counted.

Bounds: at most L{HARD_SOCKETS} sockets, L{MAX_PEER_PORTS} peer ports and
L{SPRAY_PORTS} sprays per attempt; replies go through a token bucket
(L{REPLY_RATE}), so a flood of valid probes makes us send at most that many
replies a second and a flood of anything else makes us send nothing.  The
state is fixed when the attempt starts (O(sockets + sprays)) and does not
grow with what peers send.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

HARD_SOCKETS = 256  # sockets the symmetric side opens
SPRAY_PORTS = 2048  # distinct random peer ports the cone side probes
SPRAY_LOW = 1024  # nf_nat's default range for --random-fully
SPRAY_HIGH = 65535

MAGIC = b"LDPU"
VERSION = 1
PROBE, ACK, SELECT, SELECT_ACK = 1, 2, 3, 4
KIND_NAMES = {PROBE: "PROBE", ACK: "ACK", SELECT: "SELECT", SELECT_ACK: "SELECT_ACK"}
TOKEN_SIZE = 8
_WIRE = struct.Struct("!4sBB8s8s8s")
PROBE_SIZE = _WIRE.size  # 30 bytes

ROLES = ("host", "viewer")
PACE = 0.01  # seconds between two paced batches
PROBE_FIRST_INTERVAL = 0.1  # from one round of probes to the next, growing ...
PROBE_MAX_INTERVAL = 0.25  # ... to this
PROBE_GROWTH = 1.5
PROBE_BATCH = 16  # probes per paced batch: <= 1,600/s
SPRAY_DELAY = 0.15  # the hard side's first mappings exist by then
SPRAY_BATCH = 10  # sprayed probes per paced batch: ~1,000/s
SELECT_INTERVAL = 0.1
SELECT_PATIENCE = 0.5  # a newer candidate is tried when a SELECT waited this long
MAX_SELECTS = 4  # pairs the viewer keeps selecting (the host may have taken any)
MAX_PEER_PORTS = 4
REPLY_RATE = 400.0  # ACK and SELECT_ACK per second at most ...
REPLY_BURST = 40.0  # ... after a burst of this many
#: The most datagrams one attempt sends in a second (probes, sprays, selects, replies).
MAX_SEND_RATE = (PROBE_BATCH + SPRAY_BATCH) / PACE + MAX_SELECTS / SELECT_INTERVAL + REPLY_RATE

Address = tuple[str, int]


class Probe(NamedTuple):
    """One punch datagram, decoded."""

    kind: int
    token: bytes
    nonce: bytes
    echo: bytes


class Send(NamedTuple):
    """A datagram to send: from our socket C{socket}, to C{address}."""

    socket: int
    address: Address
    payload: bytes


@dataclass(frozen=True)
class Plan:
    """How to punch: how many sockets we open, and whether we spray the peer's ports."""

    sockets: int
    spray: bool


def punch_token(host_id: str) -> bytes:
    """The 8-byte token both sides derive from the host's id."""
    return hashlib.sha256(b"litedesk udp punch v1\0" + host_id.encode("utf-8")).digest()[:8]


def plan_for(own_symmetric: bool, peer_symmetric: bool) -> Plan | None:
    """The punch plan for our NAT and the peer's; None when both are symmetric (relay)."""
    if own_symmetric and peer_symmetric:
        return None
    if own_symmetric:
        return Plan(sockets=HARD_SOCKETS, spray=False)
    return Plan(sockets=1, spray=peer_symmetric)


def encode(probe: Probe) -> bytes:
    """The datagram for C{probe} (token, nonce and echo are 8 bytes each)."""
    if not (len(probe.token) == len(probe.nonce) == len(probe.echo) == TOKEN_SIZE):
        raise ValueError("token, nonce and echo must be 8 bytes each")
    if probe.kind not in KIND_NAMES:
        raise ValueError(f"unknown probe kind {probe.kind}")
    return _WIRE.pack(MAGIC, VERSION, probe.kind, probe.token, probe.nonce, probe.echo)


def decode(data: bytes) -> Probe | None:
    """The probe in C{data}, or None for anything else (never raises)."""
    if len(data) != PROBE_SIZE:
        return None
    magic, version, kind, token, nonce, echo = _WIRE.unpack(data)
    if magic != MAGIC or version != VERSION or kind not in KIND_NAMES:
        return None
    return Probe(kind, token, nonce, echo)


class UdpPunch:
    """One punch attempt of one side; time comes in as C{now} on every call.

    @ivar winner: C{(our socket index, peer address)} once the path is chosen.
    @ivar foreign: the peer's IP sent something that is not a probe (a
        RustDesk peer punching for KCP): the attempt is over, without winner.
    @ivar probes_sent: PROBE datagrams sent (sprayed ones included).
    @ivar sent: every datagram sent.
    @ivar junk: datagrams that were not probes; C{strangers}: probes from
        another IP than the peer's; C{wrong_token}: probes of another punch;
        C{stale}: replies echoing a nonce that is not ours;
        C{replies_dropped}: replies the rate limit did not send.
    """

    def __init__(
        self,
        *,
        role: str,
        token: bytes,
        sockets: int,
        peer_ip: str,
        peer_ports: Sequence[int],
        spray: bool,
        now: float,
        rng: random.Random | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be 'host' or 'viewer', not {role!r}")
        if len(token) != TOKEN_SIZE:
            raise ValueError("the token must be 8 bytes")
        if not 1 <= sockets <= HARD_SOCKETS:
            raise ValueError(f"1 to {HARD_SOCKETS} sockets, not {sockets}")
        ports = [p for p in dict.fromkeys(peer_ports) if 0 < p <= 0xFFFF]
        if not ports:
            raise ValueError("no usable peer port")
        rng = rng if rng is not None else random.SystemRandom()
        self.role = role
        self.token = token
        self.sockets = sockets
        self.peer_ip = peer_ip
        self.targets: list[Address] = [(peer_ip, p) for p in ports[:MAX_PEER_PORTS]]
        self.spray_ports: list[int] = (
            rng.sample(range(SPRAY_LOW, SPRAY_HIGH + 1), SPRAY_PORTS) if spray else []
        )
        self.nonce = rng.randbytes(TOKEN_SIZE)
        self.started_at = now
        self.winner: tuple[int, Address] | None = None
        self.foreign = False
        self.probes_sent = self.sent = 0
        self.junk = self.strangers = self.wrong_token = self.stale = self.replies_dropped = 0
        self._started = False
        self._probe = encode(Probe(PROBE, token, self.nonce, bytes(TOKEN_SIZE)))
        self._probe_due = self._round_start = now
        self._interval = PROBE_FIRST_INTERVAL
        self._cursor = 0
        self._sprayed = 0
        self._spray_due = now + SPRAY_DELAY
        self._selected: list[tuple[int, Address, bytes]] = []
        self._select_due = math.inf
        self._last_select_at = now
        self._allowance = REPLY_BURST
        self._allowance_at = now

    # -- the schedule --------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.winner is not None or self.foreign

    def start(self, now: float) -> list[Send]:
        """The first datagrams; then call L{tick} at L{next_deadline}."""
        self._started = True
        self._probe_due = self._round_start = now
        self._spray_due = now + SPRAY_DELAY
        return self.tick(now)

    def next_deadline(self) -> float | None:
        """When L{tick} has something to send; None when finished."""
        if self.finished or not self._started:
            return None
        due = [self._probe_due, self._select_due]
        if self._sprayed < len(self.spray_ports):
            due.append(self._spray_due)
        return min(due)

    def tick(self, now: float) -> list[Send]:
        """What is due at C{now}."""
        if self.finished or not self._started:
            return []
        out: list[Send] = []
        if now >= self._probe_due:
            out += self._probe_step(now)
        if self._sprayed < len(self.spray_ports) and now >= self._spray_due:
            out += self._spray_step(now)
        if now >= self._select_due:
            out += self._selects()
            self._select_due = now + SELECT_INTERVAL
        self.sent += len(out)
        return out

    def _probe_step(self, now: float) -> list[Send]:
        """The next paced batch of this round: every socket to every target."""
        total = self.sockets * len(self.targets)
        count = min(PROBE_BATCH, total - self._cursor)
        out = []
        for n in range(self._cursor, self._cursor + count):
            socket, target = divmod(n, len(self.targets))
            out.append(Send(socket, self.targets[target], self._probe))
        self._cursor += count
        self.probes_sent += count
        if self._cursor < total:
            self._probe_due = now + PACE
        else:
            self._cursor = 0
            self._probe_due = max(self._round_start + self._interval, now + PACE)
            self._round_start = self._probe_due
            self._interval = min(self._interval * PROBE_GROWTH, PROBE_MAX_INTERVAL)
        return out

    def _spray_step(self, now: float) -> list[Send]:
        """The next batch of sprayed probes, from socket 0; a late tick never catches up."""
        ports = self.spray_ports[self._sprayed : self._sprayed + SPRAY_BATCH]
        self._sprayed += len(ports)
        self.probes_sent += len(ports)
        self._spray_due = now + PACE
        return [Send(0, (self.peer_ip, port), self._probe) for port in ports]

    def _selects(self) -> list[Send]:
        return [
            Send(socket, source, encode(Probe(SELECT, self.token, self.nonce, peer_nonce)))
            for socket, source, peer_nonce in self._selected
        ]

    # -- what arrives ----------------------------------------------------------------

    def received(self, socket_index: int, data: bytes, source: Address, now: float) -> list[Send]:
        """A datagram on our socket C{socket_index} from C{source}; returns the replies."""
        probe = decode(data)
        if probe is None or not 0 <= socket_index < self.sockets:
            self.junk += 1
            if self.winner is None and source[0] == self.peer_ip:
                self.foreign = True
            return []
        if source[0] != self.peer_ip:
            # The peer's NAT uses the public IP the rendezvous server saw; a
            # probe from elsewhere would only let a stranger who knows the
            # host id steer the viewer's choice.
            self.strangers += 1
            return []
        if probe.token != self.token:
            self.wrong_token += 1
            return []
        if probe.nonce == self.nonce:
            self.stale += 1  # our own probe come back (hairpin or loopback)
            return []
        if self.role == "host":
            out = self._host_received(socket_index, probe, source, now)
        else:
            out = self._viewer_received(socket_index, probe, source, now)
        self.sent += len(out)
        return out

    def _reply(self, socket: int, kind: int, to: Address, echo: bytes, now: float) -> list[Send]:
        """One reply if the token bucket allows it."""
        elapsed = max(0.0, now - self._allowance_at)
        self._allowance = min(REPLY_BURST, self._allowance + elapsed * REPLY_RATE)
        self._allowance_at = max(now, self._allowance_at)
        if self._allowance < 1.0:
            self.replies_dropped += 1
            return []
        self._allowance -= 1.0
        return [Send(socket, to, encode(Probe(kind, self.token, self.nonce, echo)))]

    def _host_received(self, socket: int, probe: Probe, source: Address, now: float) -> list[Send]:
        if probe.kind == PROBE and self.winner is None:
            return self._reply(socket, ACK, source, probe.nonce, now)
        if probe.kind != SELECT:
            return []
        if probe.echo != self.nonce:
            self.stale += 1
            return []
        if self.winner is None:
            self.winner = (socket, source)
        if self.winner == (socket, source):
            return self._reply(socket, SELECT_ACK, source, probe.nonce, now)
        return []

    def _viewer_received(
        self, socket: int, probe: Probe, source: Address, now: float
    ) -> list[Send]:
        if self.finished:
            return []
        if probe.kind in (ACK, SELECT_ACK) and probe.echo != self.nonce:
            self.stale += 1
            return []
        if probe.kind == SELECT_ACK:
            # The host answers only the pair it took; whichever that is, it is ours.
            self.winner = (socket, source)
            return []
        out = []
        if probe.kind == PROBE:
            out += self._reply(socket, ACK, source, probe.nonce, now)
        if probe.kind in (PROBE, ACK):
            out += self._candidate(socket, source, probe.nonce, now)
        return out

    def _candidate(self, socket: int, source: Address, peer_nonce: bytes, now: float) -> list[Send]:
        """Select C{(socket, source)} if nothing is selected or the last SELECT went unanswered."""
        if any(s == socket and a == source for s, a, _ in self._selected):
            return []
        if len(self._selected) >= MAX_SELECTS:
            return []
        if self._selected and now - self._last_select_at < SELECT_PATIENCE:
            return []
        self._selected.append((socket, source, peer_nonce))
        self._last_select_at = now
        self._select_due = now + SELECT_INTERVAL
        return [Send(socket, source, encode(Probe(SELECT, self.token, self.nonce, peer_nonce)))]

    @property
    def selected(self) -> list[tuple[int, Address]]:
        """The pairs the viewer has sent SELECT on, oldest first."""
        return [(s, a) for s, a, _ in self._selected]
