"""UDP hole punching: the probe codec, the punch state machine and its Twisted driver.

- The codec (litedesk.nat.udp_probe): hypothesis shows that no datagram makes
  L{decode} raise and that every probe survives a round trip.
- The state machine on in-memory NATs driven by a C{Clock}
  (tests/support/natsim.py): cone/cone finds the path; one symmetric side
  (random port per destination) is reached by birthday probing whichever
  side it is, and is not without the spray; the spray's size and range; the
  send rate stays capped under a flood of valid probes; junk, other tokens
  and stale replies are only counted; a RustDesk-like peer (empty
  datagrams) ends the attempt at once; the host keeps confirming its choice.
- The driver (litedesk.nat.udp_puncher) on real loopback sockets: two
  punchers find each other and the path carries data; loser sockets are
  closed; a silent peer gives None at the end of the window; junk from
  elsewhere is passed on, not fatal; an empty datagram from the peer ends
  the punch without waiting for the window.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.nat.udp_probe import (
    ACK,
    HARD_SOCKETS,
    KIND_NAMES,
    MAX_SELECTS,
    MAX_SEND_RATE,
    PROBE,
    PROBE_SIZE,
    REPLY_RATE,
    SELECT,
    SELECT_ACK,
    SPRAY_HIGH,
    SPRAY_LOW,
    SPRAY_PORTS,
    Plan,
    Probe,
    UdpPunch,
    decode,
    encode,
    plan_for,
    punch_token,
)
from litedesk.nat.udp_puncher import PunchResult, UdpPuncher

from .support.natsim import SimNat, SimSide, SimWire, run_until

TOKEN = punch_token("123456789")
HOST_WAN, VIEWER_WAN = "198.51.100.11", "198.51.100.12"
eight = st.binary(min_size=8, max_size=8)
probes = st.builds(Probe, st.sampled_from(sorted(KIND_NAMES)), eight, eight, eight)


class CodecTests(SynchronousTestCase):
    @given(st.binary(max_size=64))
    def test_garbage_never_raises(self, data: bytes) -> None:
        """Any datagram decodes to None or to a probe of a known kind, never an exception."""
        probe = decode(data)
        if probe is not None:
            self.assertIn(probe.kind, KIND_NAMES)
            self.assertEqual(encode(probe), data)

    @given(probes)
    def test_round_trip(self, probe: Probe) -> None:
        """Every probe comes back from its 30-byte datagram unchanged."""
        data = encode(probe)
        self.assertEqual(len(data), PROBE_SIZE)
        self.assertEqual(decode(data), probe)

    @given(probes, st.integers(0, PROBE_SIZE - 1), st.integers(1, 255))
    def test_changed_header_is_not_ours(self, probe: Probe, at: int, flip: int) -> None:
        """A probe with its magic or version changed, or cut short, is not ours."""
        data = bytearray(encode(probe))
        if at < 5:
            data[at] ^= flip
            self.assertIsNone(decode(bytes(data)))
        self.assertIsNone(decode(bytes(data[:at])))
        self.assertIsNone(decode(bytes(data) + b"\0"))

    def test_token_is_per_host(self) -> None:
        """Both sides derive the same 8-byte token from the host id; other ids differ."""
        self.assertEqual(punch_token("123456789"), TOKEN)
        self.assertEqual(len(TOKEN), 8)
        self.assertNotEqual(punch_token("123456780"), TOKEN)

    def test_plan(self) -> None:
        """One socket between cones; 256 on a symmetric side; spray towards it; relay for two."""
        self.assertEqual(plan_for(False, False), Plan(sockets=1, spray=False))
        self.assertEqual(plan_for(True, False), Plan(sockets=HARD_SOCKETS, spray=False))
        self.assertEqual(plan_for(False, True), Plan(sockets=1, spray=True))
        self.assertIsNone(plan_for(True, True))


def _punch(role: str, symmetric: dict[str, bool], peer: SimSide, seed: int) -> UdpPunch:
    """A punch for C{role}; the peer's port is what a reflector saw of its socket 0."""
    own = symmetric[role]
    other = symmetric["viewer" if role == "host" else "host"]
    plan = plan_for(own, other)
    assert plan is not None and peer.nat is not None
    seen = peer.nat.outbound(peer.inside(0), ("198.51.100.1", 3478))[1]
    return UdpPunch(
        role=role,
        token=TOKEN,
        sockets=plan.sockets,
        peer_ip=peer.public_ip,
        peer_ports=[seen],
        spray=plan.spray,
        now=0.0,
        rng=random.Random(seed),
    )


