"""The rendezvous server on WebSocket (docs/websocket.rst §1-§4).

A stock client in WebSocket mode sends one protobuf message per binary message to
P+2; the answers must be those of TCP port P (docs/protocol.rst §9 items 10-16,
19), the client's address must come from X-Real-IP / X-Forwarded-For only behind a
trusted proxy, and hostile clients must hit the same bounds as on TCP plus the
WebSocket handshake's.  Real server on loopback (tests/rendezvous_harness.py),
WebSocket clients from tests/support/ws_client.py; the header parser is checked
with hypothesis.
"""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.relay_tap import Options
from litedesk.websocket.proxy import ForwardedHeaderError, TrustedProxies, parse_networks
from litedesk.websocket.rendezvous import RendezvousBridgeFactory
from litedesk.wire import addrmangle
from litedesk.wire.keys import secret_b64, verify_id_pk

from .rendezvous_harness import start_server, tcp_client, udp_client
from .support.nginx import self_signed
from .support.polling import pause, until
from .support.relay import Peer
from .support.ws_client import HandshakeRefused, WSClient, ws_connect

reactor: Any = _reactor

ID = "123456789"
PK = bytes([7]) * 32
REGISTER_PK = rz.RendezvousMessage(
    register_pk=rz.RegisterPk(id=ID, uuid=b"0123456789abcdef0123456789abcdef", pk=PK)
).SerializeToString()
SERVER_SEED = bytes(range(32))
SERVER_PK_B64 = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="


# -- the proxy header rules ---------------------------------------------------------


class TrustedProxyTests(SynchronousTestCase):
    proxies = TrustedProxies(parse_networks(["127.0.0.1/32, 10.0.0.0/8", "::1"]))

    def test_headers_only_from_trusted_sources(self) -> None:
        """X-Real-IP names the client only on a request from a trusted proxy; from any
        other source the headers are ignored."""
        h = {"x-real-ip": "203.0.113.5", "x-forwarded-for": "198.51.100.1"}
        self.assertEqual(self.proxies.client_ip("127.0.0.1", h), "203.0.113.5")
        self.assertEqual(self.proxies.client_ip("10.1.2.3", h), "203.0.113.5")
        self.assertEqual(self.proxies.client_ip("192.0.2.7", h), "192.0.2.7")
        self.assertEqual(TrustedProxies().client_ip("127.0.0.1", h), "127.0.0.1")
        self.assertEqual(self.proxies.client_ip("127.0.0.1", {}), "127.0.0.1")

    def test_forwarded_for_right_most_untrusted(self) -> None:
        """X-Forwarded-For: the right-most entry that is not a trusted proxy (what the
        client wrote on the left proves nothing); v4-mapped and bracketed IPv6 entries
        are normalised."""
        p = self.proxies
        self.assertEqual(
            p.client_ip("::1", {"x-forwarded-for": "1.1.1.1, 203.0.113.9"}), "203.0.113.9"
        )
        self.assertEqual(
            p.client_ip("127.0.0.1", {"x-forwarded-for": "1.1.1.1, 203.0.113.9, 10.0.0.2"}),
            "203.0.113.9",
        )
        self.assertEqual(p.client_ip("127.0.0.1", {"x-forwarded-for": "10.9.9.9"}), "10.9.9.9")
        self.assertEqual(
            p.client_ip("127.0.0.1", {"x-forwarded-for": "[2001:db8::1]"}), "2001:db8::1"
        )
        self.assertEqual(p.client_ip("127.0.0.1", {"x-real-ip": "::ffff:192.0.2.1"}), "192.0.2.1")

    def test_bad_headers_from_a_trusted_proxy(self) -> None:
        """A trusted proxy's header that is not an address (or a list in X-Real-IP) is
        an error, not a silent fallback."""
        for h in (
            {"x-real-ip": "unknown"},
            {"x-real-ip": "1.2.3.4, 5.6.7.8"},
            {"x-forwarded-for": "1.2.3.4, nonsense"},
            {"x-forwarded-for": "1.2.3.4:5678"},
            {"x-forwarded-for": "1," * 3000},
        ):
            with self.assertRaises(ForwardedHeaderError):
                self.proxies.client_ip("127.0.0.1", h)
        with self.assertRaises(ValueError):
            parse_networks(["10.0.0.0/33"])
        with self.assertRaises(ValueError):
            parse_networks(["example.com"])

    @settings(max_examples=400, deadline=None)
    @given(
        st.sampled_from(["127.0.0.1", "10.2.3.4", "192.0.2.1", "::1", "2001:db8::7"]),
        st.dictionaries(
            st.sampled_from(["x-real-ip", "x-forwarded-for", "host"]),
            st.one_of(
                st.text(max_size=80),
                st.lists(st.ip_addresses().map(str), max_size=5).map(", ".join),
            ),
        ),
    )
    def test_any_headers(self, source: str, headers: dict[str, str]) -> None:
        """Whatever the headers: the answer is an IP address or ForwardedHeaderError,
        never another exception; an untrusted source always gets its own address."""
        try:
            ip = self.proxies.client_ip(source, headers)
        except ForwardedHeaderError:
            self.assertTrue(self.proxies.trusts(source))
            return
        ipaddress.ip_address(ip)
        if not self.proxies.trusts(source):
            self.assertEqual(ip, source)


