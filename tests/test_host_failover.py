"""A host with several rendezvous servers (C{--rendezvous A,B,...}): failover.

Covers the list option (bad entries are usage errors that name the entry),
the C{ConfigUpdate} list as peer input (hypothesis), the failover state
machine on a Clock (the switch after two unanswered requests, RegisterPk
then RegisterPeer on the new server, C{ConfigUpdate} adoption), the saved
list, a registration client with a real UDP socket moving between two real
servers on loopback, and the whole host agent: it adopts the second server
from the first one's C{ConfigUpdate} (its NAT test answer), is registered on
the second once the first stops, and a headless viewer given both servers
reaches it there.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.host.failover import Failover, StreamFailover
from litedesk.host.options import HostOptions
from litedesk.host.registration import Registration, RegState, StreamRegistration
from litedesk.host.rendezvous_client import RendezvousClient, StreamRendezvousClient
from litedesk.host.server_list import (
    MAX_ADOPTED,
    SAVED_SERVERS_FILE,
    ServerRotation,
    describe,
    load_saved,
    parse_server_list,
    save_servers,
    servers_from_update,
)
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.address import parse_host_port

from .rendezvous_harness import start_server
from .support.e2e_lab import VIEWER
from .support.polling import until
from .support.rendezvous_nodes import copy_key, start_node, two_port_layouts
from .support.skips import requires
from .support.xvfb import shared_xvfb

reactor: Any = _reactor

A = ("10.0.0.1", 21116)
B = ("10.0.0.2", 21116)
C = ("10.0.0.3", 21200)


def _key() -> str:
    return base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()


class ServerListOptionTests(SynchronousTestCase):
    """C{twistd litedesk-host --rendezvous A,B,...} as the person types it."""

    def parse(self, rendezvous: str, *extra: str) -> HostOptions:
        opts = HostOptions()
        opts.parseOptions(
            ["--config-dir", self.mktemp(), "--rendezvous", rendezvous, "--key", _key(), *extra]
        )
        return opts

    def test_list_in_order_default_port_and_duplicates_dropped(self) -> None:
        """Every server is kept in the order given, port 21116 by default, once each."""
        opts = self.parse("a.example, 10.0.0.2:21200,[::1]:7,a.example:21116")
        self.assertEqual(opts.servers, [("a.example", 21116), ("10.0.0.2", 21200), ("::1", 7)])
        self.assertEqual(opts.server, ("a.example", 21116))

    def test_one_server_as_before(self) -> None:
        opts = self.parse("10.0.0.1:21116")
        self.assertEqual(opts.servers, [A])

    def test_bad_entries_name_the_entry(self) -> None:
        """A bad entry is a usage error that quotes it; an empty entry is refused too."""
        for text, named in (
            ("a.example,b.example:99999", "'b.example:99999'"),
            ("a.example,,b.example", "empty entry"),
            ("a.example,b:x", "'b:x'"),
            ("ws://a.example/,ws://b.example/?q", "'ws://b.example/?q'"),
            ("wss://a.example/,a.example", "name the same server"),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                self.parse(text)
            self.assertIn(named, str(caught.exception), text)

    def test_websocket_list(self) -> None:
        """With --websocket each entry maps as one server does (an IP: ws://IP:P+2);
        a ws:// URL in the list implies --websocket."""
        opts = self.parse("10.0.0.1:30000,ws://b.example:8080/")
        self.assertTrue(opts["websocket"])
        self.assertEqual(
            [str(ws.rendezvous) for ws in opts.ws_servers],
            ["ws://10.0.0.1:30002/", "ws://b.example:8080/ws/id"],
        )
        self.assertEqual(opts.servers, [("10.0.0.1", 30000), ("b.example", 21116)])
        self.assertEqual(opts.ws_server, opts.ws_servers[0])


class ServerListTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse_server_list("10.0.0.1,10.0.0.2"), [A, B])

    def test_rotation_round_robin_over_configured_then_adopted(self) -> None:
        rotation = ServerRotation([A, B])
        self.assertTrue(rotation.adopt([B, C, A]))
        self.assertEqual(rotation.servers, [A, B, C])
        self.assertEqual([rotation.advance() for _ in range(4)], [B, C, A, B])

    def test_adopting_the_same_list_changes_nothing(self) -> None:
        rotation = ServerRotation([A], [B])
        self.assertFalse(rotation.adopt([B]))

    def test_saved_list_round_trip_and_garbage_skipped(self) -> None:
        path = Path(self.mktemp())
        save_servers(path, [B, ("::1", 7)])
        self.assertEqual(load_saved(path), [B, ("::1", 7)])
        path.write_bytes(b"10.0.0.3:21200\n\xff\xfe:bad\n\nnot a server\n")
        self.assertEqual(load_saved(path), [C])
        self.assertEqual(load_saved(Path(self.mktemp())), [])

    @given(st.lists(st.text(max_size=40), max_size=60))
    def test_any_config_update_list_is_bounded_and_valid(self, entries: list[str]) -> None:
        """Whatever a server pushes, the host keeps at most MAX_ADOPTED valid servers."""
        servers = servers_from_update(entries)
        self.assertLessEqual(len(servers), MAX_ADOPTED)
        self.assertEqual(len(servers), len(set(servers)))
        for server in servers:
            self.assertTrue(0 < server[1] < 65536)
            self.assertEqual(parse_host_port(describe(server), 1), server)