class StateMachineTests(SynchronousTestCase):
    """Two L{UdpPunch} behind simulated NATs, on a Clock."""

    def pair(
        self, host_nat: str, viewer_nat: str, seed: int = 1, spray: bool | None = None
    ) -> tuple[SimSide, SimSide, SimWire]:
        self.clock = Clock()
        wire = SimWire(self.clock)
        rng = random.Random(f"nat-{seed}")  # not the punch's sequence: its ports are secret
        host = SimSide(wire, "10.0.1.10", SimNat(HOST_WAN, host_nat, rng))
        viewer = SimSide(wire, "10.0.2.20", SimNat(VIEWER_WAN, viewer_nat, rng))
        symmetric = {"host": host_nat == "symmetric", "viewer": viewer_nat == "symmetric"}
        host_punch = _punch("host", symmetric, viewer, seed)
        viewer_punch = _punch("viewer", symmetric, host, seed + 1000)
        if spray is not None:
            for p in (host_punch, viewer_punch):
                p.spray_ports = p.spray_ports if spray else []
        host.start(host_punch)
        viewer.start(viewer_punch)
        return host, viewer, wire

    def punch_through(self, host: SimSide, viewer: SimSide, window: float) -> None:
        """Both sides agree on one path, and each side's winner is the other's socket."""
        assert host.punch is not None and viewer.punch is not None
        h_punch, v_punch = host.punch, viewer.punch
        run_until(self.clock, lambda: v_punch.finished and h_punch.finished, window)
        self.assertIsNotNone(viewer.punch.winner, "the viewer found no path")
        self.assertIsNotNone(host.punch.winner, "the host found no path")
        assert viewer.punch.winner is not None and host.punch.winner is not None
        v_socket, v_remote = viewer.punch.winner
        h_socket, h_remote = host.punch.winner
        assert host.nat is not None and viewer.nat is not None
        self.assertEqual(
            v_remote, (HOST_WAN, host.nat.public_port(host.inside(h_socket), h_remote))
        )
        self.assertEqual(
            h_remote, (VIEWER_WAN, viewer.nat.public_port(viewer.inside(v_socket), v_remote))
        )
        self.assertLessEqual(max(host.finished_at or 0, viewer.finished_at or 0), window)

    def test_cone_cone(self) -> None:
        """Between two cone NATs the path is found within the plain 4 s window, one socket each."""
        host, viewer, _ = self.pair("cone", "cone")
        self.punch_through(host, viewer, 4.0)
        assert viewer.punch is not None
        self.assertEqual(viewer.punch.winner, (0, (HOST_WAN, 40000)))

    def test_symmetric_viewer(self) -> None:
        """A viewer behind a symmetric NAT is reached by birthday probing, 10 of 10 seeds."""
        for seed in range(10):
            host, viewer, _ = self.pair("cone", "symmetric", seed)
            self.punch_through(host, viewer, 8.0)

    def test_symmetric_host(self) -> None:
        """A host behind a symmetric NAT is reached the same way, 10 of 10 seeds."""
        for seed in range(10):
            host, viewer, _ = self.pair("symmetric", "cone", seed)
            self.punch_through(host, viewer, 8.0)

    def test_symmetric_without_spray_fails(self) -> None:
        """Without the cone side's spray, 256 sockets alone never get through (why we spray)."""
        host, viewer, _ = self.pair("cone", "symmetric", spray=False)
        assert host.punch is not None and viewer.punch is not None
        run_until(self.clock, lambda: False, 8.0)
        self.assertIsNone(host.punch.winner)
        self.assertIsNone(viewer.punch.winner)

    def test_spray_is_bounded(self) -> None:
        """Left without a hit, the cone side sprays SPRAY_PORTS distinct ports of the peer
        in 1024..65535, from its socket 0, at no more than ~1,000 a second."""
        punch = UdpPunch(
            role="host", token=TOKEN, sockets=1, peer_ip=VIEWER_WAN, peer_ports=[4000],
            spray=True, now=0.0, rng=random.Random(2),
        )  # fmt: skip
        sends = [(0.0, s) for s in punch.start(0.0)]
        while (due := punch.next_deadline()) is not None and due < 8.0:
            sends += [(due, s) for s in punch.tick(due)]
        sprayed = [(t, s) for t, s in sends if s.address != (VIEWER_WAN, 4000)]
        ports = [s.address[1] for _, s in sprayed]
        self.assertEqual(len(ports), SPRAY_PORTS)
        self.assertEqual(len(set(ports)), SPRAY_PORTS)
        self.assertTrue(all(SPRAY_LOW <= p <= SPRAY_HIGH for p in ports))
        self.assertEqual({s.socket for _, s in sprayed}, {0})
        self.assertEqual({s.address[0] for _, s in sprayed}, {VIEWER_WAN})
        self.assertGreaterEqual(min(t for t, _ in sprayed), 0.15)
        self.assertGreaterEqual(max(t for t, _ in sprayed) - min(t for t, _ in sprayed), 2.0)
        self.assertEqual(punch.probes_sent, len(sends))

    def test_send_rate_capped_under_flood(self) -> None:
        """A flood of valid probes from 20,000 ports of the peer's IP gets at most REPLY_RATE
        answers a second."""
        self.clock = Clock()
        wire = SimWire(self.clock)
        host = SimSide(wire, "10.0.1.10", SimNat(HOST_WAN, "cone"))
        punch = UdpPunch(
            role="host", token=TOKEN, sockets=1, peer_ip=VIEWER_WAN, peer_ports=[4000],
            spray=True, now=0.0, rng=random.Random(3),
        )  # fmt: skip
        host.start(punch)
        flood = encode(Probe(PROBE, TOKEN, b"attacker", bytes(8)))
        for n in range(20_000):
            source = (VIEWER_WAN, 1024 + n)
            assert host.nat is not None
            host.nat.outbound(host.inside(0), source)  # as if every one were invited
            wire.inject(source, (HOST_WAN, 40000), flood)
            if n % 100 == 0:
                run_until(self.clock, lambda: False, 0.01)
        run_until(self.clock, lambda: False, 2.0)
        times = sorted(t for t, _ in wire.sends)
        per_second = max(sum(1 for t in times if s <= t < s + 1.0) for s in times[::50])
        self.assertLessEqual(per_second, MAX_SEND_RATE)
        acks = sum(1 for _, s in wire.sends if s.payload[5] == ACK)
        self.assertLess(acks, REPLY_RATE * 2.2 + 40)
        self.assertGreater(punch.replies_dropped, 15_000)
        self.assertIsNone(punch.winner)
        self.assertFalse(punch.foreign)

    def _lone(self, role: str = "host") -> UdpPunch:
        punch = UdpPunch(
            role=role, token=TOKEN, sockets=1, peer_ip=VIEWER_WAN, peer_ports=[4000],
            spray=False, now=0.0, rng=random.Random(5),
        )  # fmt: skip
        punch.start(0.0)
        return punch

    @given(st.binary(max_size=64), st.sampled_from(["198.51.100.99", "203.0.113.5"]))
    def test_junk_is_counted_only(self, data: bytes, ip: str) -> None:
        """Junk, probes from strangers and other punches' probes get no answer and leave
        the attempt running."""
        for role in ("host", "viewer"):
            punch = self._lone(role)
            self.assertEqual(punch.received(0, data, (ip, 5000), 0.01), [])
            other = encode(Probe(PROBE, b"othertkn", b"n" * 8, bytes(8)))
            self.assertEqual(punch.received(0, other, (VIEWER_WAN, 4000), 0.02), [])
            ours = encode(Probe(PROBE, TOKEN, b"n" * 8, bytes(8)))
            self.assertEqual(punch.received(0, ours, (ip, 4000), 0.03), [])
            self.assertFalse(punch.finished)
            self.assertEqual(punch.selected, [])
            self.assertIsNotNone(punch.next_deadline())

    @given(
        st.sampled_from(["host", "viewer"]),
        st.lists(
            st.tuples(
                st.sampled_from(sorted(KIND_NAMES)),
                st.booleans(),  # our token
                st.booleans(),  # echoes our nonce
                eight,  # the sender's nonce
                st.sampled_from([(VIEWER_WAN, 4000), (VIEWER_WAN, 4001), ("203.0.113.9", 4000)]),
                st.integers(0, 1),  # our socket
                st.floats(0, 0.7),  # time passing
            ),
            max_size=40,
        ),
    )
    def test_any_sequence_keeps_the_rules(self, role: str, events: list[Any]) -> None:
        """Whatever arrives in whatever order: a path is chosen only by the right SELECT
        (host) or SELECT_ACK (viewer) from the peer, a choice is final, and every datagram
        we send is ours, from one of our sockets."""
        punch = UdpPunch(
            role=role, token=TOKEN, sockets=2, peer_ip=VIEWER_WAN, peer_ports=[4000],
            spray=False, now=0.0, rng=random.Random(7),
        )  # fmt: skip
        sends = punch.start(0.0)
        now = 0.0
        decisive = SELECT if role == "host" else SELECT_ACK
        for kind, our_token, our_echo, nonce, source, index, step in events:
            now += step
            echo = punch.nonce if our_echo else nonce
            data = encode(Probe(kind, TOKEN if our_token else b"othertkn", nonce, echo))
            before = punch.winner
            sends += punch.received(index, data, source, now) + punch.tick(now)
            if before is not None:
                self.assertEqual(punch.winner, before)
            elif punch.winner is not None:
                self.assertEqual((kind, our_token, our_echo), (decisive, True, True))
                self.assertEqual(punch.winner, (index, source))
                self.assertEqual(source[0], VIEWER_WAN)
            self.assertLessEqual(len(punch.selected), MAX_SELECTS)
        for send in sends:
            sent = decode(send.payload)
            assert sent is not None
            self.assertEqual((sent.token, sent.nonce), (TOKEN, punch.nonce))
            self.assertIn(send.socket, (0, 1))
            self.assertEqual(send.address[0], VIEWER_WAN)

    def test_rustdesk_peer_is_foreign(self) -> None:
        """An empty datagram (RustDesk's UDP punch) from the peer's IP ends the attempt at once."""
        punch = self._lone("viewer")
        self.assertEqual(punch.received(0, b"", (VIEWER_WAN, 23456), 0.05), [])
        self.assertTrue(punch.foreign)
        self.assertIsNone(punch.winner)
        self.assertIsNone(punch.next_deadline())
        self.assertEqual(punch.tick(1.0), [])

    def test_stale_select_is_ignored(self) -> None:
        """A SELECT echoing another attempt's nonce (same token) does not pick a path."""
        punch = self._lone("host")
        stale = encode(Probe(SELECT, TOKEN, b"viewer-n", b"old-once"))
        self.assertEqual(punch.received(0, stale, (VIEWER_WAN, 4000), 0.1), [])
        self.assertIsNone(punch.winner)
        self.assertEqual(punch.stale, 1)

    def test_host_keeps_confirming_its_choice(self) -> None:
        """After choosing, the host answers repeats of that SELECT (only that pair's)."""
        punch = self._lone("host")
        select = encode(Probe(SELECT, TOKEN, b"viewer-n", punch.nonce))
        for n in range(5):
            answer = punch.received(0, select, (VIEWER_WAN, 4000), 0.1 + n)
            self.assertEqual(len(answer), 1)
            self.assertEqual(decode(answer[0].payload).kind, SELECT_ACK)  # type: ignore[union-attr]
        self.assertEqual(punch.winner, (0, (VIEWER_WAN, 4000)))
        self.assertIsNone(punch.next_deadline())
        self.assertEqual(punch.received(0, select, (VIEWER_WAN, 4001), 6.0), [])

    def test_viewer_tries_another_pair_and_takes_the_host_choice(self) -> None:
        """An unanswered SELECT makes the viewer select a newer pair too; the host's
        answer on either decides."""
        punch = self._lone("viewer")
        host_probe = encode(Probe(PROBE, TOKEN, b"host-non", bytes(8)))
        first = punch.received(0, host_probe, (VIEWER_WAN, 4000), 0.1)
        self.assertEqual([decode(s.payload).kind for s in first], [ACK, SELECT])  # type: ignore[union-attr]
        punch.received(0, host_probe, (VIEWER_WAN, 4002), 0.2)
        self.assertEqual(len(punch.selected), 1)  # too soon for another
        punch.received(0, host_probe, (VIEWER_WAN, 4002), 0.7)
        self.assertEqual(punch.selected, [(0, (VIEWER_WAN, 4000)), (0, (VIEWER_WAN, 4002))])
        repeats = punch.tick(0.8)
        self.assertEqual(
            {s.address for s in repeats if decode(s.payload).kind == SELECT},  # type: ignore[union-attr]
            {(VIEWER_WAN, 4000), (VIEWER_WAN, 4002)},
        )
        ack = encode(Probe(SELECT_ACK, TOKEN, b"host-non", punch.nonce))
        punch.received(0, ack, (VIEWER_WAN, 4000), 0.9)
        self.assertEqual(punch.winner, (0, (VIEWER_WAN, 4000)))