# -- options --------------------------------------------------------------------------


class WebSocketOptionTests(SynchronousTestCase):
    def parse(self, *argv: str) -> Any:
        o = Options()
        o.parseOptions(list(argv))
        return o

    def test_default_ports(self) -> None:
        """hbbs' WebSocket port is P+2 and hbbr's the relay port + 2, following --port,
        --relay-port and the TCP endpoints (port 0 stays 0)."""
        o = self.parse()
        self.assertEqual(o["ws-endpoint"], "tcp6:21118:interface=\\:\\:")
        self.assertEqual(o["ws-relay-endpoint"], "tcp6:21119:interface=\\:\\::backlog=4096")
        o = self.parse("--port", "30000", "--interface", "127.0.0.1")
        self.assertEqual(o["ws-endpoint"], "tcp:30002:interface=127.0.0.1")
        self.assertEqual(o["ws-relay-endpoint"], "tcp:30003:interface=127.0.0.1:backlog=4096")
        o = self.parse("--relay-port", "40000")
        self.assertTrue(o["ws-relay-endpoint"].startswith("tcp6:40002:"))
        o = self.parse("--tcp-endpoint", "tcp:0:interface=127.0.0.1", "--relay-endpoint", "ssl:1")
        self.assertEqual(o["ws-endpoint"], "tcp:0:interface=127.0.0.1")
        self.assertEqual(o["ws-relay-endpoint"], "tcp6:21119:interface=\\:\\:")
        o = self.parse("--ws-endpoint", "ssl:443:privateKey=k.pem", "--no-websocket")
        self.assertEqual((o["ws-endpoint"], o["no-websocket"]), ("ssl:443:privateKey=k.pem", 1))

    def test_trusted_proxy_repeatable_and_checked(self) -> None:
        """--trusted-proxy may be repeated or comma-separated (also in --config); a value
        that is not a network is a usage error."""
        o = self.parse("--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8,::1")
        self.assertEqual(
            [str(n) for n in o.trusted_proxies.networks], ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
        )
        conf = Path(self.mktemp())
        conf.write_text("trusted-proxy = 192.168.0.0/16, fd00::/8\n")
        o = self.parse("--config", str(conf))
        self.assertEqual(len(o.trusted_proxies.networks), 2)
        self.assertFalse(self.parse().trusted_proxies)
        with self.assertRaises(usage.UsageError):
            self.parse("--trusted-proxy", "not-a-network")
        with self.assertRaises(usage.UsageError):
            self.parse("--ws-handshake-timeout", "0")


# -- conformance over WebSocket ------------------------------------------------------


