"""The host's C{--natpmp}: its service, its wiring into the agent, its options.

- L{NatPmpService} on loopback against the fake gateway
  (L{tests.support.natpmp_gateway}): datagrams to UDP P reach the QUIC
  protocol, TCP P serves sessions, both are mapped to one external port, and
  stopping closes both ports and removes both mappings; a TCP port held
  elsewhere leaves UDP mapped alone; the agent's QUIC host presents the host
  certificate;
- L{add_natpmp}: which listeners the service opens and which ports it maps
  for C{--listen}, C{--upnp}, C{--no-udp}, C{--natpmp-port}, and the
  advertised port (NAT-PMP's, else UPnP's);
- the options: defaults, refusals with their reasons, C{--no-udp}.
"""

from __future__ import annotations

import base64
import socket
from typing import Any, cast

from cryptography.x509.oid import NameOID
from nacl.signing import SigningKey
from twisted.application.service import MultiService, Service
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.host.identity import HostIdentity
from litedesk.host.natpmp_service import NatPmpService, add_natpmp, agent_quic_host_factory
from litedesk.host_tap import Options
from litedesk.nat.natpmp_mapper import NatPmpMapper
from litedesk.quic.host import QuicHost

from .support.natpmp_gateway import TCP, UDP, FakeGateway
from .support.polling import until
from .support.ports import free_port_pair

reactor: Any = _reactor

SERVER_KEY = base64.b64encode(bytes(32)).decode()


class _Echo(DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(b"echo " + data, addr)  # type: ignore[union-attr]


class _Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"session\n")  # type: ignore[union-attr]