# -- the Twisted driver on loopback ------------------------------------------------------


class _Catcher(DatagramProtocol):
    """What a port's new owner (QUIC) gets; C{late} sees every datagram first."""

    noisy = False

    def __init__(self) -> None:
        self.got: list[tuple[bytes, Any]] = []
        self.arrived: defer.Deferred[None] = defer.Deferred()
        self.late: Callable[[bytes, tuple[str, int]], bool] = lambda data, addr: False

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.late(datagram, tuple(addr)):
            return
        self.got.append((datagram, addr))
        if not self.arrived.called:
            self.arrived.callback(None)


def _number(port: IListeningPort) -> int:
    """The port number a bound UDP port has."""
    return int(port.getHost().port)  # type: ignore[attr-defined]


def _bindable(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        s.close()
    return True


class DriverTests(TestCase):
    timeout = 60

    def puncher(self, sockets: int = 1) -> UdpPuncher:
        p = UdpPuncher(reactor, TOKEN, sockets, interface="127.0.0.1")
        p.open()
        self.addCleanup(p.close)
        return p

    def silent_socket(self, ip: str = "127.0.0.1") -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        self.addCleanup(s.close)
        return s

    async def punch_pair(
        self, host: UdpPuncher, viewer: UdpPuncher
    ) -> tuple[PunchResult | None, PunchResult | None]:
        h = host.run("host", "127.0.0.1", [_number(viewer.ports[0])], False, 4.0)
        v = viewer.run("viewer", "127.0.0.1", [_number(host.ports[0])], False, 4.0)
        h_result, v_result = await defer.gatherResults([h, v])
        for result in (h_result, v_result):
            if result is not None:
                self.addCleanup(result.port.stopListening)
        return h_result, v_result

    async def test_two_punchers_find_each_other(self) -> None:
        """Two punchers on loopback agree on their sockets, and the path carries data."""
        host, viewer = self.puncher(), self.puncher()
        host_port = _number(host.ports[0])
        viewer_port = _number(viewer.ports[0])
        h, v = await self.punch_pair(host, viewer)
        assert h is not None and v is not None
        self.assertEqual(h.remote, ("127.0.0.1", viewer_port))
        self.assertEqual(v.remote, ("127.0.0.1", host_port))
        self.assertGreater(h.probes_sent, 0)
        self.assertGreaterEqual(v.elapsed, 0.0)
        catcher = _Catcher()
        h.port.protocol = catcher  # type: ignore[attr-defined]  # as QuicHost.attach does
        catcher.makeConnection(h.port)  # type: ignore[arg-type]
        v.port.write(b"session data", v.remote)  # type: ignore[attr-defined]
        await catcher.arrived
        self.assertEqual(catcher.got[0], (b"session data", ("127.0.0.1", viewer_port)))

    async def test_losers_are_closed(self) -> None:
        """With four sockets, the three that lost are closed; the winner stays bound."""
        host, viewer = self.puncher(4), self.puncher()
        numbers = [_number(p) for p in host.ports]
        h, v = await self.punch_pair(host, viewer)
        assert h is not None and v is not None
        self.assertEqual(host.ports, [h.port])
        for port in numbers:
            self.assertEqual(_bindable(port), port != _number(h.port))

    async def test_silent_peer_gives_none_after_the_window(self) -> None:
        """Nobody answering: None when the window ends, and every socket is closed."""
        viewer = self.puncher(2)
        numbers = [_number(p) for p in viewer.ports]
        silent = self.silent_socket()
        result = await viewer.run("viewer", "127.0.0.1", [silent.getsockname()[1]], False, 0.5)
        self.assertIsNone(result)
        self.assertFalse(viewer.foreign)
        self.assertEqual(viewer.ports, [])
        silent.setblocking(False)
        self.assertEqual(decode(silent.recv(100)).kind, PROBE)  # type: ignore[union-attr]
        self.assertTrue(all(_bindable(p) for p in numbers))

    async def test_junk_from_elsewhere_is_passed_on(self) -> None:
        """Junk from another address and other punches' probes do not stop the punch;
        what is not a probe goes to C{unclaimed} (the rendezvous server's answers do)."""
        host, viewer = self.puncher(), self.puncher()
        passed: list[tuple[int, bytes, tuple[str, int]]] = []
        viewer.unclaimed = lambda i, d, a: passed.append((i, d, a))
        stranger = self.silent_socket("127.0.0.2")
        target = ("127.0.0.1", _number(viewer.ports[0]))
        stranger.sendto(b"registered as 198.51.100.12:4000", target)
        await until_passed(passed, 1)
        other = encode(Probe(PROBE, b"othertkn", b"n" * 8, bytes(8)))
        run = self.punch_pair(host, viewer)
        for junk in (b"", b"\x00" * 30, other, b"LDPU" + bytes(26)):
            stranger.sendto(junk, target)
        h, v = await run
        self.assertIsNotNone(h)
        self.assertIsNotNone(v)
        self.assertFalse(viewer.foreign)
        self.assertEqual(
            passed[0],
            (0, b"registered as 198.51.100.12:4000", ("127.0.0.2", stranger.getsockname()[1])),
        )

    async def test_rustdesk_peer_ends_the_punch_at_once(self) -> None:
        """An empty datagram from the peer's IP (RustDesk's punch) gives None long before
        the window, with C{foreign} set."""
        viewer = self.puncher()
        peer = self.silent_socket()
        peer.setblocking(False)
        run = viewer.run("viewer", "127.0.0.1", [peer.getsockname()[1]], False, 40.0)
        peer.sendto(b"", ("127.0.0.1", _number(viewer.ports[0])))
        result = await run
        self.assertIsNone(result)
        self.assertTrue(viewer.foreign)
        self.assertEqual(viewer.ports, [])

    test_rustdesk_peer_ends_the_punch_at_once.timeout = 20  # type: ignore[attr-defined]

    async def test_dual_stack_socket_reaches_an_ipv4_peer(self) -> None:
        """Punch sockets bound to :: (as for an IPv6 rendezvous server) punch an IPv4 peer;
        the result's address is one their port can write to."""
        host = self.puncher()
        viewer = UdpPuncher(reactor, TOKEN, 1, interface="::")
        viewer.open()
        self.addCleanup(viewer.close)
        h_run = host.run("host", "127.0.0.1", [_number(viewer.ports[0])], False, 4.0)
        v_run = viewer.run("viewer", "127.0.0.1", [_number(host.ports[0])], False, 4.0)
        h, v = await defer.gatherResults([h_run, v_run])
        assert h is not None and v is not None
        self.addCleanup(h.port.stopListening)
        self.addCleanup(v.port.stopListening)
        self.assertEqual(v.remote, ("::ffff:127.0.0.1", _number(h.port)))
        self.assertEqual(h.remote, ("127.0.0.1", _number(v.port)))
        catcher = _Catcher()
        h.port.protocol = catcher  # type: ignore[attr-defined]
        catcher.makeConnection(h.port)  # type: ignore[arg-type]
        v.port.write(b"over a dual-stack socket", v.remote)  # type: ignore[attr-defined]
        await catcher.arrived
        self.assertEqual(catcher.got[0][0], b"over a dual-stack socket")

    async def test_unsendable_peer_address_ends_in_none(self) -> None:
        """A peer address the sockets cannot send to (IPv6 on an IPv4 socket) does not
        break the punch: it ends with None at the window, the failed sends counted."""
        viewer = self.puncher()
        result = await viewer.run("viewer", "::1", [4000], False, 0.3)
        self.assertIsNone(result)
        self.assertGreater(viewer.send_errors, 0)
        self.assertEqual(viewer.ports, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_cancel_closes_every_socket(self) -> None:
        """Cancelling the run (another path won) fails it with CancelledError and
        closes all sockets."""
        viewer = self.puncher(3)
        numbers = [_number(p) for p in viewer.ports]
        silent = self.silent_socket()
        run = viewer.run("viewer", "127.0.0.1", [silent.getsockname()[1]], False, 30.0)
        await deferLater(reactor, 0.05, lambda: None)
        run.cancel()
        self.failureResultOf(run, defer.CancelledError)
        self.assertEqual(viewer.ports, [])
        await deferLater(reactor, 0, lambda: None)
        self.assertTrue(all(_bindable(p) for p in numbers))

    async def test_host_confirms_after_handing_over(self) -> None:
        """A viewer whose SELECT_ACK was lost gets one when it repeats SELECT, also
        after the host's port went to its new owner (through late_datagram)."""
        host, viewer = self.puncher(), self.puncher()
        h, v = await self.punch_pair(host, viewer)
        assert h is not None and v is not None
        assert host.punch is not None and viewer.punch is not None
        owner, viewer_side = _Catcher(), _Catcher()
        owner.late = host.late_datagram
        for port, protocol in ((h.port, owner), (v.port, viewer_side)):
            port.protocol = protocol  # type: ignore[attr-defined]
            protocol.makeConnection(port)  # type: ignore[arg-type]
        select = encode(Probe(SELECT, TOKEN, viewer.punch.nonce, host.punch.nonce))
        v.port.write(select, v.remote)  # type: ignore[attr-defined]
        await viewer_side.arrived
        answer = decode(viewer_side.got[0][0])
        assert answer is not None
        self.assertEqual((answer.kind, answer.echo), (SELECT_ACK, viewer.punch.nonce))
        self.assertEqual(owner.got, [])  # the owner never saw the punch's datagram


async def until_passed(passed: list[Any], count: int) -> None:
    """Let the reactor run until C{passed} holds C{count} items."""
    while len(passed) < count:
        await deferLater(reactor, 0.01, lambda: None)