class WebSocketRendezvousBase(TestCase):
    extra_args: tuple[str, ...] = ()

    def setUp(self) -> None:
        self.data_dir = Path(self.mktemp())
        self.svc = start_server(
            self.data_dir,
            "--key",
            secret_b64(SigningKey(SERVER_SEED)),
            "--relay-servers",
            "rs.example.com:21117",
            *self.extra_args,
        )
        self.udp_port = self.svc.rendezvous_udp.listening.getHost().port
        self.logged: list[str] = []
        globalLogPublisher.addObserver(self._observe)  # type: ignore[arg-type]
        self._closers: list[Any] = []

    def _observe(self, event: dict[str, Any]) -> None:
        self.logged.append(formatEvent(event))

    async def asyncTearDown(self) -> None:
        pass

    def tearDown(self) -> Any:
        globalLogPublisher.removeObserver(self._observe)  # type: ignore[arg-type]
        for c in self._closers:
            c()
        d = self.svc.stopService()

        async def settle() -> None:
            await d
            await pause(0.05)

        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(settle())

    @property
    def ws_port(self) -> int:
        return int(self.svc.rendezvous_ws.listening.getHost().port)

    async def ws(self, **kw: Any) -> WSClient:
        c = await ws_connect(self.ws_port, path="/ws/id", **kw)
        self._closers.append(c.abort)
        return c

    async def tcp(self, bind: str = "127.0.0.1") -> Any:
        c = await tcp_client(self.svc.rendezvous_tcp.listening.getHost().port, bind)
        t: Any = c.transport
        self._closers.append(t.abortConnection)
        return c

    def udp(self, interface: str) -> Any:
        c = udp_client(interface)
        t: Any = c.transport
        self._closers.append(t.stopListening)
        return c

    async def register_host(self, interface: str = "127.0.0.2") -> Any:
        host = self.udp(interface)
        host.send(REGISTER_PK, self.udp_port)
        data, _ = await host.recv()
        self.assertEqual(data.hex(), "820100")
        return host

    async def pushed(self, host: Any) -> rz.RendezvousMessage:
        data, addr = await host.recv()
        self.assertEqual(addr[1], self.udp_port)
        msg = rz.RendezvousMessage()
        msg.ParseFromString(data)
        return msg

    def log(self) -> str:
        return "\n".join(self.logged)


def _punch(key: str = SERVER_PK_B64, peer: str = ID) -> rz.RendezvousMessage:
    return rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(
            id=peer, licence_key=key, nat_type=rz.SYMMETRIC, version="1.4.9"
        )
    )


class WebSocketConformanceTests(WebSocketRendezvousBase):
    async def test_test_nat_request(self) -> None:
        """TestNatRequest over WebSocket gets our source port, then the server closes (10)."""
        c = await self.ws()
        c.send(bytes.fromhex("a201020803"))
        got = await c.recv()
        port = c.local()[1]
        self.assertEqual(
            got,
            rz.RendezvousMessage(
                test_nat_response=rz.TestNatResponse(port=port)
            ).SerializeToString(),
        )
        await c.closed

    async def test_punch_failures(self) -> None:
        """Wrong key → 5a021803 and a 'Key mismatch from IP' line; unknown id → 5a00 (12)."""
        c = await self.ws()
        c.send_msg(_punch(key="wrong"))
        self.assertEqual((await c.recv()).hex(), "5a021803")
        self.assertIn("Key mismatch from 127.0.0.1", self.log())
        d = await self.ws()
        d.send_msg(_punch(peer="987654321"))
        self.assertEqual((await d.recv()).hex(), "5a00")

    async def test_punch_hole_round_trip(self) -> None:
        """The host gets PunchHole by UDP with the WebSocket viewer's address; its
        PunchHoleSent on TCP reaches the viewer as a binary message with the signed key
        (13, 14)."""
        host = await self.register_host()
        viewer = await self.ws(bind="127.0.0.3")
        viewer.send_msg(_punch())
        push = await self.pushed(host)
        self.assertEqual(push.WhichOneof("union"), "punch_hole")
        self.assertEqual(addrmangle.decode(push.punch_hole.socket_addr), viewer.local())
        self.assertEqual(push.punch_hole.relay_server, "rs.example.com:21117")
        host_tcp = await self.tcp("127.0.0.2")
        sent = rz.PunchHoleSent(
            socket_addr=push.punch_hole.socket_addr,
            id=ID,
            relay_server="rs.example.com:21117",
            version="1.4.9",
        )
        host_tcp.send_msg(rz.RendezvousMessage(punch_hole_sent=sent))
        resp = (await viewer.recv_msg()).punch_hole_response
        self.assertEqual(addrmangle.decode(resp.socket_addr), host_tcp.local())
        self.assertEqual(verify_id_pk(base64.b64decode(SERVER_PK_B64), resp.pk), (ID, PK))

    async def test_relay_negotiation(self) -> None:
        """RequestRelay over WebSocket reaches the host; its RelayResponse comes back
        without socket_addr and with the signed key (16)."""
        host = await self.register_host()
        viewer = await self.ws(bind="127.0.0.3")
        uuid = "0f5c3a1e-1111-4222-8333-444455556666"
        viewer.send_msg(rz.RendezvousMessage(request_relay=rz.RequestRelay(id=ID, uuid=uuid)))
        fwd = (await self.pushed(host)).request_relay
        self.assertEqual((fwd.id, fwd.uuid), (ID, uuid))
        self.assertEqual(addrmangle.decode(fwd.socket_addr)[0], "127.0.0.3")
        host_tcp = await self.tcp("127.0.0.2")
        rr = rz.RelayResponse(socket_addr=fwd.socket_addr, uuid=uuid, id=ID, version="1.4.9")
        host_tcp.send_msg(rz.RendezvousMessage(relay_response=rr))
        out = (await viewer.recv_msg()).relay_response
        self.assertEqual((out.socket_addr, out.uuid), (b"", uuid))
        self.assertEqual(verify_id_pk(base64.b64decode(SERVER_PK_B64), out.pk), (ID, PK))

    async def test_register_pk_answered_as_on_tcp(self) -> None:
        """RegisterPk on WebSocket gets the answer TCP port P gives the same request."""
        answers = []
        for n, kind in enumerate(("tcp", "ws")):
            msg = rz.RendezvousMessage(
                register_pk=rz.RegisterPk(
                    id=f"ws{kind}00{n}", uuid=bytes([65 + n]) * 32, pk=bytes([9 + n]) * 32
                )
            )
            if kind == "tcp":
                c = await self.tcp("127.0.0.4")
                c.send_msg(msg)
                answers.append((await c.recv_msg()).register_pk_response.result)
            else:
                w = await self.ws(bind="127.0.0.5")
                w.send_msg(msg)
                answers.append((await w.recv_msg()).register_pk_response.result)
        self.assertEqual(answers[0], answers[1])

    async def test_online_request_answered(self) -> None:
        """OnlineRequest, which WebSocket clients send to this port (hbbs ignores it
        there), gets the bitmap of port P-1 (19)."""
        await self.register_host()
        c = await self.ws()
        c.send_msg(
            rz.RendezvousMessage(
                online_request=rz.OnlineRequest(id="111111111", peers=[ID, "987654321"])
            )
        )
        self.assertEqual((await c.recv()).hex(), "c20103" + "0a0180")
        await c.closed

    async def test_one_request_per_connection(self) -> None:
        """A second punch request for another id on one connection is not answered and
        the connection closes, as on TCP (docs/protocol.rst §5.4)."""
        await self.register_host()
        c = await self.ws(bind="127.0.0.3")
        c.send_msg(_punch())
        c.send_msg(_punch(peer="222222222"))
        await c.closed
        self.assertEqual(self.svc.server.counters["requests_refused_connection"], 1)