def _answer(kind: str, **fields: Any) -> rz.RendezvousMessage:
    if kind == "pk_ok":
        return rz.RendezvousMessage(
            register_pk_response=rz.RegisterPkResponse(result=rz.RegisterPkResponse.OK)
        )
    if kind == "peer_ok":
        return rz.RendezvousMessage(register_peer_response=rz.RegisterPeerResponse())
    return rz.RendezvousMessage(configure_update=rz.ConfigUpdate(**fields))


class FailoverStateTests(SynchronousTestCase):
    """L{Failover} sans-IO, time from a L{Clock}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.reg = Registration("123456789", b"uuid", b"k" * 32)
        self.failover = Failover(self.reg, ServerRotation([A, B]))

    def register(self) -> None:
        out = self.failover.tick(self.clock.seconds())
        self.assertEqual(out.send[0].WhichOneof("union"), "register_pk")
        out = self.failover.received(_answer("pk_ok"), self.clock.seconds())
        self.assertEqual([m.WhichOneof("union") for m in out.send], ["register_peer"])
        self.failover.received(_answer("peer_ok"), self.clock.seconds())
        self.assertIs(self.reg.state, RegState.REGISTERED)

    def run_until_switch(self, limit: float = 60.0) -> tuple[float, Any]:
        start = self.clock.seconds()
        while self.clock.seconds() - start < limit:
            self.clock.advance(1.0)
            out = self.failover.tick(self.clock.seconds())
            if out.switch_to is not None:
                return self.clock.seconds() - start, out
        self.fail("no switch")

    def test_switches_after_two_unanswered_requests(self) -> None:
        """A registered host whose server falls silent registers with the next one:
        RegisterPk at once, RegisterPeer after its OK, and the log line says why."""
        self.register()
        elapsed, out = self.run_until_switch()
        # The heartbeat is due 15 s after the last answer; two 3 s timeouts follow.
        self.assertEqual(elapsed, 21.0)
        self.assertEqual(out.switch_to, B)
        self.assertEqual(self.failover.current, B)
        self.assertEqual([m.WhichOneof("union") for m in out.send], ["register_pk"])
        self.assertEqual(
            [e.detail for e in out.events if e.kind == "switched"],
            [
                "rendezvous server 10.0.0.1:21116 unreachable (2 requests unanswered); "
                "registering with 10.0.0.2:21116"
            ],
        )
        self.assertFalse(self.reg.key_confirmed)
        answer = self.failover.received(_answer("pk_ok"), self.clock.seconds())
        self.assertEqual([m.WhichOneof("union") for m in answer.send], ["register_peer"])
        self.assertEqual([e.kind for e in answer.events], ["registered"])

    def test_round_robin_while_nobody_answers(self) -> None:
        """With every server down the host keeps moving on, back to the first."""
        seen = []
        for _ in range(3):
            _, out = self.run_until_switch()
            seen.append(out.switch_to)
        self.assertEqual(seen, [B, A, B])

    def test_one_server_is_retried_as_before(self) -> None:
        failover = Failover(self.reg, ServerRotation([A]))
        kinds = []
        for _ in range(30):
            self.clock.advance(1.0)
            out = failover.tick(self.clock.seconds())
            self.assertIsNone(out.switch_to)
            kinds += [e.kind for e in out.events]
        self.assertEqual(kinds, ["unreachable"])

    def test_config_update_adopted_after_the_configured_servers(self) -> None:
        """A newer ConfigUpdate adds its servers after the configured ones (to save);
        the next switch goes through them; an older serial is ignored."""
        self.register()
        out = self.failover.received(
            _answer("cu", serial=4, rendezvous_servers=["10.0.0.2", "10.0.0.3:21200", "x:0"]),
            self.clock.seconds(),
        )
        self.assertEqual(out.adopted, [C])
        self.assertEqual(self.failover.rotation.servers, [A, B, C])
        self.assertIn("servers_changed", [e.kind for e in out.events])
        stale = self.failover.config_update(
            rz.ConfigUpdate(serial=4, rendezvous_servers=["10.0.0.9"]), self.clock.seconds()
        )
        self.assertIsNone(stale.adopted)
        self.assertEqual([self.run_until_switch()[1].switch_to for _ in range(3)], [B, C, A])
        # The serial a heartbeat carries is the adopted configuration's.
        self.assertEqual(self.reg.serial, 4)

    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("wait"), st.floats(0.1, 20.0)),
                st.tuples(st.just("answer"), st.sampled_from(["pk_ok", "peer_ok"])),
                st.tuples(
                    st.just("cu"),
                    st.tuples(st.integers(0, 9), st.lists(st.text(max_size=20), max_size=5)),
                ),
            ),
            max_size=40,
        )
    )
    @settings(max_examples=200)
    def test_any_sequence_keeps_a_consistent_state(self, steps: list[Any]) -> None:
        """Whatever the servers answer and push, and whenever: the configured
        servers stay first, the current server is listed, each switch sends
        exactly one RegisterPk to a new server."""
        clock = Clock()
        reg = Registration("123456789", b"uuid", b"k" * 32)
        failover = Failover(reg, ServerRotation([A, B]))
        for kind, arg in steps:
            if kind == "wait":
                clock.advance(arg)
                before = failover.current
                out = failover.tick(clock.seconds())
                if out.switch_to is not None:
                    self.assertNotEqual(out.switch_to, before)
                    self.assertEqual([m.WhichOneof("union") for m in out.send], ["register_pk"])
            elif kind == "answer":
                failover.received(_answer(arg), clock.seconds())
            else:
                serial, entries = arg
                failover.config_update(
                    rz.ConfigUpdate(serial=serial, rendezvous_servers=entries), clock.seconds()
                )
            servers = failover.rotation.servers
            self.assertEqual(servers[:2], [A, B])
            self.assertIn(failover.current, servers)
            self.assertLessEqual(len(failover.rotation.adopted), MAX_ADOPTED)


class StreamFailoverStateTests(SynchronousTestCase):
    """L{StreamFailover}: a stream-registered host moves after two failed streams."""

    def test_moves_after_two_streams_end_without_registering(self) -> None:
        clock = Clock()
        reg = StreamRegistration("123456789", b"uuid", b"k" * 32)
        failover = StreamFailover(reg, ServerRotation([A, B]))
        reg.opened(clock.seconds())
        reg.received(_answer("pk_ok"), clock.seconds())
        clock.advance(60)
        delay, events, switch_to = failover.closed(clock.seconds())  # a healthy stream ended
        self.assertEqual((delay, switch_to), (1.0, None))
        self.assertEqual([e.kind for e in events], ["stream_lost"])
        clock.advance(delay or 0.0)
        delay, events, switch_to = failover.closed(clock.seconds())  # cannot connect
        self.assertIsNone(switch_to)
        clock.advance(delay or 0.0)
        delay, events, switch_to = failover.closed(clock.seconds())  # again: move on
        self.assertEqual(switch_to, B)
        self.assertEqual(delay, 1.0)
        self.assertEqual(
            [e.detail for e in events],
            [
                "rendezvous server 10.0.0.1:21116 unreachable (two streams in a row ended "
                "without registering); registering with 10.0.0.2:21116"
            ],
        )
        self.assertEqual(reg.failures, 0)

    def test_one_server_never_moves(self) -> None:
        reg = StreamRegistration("123456789", b"uuid", b"k" * 32)
        failover = StreamFailover(reg, None)
        for _ in range(5):
            self.assertIsNone(failover.closed(0.0)[2])


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.servers: list[tuple[str, int]] = []

    def punch_hole(self, msg: rz.PunchHole) -> None:
        pass

    def fetch_local_addr(self, msg: rz.FetchLocalAddr) -> None:
        pass

    def request_relay(self, msg: rz.RequestRelay) -> None:
        pass

    def registration_event(self, event: Any) -> None:
        self.events.append(event)


class _Silent(DatagramProtocol):
    """A UDP port that takes datagrams and never answers (a dead node's address)."""


class ClientFailoverTests(TestCase):
    """The registration client on a real UDP socket, two real servers on loopback."""

    def start_server(self, key_from: Path | None = None) -> Any:
        data = Path(self.mktemp())
        if key_from is not None:
            copy_key(key_from, data)
        svc = start_server(data, "--key", "")
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc, data

    def start_client(self, rotation: ServerRotation) -> tuple[RendezvousClient, _Recorder]:
        pk = bytes(SigningKey.generate().verify_key)
        # Short timers so the test takes seconds; the rules are the same.
        reg = Registration("123456789", b"host-uuid", pk, interval=1.0, timeout=0.3)
        rec = _Recorder()
        client = RendezvousClient(
            reg,
            rotation.current,
            rec,
            reactor,
            tick=0.05,
            rotation=rotation,
            on_switch=rec.servers.append,
        )
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return client, rec

    @inlineCallbacks
    def test_registered_on_the_second_server_when_the_first_stops(self) -> Any:
        first, data = self.start_server()
        second, _ = self.start_server(key_from=data)
        servers = [
            ("127.0.0.1", s.rendezvous_udp.listening.getHost().port) for s in (first, second)
        ]
        client, rec = self.start_client(ServerRotation(servers))
        peer = yield until(lambda: first.registry.get("123456789"), message="on server 1")
        yield until(lambda: peer.pk, message="key on server 1")
        self.assertIsNone(second.registry.get("123456789"))
        yield first.stopService()
        peer2 = yield until(
            lambda: second.registry.get("123456789"), timeout=10, message="on server 2"
        )
        yield until(lambda: peer2.pk, message="key on server 2")
        yield until(lambda: client.registration.state is RegState.REGISTERED, message="state")
        self.assertEqual(client.server, servers[1])
        self.assertEqual(rec.servers, [servers[1]])
        self.assertEqual(peer2.pk, client.registration.pk)
        switched = [e.detail for e in rec.events if e.kind == "switched"]
        self.assertEqual(
            switched,
            [
                f"rendezvous server {describe(servers[0])} unreachable (2 requests unanswered); "
                f"registering with {describe(servers[1])}"
            ],
        )

    @inlineCallbacks
    def test_saved_servers_found_when_the_first_is_down_at_start(self) -> Any:
        """A host restarting while its configured server is down registers with a
        server it saved from an earlier ConfigUpdate."""
        live, _ = self.start_server()
        dead = reactor.listenUDP(0, _Silent(), interface="127.0.0.1")
        self.addCleanup(dead.stopListening)
        saved = Path(self.mktemp())
        save_servers(saved, [("127.0.0.1", live.rendezvous_udp.listening.getHost().port)])
        rotation = ServerRotation([("127.0.0.1", dead.getHost().port)], load_saved(saved))
        self.start_client(rotation)
        peer = yield until(lambda: live.registry.get("123456789"), timeout=10, message="saved")
        yield until(lambda: peer.pk, message="key on the saved server")


class StreamClientFailoverTests(TestCase):
    """The stream registration client (RustDesk's TCP mode) between two real servers."""

    @inlineCallbacks
    def test_stream_moves_to_the_second_server(self) -> Any:
        from litedesk.session.links import ServerLinks

        p1, p2 = two_port_layouts()
        data1, data2 = Path(self.mktemp()), Path(self.mktemp())
        first = start_node(data1, p1)
        self.addCleanup(lambda: first.stopService() if first.running else None)
        copy_key(data1, data2)
        second = start_node(data2, p2)
        self.addCleanup(lambda: second.stopService() if second.running else None)
        servers = [("127.0.0.1", p1), ("127.0.0.1", p2)]
        links = {s: ServerLinks(s) for s in servers}
        rotation = ServerRotation(servers)
        pk = bytes(SigningKey.generate().verify_key)
        reg = StreamRegistration("123456789", b"host-uuid", pk)
        rec = _Recorder()

        def switched(server: tuple[str, int]) -> None:
            rec.servers.append(server)
            client.describe = links[server].describe()

        client = StreamRendezvousClient(
            reg,
            lambda protocol: links[rotation.current].open_stream(reactor, protocol),
            rec,
            reactor,
            links[servers[0]].describe(),
            rotation=rotation,
            on_switch=switched,
        )
        client.startService()
        self.addCleanup(lambda: client.stopService() if client.running else None)
        peer = yield until(lambda: first.registry.get("123456789"), message="on server 1")
        yield until(lambda: peer.pk, message="key on server 1")
        yield first.stopService()
        # A dead node's streams are reset; a server stopped in this process
        # keeps the connections it accepted, so reset the host's here.  The
        # next two streams cannot connect, and the host moves on.
        assert client.link is not None and client.link.transport is not None
        client.link.transport.abortConnection()  # type: ignore[attr-defined]
        peer2 = yield until(
            lambda: second.registry.get("123456789"), timeout=30, message="on server 2"
        )
        yield until(lambda: peer2.pk, message="key on server 2")
        self.assertEqual(rec.servers, [servers[1]])
        self.assertIn("switched", [e.kind for e in rec.events])


@requires("Xvfb")
class AgentFailoverTests(TestCase):
    """The whole host agent and a headless viewer, as a person runs them."""

    timeout = 120

    @inlineCallbacks
    def test_agent_adopts_moves_and_is_reached_on_the_second_server(self) -> Any:
        from litedesk.host.agent import build_host_agent
        from litedesk.host_tap import Options as HostTapOptions

        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        p1, p2 = two_port_layouts()
        data1, data2 = Path(self.mktemp()), Path(self.mktemp())
        first = start_node(data1, p1, "--rendezvous-servers", f"127.0.0.1:{p2}", "--serial", "5")
        self.addCleanup(lambda: first.stopService() if first.running else None)
        copy_key(data1, data2)  # a cluster shares one key pair
        second = start_node(data2, p2)
        self.addCleanup(lambda: second.stopService() if second.running else None)

        config_dir = Path(self.mktemp())
        pwfile = Path(self.mktemp())
        pwfile.write_text("failover-pw")
        opts = HostTapOptions()
        opts.parseOptions(
            [
                "--config-dir",
                str(config_dir),
                "--display",
                shared_xvfb().display,
                "--rendezvous",
                f"127.0.0.1:{p1}",
                "--key",
                first.key.public_key,
                "--password-file",
                str(pwfile),
                "--view-only",
            ]
        )
        agent = build_host_agent(opts, reactor)
        agent.privilegedStartService()
        agent.startService()
        self.addCleanup(lambda: agent.stopService() if agent.running else None)
        assert agent.rendezvous_udp is not None and agent.paths is not None
        client = agent.rendezvous_udp.protocol
        assert isinstance(client, RendezvousClient)
        peer_id = agent.identity.peer_id

        peer = yield until(lambda: first.registry.get(peer_id), message="on server 1")
        yield until(lambda: peer.pk, message="key on server 1")
        # Server 1's NAT test answer carries its ConfigUpdate: server 2 adopted, saved.
        saved = config_dir / SAVED_SERVERS_FILE
        yield until(saved.exists, message="the adopted servers saved")
        self.assertEqual(saved.read_text(), f"127.0.0.1:{p2}\n")
        self.assertEqual(client.failover.rotation.servers, [("127.0.0.1", p1), ("127.0.0.1", p2)])

        yield first.stopService()
        # Deadline: heartbeat interval (15 s) + two 3 s timeouts, plus ticks.
        peer2 = yield until(lambda: second.registry.get(peer_id), timeout=30, message="on server 2")
        yield until(lambda: peer2.pk, message="key on server 2")
        self.assertEqual(peer2.pk, agent.identity.public_key)
        self.assertEqual(client.server, ("127.0.0.1", p2))
        self.assertEqual(agent.paths.server, ("127.0.0.1", p2))
        self.assertIn(
            f"rendezvous server 127.0.0.1:{p1} unreachable (2 requests unanswered); "
            f"registering with 127.0.0.1:{p2}",
            [formatEvent(e) for e in events],
        )

        screenshot = Path(self.mktemp() + ".png")
        out, err, code = yield getProcessOutputAndValue(
            VIEWER[0],
            [
                *VIEWER[1:],
                peer_id,
                "--rendezvous",
                f"127.0.0.1:{p1},127.0.0.1:{p2}",
                "--key",
                first.key.public_key,
                "--password-file",
                str(pwfile),
                "--headless",
                "--screenshot",
                str(screenshot),
                "--stats-json",
            ],
            env=None,
            reactor=reactor,
        )
        self.assertEqual(code, 0, err.decode(errors="replace"))
        stats = json.loads(out.decode().strip().splitlines()[-1])
        self.assertEqual(stats["rendezvous"], f"127.0.0.1:{p2}")
        self.assertGreater(stats["frames"], 0)
        self.assertEqual(screenshot.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