class _Collect(DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.got.append(data)


class _Read(Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class NatPmpServiceTests(TestCase):
    """The host's --natpmp service: listeners on port P, mapped, stopped."""

    def setUp(self) -> None:
        self.fake = FakeGateway()
        gw = reactor.listenUDP(0, self.fake, interface="127.0.0.1")
        self.addCleanup(gw.stopListening)
        self.port = free_port_pair()
        self.mapper = NatPmpMapper(
            reactor, self.port, self.port, "127.0.0.1", server_port=gw.getHost().port
        )

    def service(self, tcp: bool = True) -> NatPmpService:
        factory = Factory.forProtocol(_Greeter) if tcp else None
        service = NatPmpService(reactor, self.mapper, _Echo, factory)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    @inlineCallbacks
    def test_listens_maps_and_stops(self) -> Any:
        """Datagrams to UDP P reach the QUIC protocol, TCP P serves sessions, both are
        mapped; stopping closes both ports and removes both mappings."""
        service = self.service()
        yield until(lambda: self.mapper.tcp_mapped_port, message="both mappings")
        self.assertEqual(self.fake.maps, {UDP: (self.port, self.port), TCP: (self.port,) * 2})
        probe = _Collect()
        udp = reactor.listenUDP(0, probe, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        udp.write(b"ping", ("127.0.0.1", self.port))
        yield until(lambda: probe.got, message="the UDP answer")
        self.assertEqual(probe.got, [b"echo ping"])
        reader = _Read()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), reader)
        yield until(lambda: reader.data, message="the TCP greeting")
        self.assertEqual(reader.data, b"session\n")
        assert reader.transport is not None
        reader.transport.loseConnection()
        yield service.stopService()
        self.assertEqual(self.fake.maps, {})
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("", self.port))  # free again

    @inlineCallbacks
    def test_tcp_port_held_elsewhere_maps_udp_only(self) -> Any:
        """When the TCP port cannot be bound, only the UDP port is mapped (the
        gateway is never pointed at a port nobody listens on), and it is logged."""
        holder = reactor.listenTCP(self.port, Factory.forProtocol(Protocol))
        self.addCleanup(holder.stopListening)
        logged: list[str] = []
        observer = cast(ILogObserver, lambda e: logged.append(formatEvent(e)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.service()
        yield until(lambda: self.mapper.mapped_port, message="the UDP mapping")
        self.assertEqual(self.fake.maps, {UDP: (self.port, self.port)})
        self.assertTrue(any(f"cannot listen on TCP {self.port}" in t for t in logged))

    def test_agent_quic_host_carries_the_host_certificate(self) -> None:
        """The agent's QUIC host presents a certificate for the host id, from its key."""
        key = SigningKey.generate()
        host = agent_quic_host_factory(key, "123456789", lambda addr: None, reactor)
        self.assertIsInstance(host, QuicHost)
        cert = host.configuration.certificate
        assert cert is not None
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        self.assertEqual(cn, "123456789")


class _Sessions:
    """What add_natpmp asks of the agent's session builder."""

    def quic_session(self, addr: Any, path: str = "udp") -> None:
        return None

    def factory(self, direct: bool, path: str = "") -> Factory:
        return Factory.forProtocol(Protocol)


class _Agent(MultiService):
    def __init__(self) -> None:
        super().__init__()
        self.identity = HostIdentity("123456789", b"uuid", SigningKey.generate())
        self.natpmp: Service | None = None


class AddNatPmpTests(SynchronousTestCase):
    """How the agent's options decide what the --natpmp service listens on and maps."""

    def build(self, *args: str, upnp_port: int | None = None) -> tuple[Any, Any]:
        opts = Options()
        opts.parseOptions(["--config-dir", self.mktemp(), "--natpmp", *args])
        agent = _Agent()
        upnp = None if upnp_port is None else (lambda: upnp_port)
        advertised = add_natpmp(agent, opts, reactor, _Sessions(), upnp)
        self.assertIs(agent.natpmp, next(iter(agent)))
        return agent.natpmp, advertised

    def test_own_listeners_on_the_default_port(self) -> None:
        """With --rendezvous only, UDP and TCP 21118 are its own, and both are mapped."""
        service, _ = self.build("--rendezvous", "rz", "--key", SERVER_KEY)
        self.assertEqual((service.mapper.udp_port, service.mapper.tcp_port), (21118, 21118))
        self.assertIsNotNone(service.make_quic_host)
        self.assertIsNotNone(service.tcp_factory)

    def test_listen_port_is_mapped_not_listened_twice(self) -> None:
        """--listen tcp:P: P is mapped (UDP and TCP) and the TCP listener is --listen's."""
        service, _ = self.build("--listen", "tcp:21200")
        self.assertEqual((service.mapper.udp_port, service.mapper.tcp_port), (21200, 21200))
        self.assertIsNone(service.tcp_factory)

    def test_upnp_listener_is_shared(self) -> None:
        """With --upnp (no --listen) UPnP's TCP listener on 21118 serves the NAT-PMP
        mapping too; while NAT-PMP maps nothing, the UPnP port is advertised."""
        service, advertised = self.build(
            "--rendezvous", "rz", "--key", SERVER_KEY, "--upnp", upnp_port=30000
        )
        self.assertIsNone(service.tcp_factory)
        self.assertEqual(advertised(), 30000)

    def test_no_udp_maps_tcp_only(self) -> None:
        """--no-udp: no QUIC host; only the TCP port is mapped."""
        service, advertised = self.build("--listen", "tcp:21200", "--no-udp")
        self.assertIsNone(service.make_quic_host)
        self.assertEqual((service.mapper.udp_port, service.mapper.tcp_port), (0, 21200))
        self.assertEqual(advertised(), 0)

    def test_other_port_gets_its_own_tcp_listener(self) -> None:
        """--natpmp-port other than --listen's: the service listens on TCP there itself."""
        service, _ = self.build("--listen", "tcp:21200", "--natpmp-port", "21300")
        self.assertEqual(service.mapper.tcp_port, 21300)
        self.assertIsNotNone(service.tcp_factory)


class NatPmpOptionTests(SynchronousTestCase):
    def parse(self, *args: str) -> Options:
        opts = Options()
        opts.parseOptions(["--config-dir", self.mktemp(), *args])
        return opts

    def test_port_defaults(self) -> None:
        """--natpmp maps the --listen port, else 21118, unless --natpmp-port says."""
        self.assertEqual(self.parse("--listen", "tcp:21200", "--natpmp").natpmp_port, 21200)
        self.assertEqual(
            self.parse("--rendezvous", "rz", "--key", SERVER_KEY, "--natpmp").natpmp_port, 21118
        )
        self.assertEqual(
            self.parse("--listen", "tcp:1", "--natpmp", "--natpmp-port", "4000").natpmp_port, 4000
        )
        off = self.parse("--listen", "tcp:21200")
        self.assertEqual((off["natpmp"], off["no-udp"], off.natpmp_port), (False, False, 0))

    def test_bad_combinations_are_refused(self) -> None:
        """A bad gateway address or port, the --natpmp-* options without --natpmp,
        and --natpmp with --websocket are refused with a message saying why."""
        listen = ("--listen", "tcp:21200")
        cases = {
            (*listen, "--natpmp", "--natpmp-gateway", "gw.example"): "must be an IPv4 address",
            (*listen, "--natpmp", "--natpmp-port", "70000"): "must be a port number",
            (*listen, "--natpmp-gateway", "10.0.1.1"): "only applies with --natpmp",
            ("--natpmp", "--listen", "tcp:0"): "--natpmp with --listen needs a fixed TCP port",
            ("--natpmp", "--listen", "unix:/x"): "--natpmp with --listen needs a fixed TCP",
        }
        for args, message in cases.items():
            with self.assertRaises(UsageError) as e:
                self.parse(*args)
            self.assertIn(message, str(e.exception))
        with self.assertRaises(UsageError) as e:
            self.parse("--rendezvous", "ws://example.org/", "--key", SERVER_KEY, "--natpmp")
        self.assertIn("--natpmp has no use with --websocket", str(e.exception))

    def test_gateway_and_no_udp(self) -> None:
        """--natpmp-gateway names the gateway; --no-udp is a flag (help text says what)."""
        opts = self.parse("--listen", "tcp:21200", "--natpmp", "--natpmp-gateway", "10.0.1.1")
        self.assertEqual(opts["natpmp-gateway"], "10.0.1.1")
        self.assertTrue(self.parse("--listen", "tcp:21200", "--no-udp")["no-udp"])
        self.assertIn("Never punch UDP or run QUIC", str(Options()))