class TrustedProxyIntegrationTests(WebSocketRendezvousBase):
    extra_args = ("--trusted-proxy", "127.0.0.1/32")

    async def test_address_from_trusted_proxy_only(self) -> None:
        """From a trusted proxy (127.0.0.1) X-Real-IP, else X-Forwarded-For, is the
        viewer's address in the host's PunchHole and in the logs; from another source
        (127.0.0.3) the same header is ignored."""
        host = await self.register_host()
        v = await self.ws(headers={"X-Real-IP": "203.0.113.9"})
        v.send_msg(_punch())
        ip, port = addrmangle.decode((await self.pushed(host)).punch_hole.socket_addr)
        self.assertEqual((ip, port), ("203.0.113.9", v.local()[1]))
        v2 = await self.ws(headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.10"})
        v2.send_msg(_punch())
        self.assertEqual(
            addrmangle.decode((await self.pushed(host)).punch_hole.socket_addr)[0], "203.0.113.10"
        )
        v3 = await self.ws(bind="127.0.0.3", headers={"X-Real-IP": "203.0.113.11"})
        v3.send_msg(_punch())
        self.assertEqual(
            addrmangle.decode((await self.pushed(host)).punch_hole.socket_addr)[0], "127.0.0.3"
        )
        bad = await self.ws(headers={"X-Real-IP": "203.0.113.12"})
        bad.send_msg(_punch(key="wrong"))
        await bad.recv()
        self.assertIn("Key mismatch from 203.0.113.12", self.log())

    async def test_garbage_header_refused(self) -> None:
        """A trusted proxy naming the client with something that is not an address gets
        its handshake refused, with the reason logged; the listener keeps serving."""
        with self.assertRaises(HandshakeRefused):
            await ws_connect(self.ws_port, headers={"X-Real-IP": "somebody"})
        self.assertIn("X-Real-IP", self.log())
        c = await self.ws()
        c.send(bytes.fromhex("a201020803"))
        self.assertTrue((await c.recv_msg()).HasField("test_nat_response"))


class HostileWebSocketRendezvousTests(WebSocketRendezvousBase):
    extra_args = ("--max-connections-per-ip", "4", "--ws-handshake-timeout", "0.5")

    async def test_oversize_message_and_garbage(self) -> None:
        """A message over --max-frame and a message that is not protobuf each close
        their connection with a logged reason; the listener keeps serving."""
        c = await self.ws()
        c.send(b"\x0b" * 70_000)
        await c.closed
        self.assertIn("exceeds payload limit of 65536", self.log())
        d = await self.ws()
        d.send(b"\xff\xff\xff")
        await d.closed
        self.assertIn("undecodable message", self.log())
        e = await self.ws()
        e.send(bytes.fromhex("a201020803"))
        self.assertTrue((await e.recv_msg()).HasField("test_nat_response"))

    async def test_connection_flood_and_slow_handshakes(self) -> None:
        """Beyond --max-connections-per-ip a source is refused, a handshake that does not
        finish within --ws-handshake-timeout is dropped, each logged; others go on."""
        port = self.ws_port
        slow = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Peer())
        assert slow.transport is not None
        slow.transport.write(b"GET /ws/id HTTP/1.1\r\n")
        held = [await self.ws() for _ in range(3)]
        with self.assertRaises(HandshakeRefused):
            await ws_connect(port)
        self.assertIn(
            "Refused WebSocket connection from 127.0.0.1: more than 4 open connections", self.log()
        )
        await slow.lost
        self.assertIn("opening handshake not finished in time", self.log())
        other = await self.ws(bind="127.0.0.7")
        other.send(bytes.fromhex("a201020803"))
        self.assertTrue((await other.recv_msg()).HasField("test_nat_response"))
        for h in held:
            await h.close()


