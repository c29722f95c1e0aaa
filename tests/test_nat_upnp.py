"""UPnP IGD port mapping (C{litedesk-host --upnp}).

- L{UpnpMapper} against a fake gateway client (no network): mapping, lease
  fallback, port conflicts, renewal, removal, "no gateway" logging;
- the rendezvous server copies C{upnp_port} from C{PunchHoleSent} into
  C{PunchHoleResponse} (a LiteDesk extension; hbbs drops it);
- in the NAT lab, a real miniupnpd on router r1: a host in h1 with C{--upnp}
  gets a real mapping, a viewer behind a symmetric NAT (no punching possible)
  connects on path C{upnp} instead of the relay, and the mapping is gone once
  the host stops.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.host_tap import Options
from litedesk.nat.nattype import SYMMETRIC
from litedesk.nat.upnp import UpnpError, UpnpMapper
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.pinning import viewer_context_factory
from litedesk.session.tls import wrap_client
from litedesk.viewer.route import Route, connect_punched, find_host

from .support.miniupnpd import DECLARED_EXT_IP, Miniupnpd, miniupnpd_conf
from .support.natlab import WAN_V4
from .support.skips import requires
from .test_host_paths import HOST_ID, Marker, PathFixture
from .test_rendezvous_integration import ID, SERVER_PK_B64, RendezvousTestBase

reactor: Any = _reactor


class FakeIgd:
    """An L{IgdClient} that records calls; refuses what it is told to refuse."""

    def __init__(
        self,
        present: bool = True,
        permanent_only: bool = False,
        taken: tuple[int, ...] = (),
    ) -> None:
        self.present = present
        self.permanent_only = permanent_only
        self.taken = set(taken)
        self.mappings: dict[int, tuple[str, int, int]] = {}
        self.adds: list[tuple[int, int]] = []
        self.deletes: list[int] = []
        self.threads: set[str] = set()

    def discover(self, timeout: float) -> str:
        self.threads.add(threading.current_thread().name)
        if not self.present:
            raise UpnpError("no UPnP gateway found")
        return "10.0.1.10"

    def external_ip(self) -> str:
        return "198.51.100.11"

    def add(
        self, external_port: int, internal_ip: str, internal_port: int, desc: str, lease: int
    ) -> None:
        self.threads.add(threading.current_thread().name)
        self.adds.append((external_port, lease))
        if external_port in self.taken:
            raise UpnpError("ConflictInMappingEntry")
        if lease and self.permanent_only:
            raise UpnpError("OnlyPermanentLeasesSupported")
        self.mappings[external_port] = (internal_ip, internal_port, lease)

    def delete(self, external_port: int) -> None:
        self.deletes.append(external_port)
        self.mappings.pop(external_port, None)


class UpnpMapperTests(TestCase):
    def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: Any) -> None:
            text = formatEvent(event)
            if text:
                self.logged.append(text)

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def mapper(self, igd: FakeIgd, **kw: Any) -> UpnpMapper:
        m = UpnpMapper(reactor, 21118, client=igd, **kw)
        self.addCleanup(m.stop)
        return m

    @inlineCallbacks
    def test_maps_session_port_with_lease_off_the_reactor_thread(self) -> Any:
        """--upnp maps the same external port to our LAN address with a lease, and says so."""
        igd = FakeIgd()
        m = self.mapper(igd)
        port = yield m.start()
        self.assertEqual(port, 21118)
        self.assertEqual(m.mapped_port, 21118)
        self.assertEqual(igd.mappings, {21118: ("10.0.1.10", 21118, 3600)})
        self.assertNotIn(threading.current_thread().name, igd.threads)
        self.assertTrue(
            any("UPnP: mapped 198.51.100.11:21118 -> 10.0.1.10:21118" in t for t in self.logged)
        )

    @inlineCallbacks
    def test_no_gateway_is_logged_and_nothing_advertised(self) -> Any:
        """Without a gateway the host logs "no UPnP gateway found" and advertises no port."""
        m = self.mapper(FakeIgd(present=False))
        port = yield m.start()
        self.assertIsNone(port)
        self.assertEqual(m.mapped_port, 0)
        self.assertTrue(any("no UPnP gateway found" in t for t in self.logged), self.logged)

    @inlineCallbacks
    def test_gateway_refusing_leases_gets_a_permanent_mapping(self) -> Any:
        """A gateway that only takes permanent mappings still gets one (lease 0, no renewal)."""
        igd = FakeIgd(permanent_only=True)
        m = self.mapper(igd)
        port = yield m.start()
        self.assertEqual(port, 21118)
        self.assertEqual(igd.mappings[21118][2], 0)
        self.assertIsNone(m._renew_call)

    @inlineCallbacks
    def test_taken_external_port_falls_back_to_another(self) -> Any:
        """When another machine holds our port on the gateway, another external port is mapped."""
        igd = FakeIgd(taken=(21118,))
        m = self.mapper(igd)
        port = yield m.start()
        self.assertIsNotNone(port)
        self.assertNotEqual(port, 21118)
        self.assertEqual(igd.mappings[port], ("10.0.1.10", 21118, 3600))

    @inlineCallbacks
    def test_mapping_is_renewed_at_half_its_lease(self) -> Any:
        """The mapping is refreshed before its lease runs out (at half of it)."""
        igd = FakeIgd()
        m = self.mapper(igd, lease=1)
        yield m.start()
        yield deferLater(reactor, 1.3, lambda: None)
        self.assertGreaterEqual(len(igd.adds), 3, igd.adds)
        self.assertEqual({a for a in igd.adds}, {(21118, 1)})

    @inlineCallbacks
    def test_stop_removes_the_mapping(self) -> Any:
        """Stopping the host removes its mapping from the gateway."""
        igd = FakeIgd()
        m = self.mapper(igd)
        yield m.start()
        yield m.stop()
        self.assertEqual(igd.mappings, {})
        self.assertEqual(igd.deletes, [21118])
        self.assertEqual(m.mapped_port, 0)
        self.assertTrue(any("removed the mapping of port 21118" in t for t in self.logged))

    @inlineCallbacks
    def test_stop_during_start_leaves_no_mapping(self) -> Any:
        """A host stopped while it is still mapping leaves nothing behind on the gateway."""
        igd = FakeIgd()
        m = UpnpMapper(reactor, 21118, client=igd)
        d: Deferred[Any] = m.start()
        yield m.stop()
        yield d
        self.assertEqual(igd.mappings, {})


class UpnpOptionTests(SynchronousTestCase):
    def parse(self, *args: str) -> Options:
        opts = Options()
        opts.parseOptions(["--listen", "tcp:21118", "--config-dir", self.mktemp(), *args])
        return opts

    def test_upnp_maps_the_listen_port(self) -> None:
        """--upnp with --listen tcp:PORT maps that port (no second listener)."""
        self.assertEqual(self.parse("--upnp", "--listen", "tcp:21200").upnp_listen_port, 21200)
        self.assertEqual(self.parse("--upnp").upnp_listen_port, 21118)

    def test_upnp_needs_a_fixed_listen_port(self) -> None:
        """--upnp with a --listen endpoint whose port is not fixed is refused with a message."""
        with self.assertRaises(UsageError) as e:
            self.parse("--upnp", "--listen", "tcp:0")
        self.assertIn("--upnp with --listen needs a fixed TCP port", str(e.exception))

    def test_without_upnp_flag_off(self) -> None:
        """Without --upnp the option is off (nothing changes for existing hosts)."""
        self.assertFalse(self.parse()["upnp"])


class _SessionFactory(Factory):
    def __init__(self, make_session: Any) -> None:
        self.make_session = make_session

    def buildProtocol(self, addr: Any) -> Any:
        return self.make_session()


class LoopbackUpnpTests(PathFixture):
    """Host and viewer wiring over the real server on loopback (the "mapping" is a listener)."""

    host_paths_options: ClassVar[dict[str, Any]] = {"nat_type": lambda: SYMMETRIC}

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        # What the gateway would forward to: the host's session listener.
        self.listener = reactor.listenTCP(
            0, _SessionFactory(self.paths.make_session), interface="127.0.0.1"
        )
        self.addCleanup(self.listener.stopListening)
        self.upnp = self.listener.getHost().port
        self.paths.upnp_port = lambda: self.upnp
        yield self.register("127.0.0.2")  # another "public IP": PunchHole, not LAN

    def find(self) -> Deferred[Route]:
        return ensureDeferred(
            find_host(reactor, ("127.0.0.1", self.tcp), self.server_key, HOST_ID, nat_test=False)
        )

    @inlineCallbacks
    def connect(self, route: Route) -> Any:
        marker = Marker(b"hello from viewer\n")
        tls = wrap_client(marker, viewer_context_factory(route.host_pk))
        path = yield ensureDeferred(
            connect_punched(reactor, route, ("127.0.0.1", self.tcp), self.server_key, HOST_ID, tls)
        )
        got = yield marker.got.addTimeout(10, reactor)
        self.assertEqual(got, b"hello from host\n")
        marker.transport.loseConnection()  # type: ignore[union-attr]
        yield marker.lost
        return path

    @inlineCallbacks
    def test_symmetric_host_with_upnp_is_reached_on_the_mapped_port(self) -> Any:
        """A host behind a symmetric NAT with a UPnP port: the viewer connects there (path upnp)."""
        route: Route = yield self.find()
        self.assertEqual(route.path, "punch")
        self.assertFalse(route.try_v4)
        self.assertEqual(route.upnp, ("127.0.0.1", self.upnp))
        path = yield self.connect(route)
        self.assertEqual(path, "upnp")
        yield self.paths.idle()

    @inlineCallbacks
    def test_dead_upnp_port_falls_back_to_relay(self) -> Any:
        """When the advertised UPnP port does not answer, the viewer ends up on the relay."""
        yield self.listener.stopListening()
        route: Route = yield self.find()
        path = yield self.connect(route)
        self.assertEqual(path, "relay")
        yield self.paths.idle()


class UpnpPortServerTests(RendezvousTestBase):
    @inlineCallbacks
    def test_upnp_port_reaches_the_viewer(self) -> Any:
        """The host's upnp_port in PunchHoleSent is passed on in the viewer's PunchHoleResponse."""
        host = yield self.register_host()
        viewer = yield self.tcp()
        req = rz.PunchHoleRequest(id=ID, licence_key=SERVER_PK_B64, nat_type=rz.SYMMETRIC)
        viewer.send_msg(rz.RendezvousMessage(punch_hole_request=req))
        data, _ = yield host.recv()
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        host_tcp = yield self.tcp("127.0.0.2")
        sent = rz.PunchHoleSent(
            socket_addr=push.punch_hole.socket_addr,
            id=ID,
            nat_type=rz.ASYMMETRIC,
            version="1.4.9",
            upnp_port=31118,
        )
        host_tcp.send_msg(rz.RendezvousMessage(punch_hole_sent=sent))
        frame = yield viewer.recv()
        resp = rz.RendezvousMessage()
        resp.ParseFromString(frame)
        self.assertEqual(resp.punch_hole_response.upnp_port, 31118)
        self.assertTrue(resp.punch_hole_response.socket_addr)
        yield host_tcp.closed


# -- the NAT lab with a real miniupnpd on r1 ----------------------------------------


@requires("netns", "miniupnpd", "nft", "miniupnpc", "Xvfb", "xclip", "display")
class UpnpLabTests(SynchronousTestCase):
    """A real IGD (miniupnpd) on the host's router."""

    def setUp(self) -> None:
        from .test_nat_lab import shared_lab

        self.lab = shared_lab(with_display=True)
        self.lab.net.set_ipv6(False)
        tmp = Path(self.mktemp())
        tmp.mkdir(parents=True)
        self.igd = Miniupnpd(self.lab.net, "r1", tmp)
        self.addCleanup(self.igd.stop)
        self.igd.start(miniupnpd_conf(upnp=True, natpmp=False))

    def redirects(self) -> str:
        return self.igd.redirects()

    def wait_log(self, peer: str, text: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.lab.host_log(peer)
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.1)

    def test_symmetric_viewer_connects_through_upnp_mapping(self) -> None:
        """Viewer behind a symmetric NAT, host with --upnp behind a real IGD: the session
        uses the mapped port (path upnp, not relay), and the mapping is gone after the host stops.
        """
        self.lab.net.set_nat("r1", "cone")
        self.lab.net.set_nat("r2", "symmetric")
        peer = self.lab.host("h1", "--upnp")
        self.addCleanup(self.lab.stop_host, peer)
        log = self.wait_log(peer, "UPnP: mapped")
        self.assertIn(f"UPnP: mapped {DECLARED_EXT_IP}:21118 -> 10.0.1.10:21118", log)
        self.assertIn("dport 21118", self.redirects())
        # --no-udp: the TCP punch's flow (tests/test_udp_paths_lab.py has UDP's).
        out = self.lab.viewer(
            "v2", peer, "--stats-json", "--verbose", "--duration", "1", "--no-udp"
        )
        self.assertEqual(out.returncode, 0, f"viewer failed: {out.stderr[-3000:]}")
        stats = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertEqual(stats["path"], "upnp", out.stderr[-3000:])
        self.assertIn(f"UPnP port {WAN_V4['r1']}:21118: ok", out.stderr)
        self.lab.stop_host(peer)
        self.assertIn("UPnP: removed the mapping of port 21118", self.lab.host_log(peer))
        self.assertNotIn("dport 21118", self.redirects())

    def test_without_upnp_flag_nothing_is_mapped(self) -> None:
        """Without --upnp nothing is mapped even with an IGD present; the viewer uses the relay."""
        self.lab.net.set_nat("r1", "cone")
        self.lab.net.set_nat("r2", "symmetric")
        peer = self.lab.host("h1")
        self.addCleanup(self.lab.stop_host, peer)
        out = self.lab.viewer("v2", peer, "--stats-json", "--duration", "1", "--no-udp")
        self.assertEqual(out.returncode, 0, f"viewer failed: {out.stderr[-3000:]}")
        self.assertEqual(json.loads(out.stdout.strip().splitlines()[-1])["path"], "relay")
        self.assertNotIn("UPnP", self.lab.host_log(peer))
        self.assertNotIn("dport", self.redirects())