class KeepAliveTests(WebSocketRendezvousBase):
    async def test_text_and_ping_are_keep_alives(self) -> None:
        """On the rendezvous port a text message or a ping restarts the 30 s message
        deadline (an empty frame on TCP does); 30 s of silence closes the connection."""
        clock = Clock()
        factory = RendezvousBridgeFactory(
            self.svc.server, clock=clock, proxies=TrustedProxies(), max_frame=65536, max_per_ip=8
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        c = await ws_connect(port.getHost().port)
        self._closers.append(c.abort)
        await until(lambda: factory.inner_factory.open_connections == 1)
        clock.advance(29)
        c.sendMessage(b"hello", isBinary=False)
        await pause(0.1)
        clock.advance(29)
        c.sendPing(b"p")
        await pause(0.1)
        clock.advance(29)
        await pause(0.1)
        self.assertFalse(c.closed.called)
        clock.advance(2)
        await c.closed
        self.assertIn("30 s without a message", self.log())


class DirectWssTests(TestCase):
    async def test_ssl_endpoints_serve_wss(self) -> None:
        """--ws-endpoint and --ws-relay-endpoint with ssl: serve WSS without a proxy: a
        TestNatRequest is answered, and two WSS relay legs pair and relay; with
        --relay-only only the relay's WebSocket listener exists."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        cert, key, pem = self_signed(tmp)
        ssl = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        svc = start_server(
            tmp / "data", "--key", "", "--ws-endpoint", ssl, "--ws-relay-endpoint", ssl
        )
        self.addCleanup(svc.stopService)
        tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))
        c = await ws_connect(
            svc.rendezvous_ws.listening.getHost().port, tls=tls, server_name="localhost"
        )
        self.addCleanup(c.abort)
        c.send(bytes.fromhex("a201020803"))
        self.assertTrue((await c.recv_msg()).HasField("test_nat_response"))
        relay_port = svc.relay_ws.listening.getHost().port
        first = rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid="wss")).SerializeToString()
        legs = []
        for _ in range(2):
            leg = await ws_connect(relay_port, tls=tls, server_name="localhost")
            self.addCleanup(leg.abort)
            leg.send(first)
            legs.append(leg)
        big = bytes(range(256)) * 4096
        legs[0].send(big)
        self.assertEqual(await legs[1].recv(), big)
        only = start_server(
            tmp / "data2", "--relay-only", "--ws-relay-endpoint", "tcp:0:interface=127.0.0.1"
        )
        self.addCleanup(only.stopService)
        self.assertIsNone(only.rendezvous_ws)
        self.assertIsNotNone(only.relay_ws)
