"""The server options issue 12 added: --key-exchange-wait, --stream-hosts-per-ip,
--max-stream-hosts, and the listen backlog of the rendezvous stream listeners.

Each is checked as C{twistd litedesk-relay} parses it (command line and --config),
where the assembly puts it (the factory, the registry, the listening socket) and
what it does there: on a test clock for the offer, against a real server process
for the limits and the backlog.
"""

from __future__ import annotations

import base64
import os
import select
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet import endpoints
from twisted.internet import reactor as _real_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import (
    MemoryReactor,
    MemoryReactorClock,
    StringTransport,
    _FakePort,
)
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.registry import MAX_STREAM_HOSTS, MAX_STREAM_HOSTS_PER_SITE
from litedesk.rendezvous.secure_tcp import KEY_EXCHANGE_WAIT
from litedesk.server.assembly import LiteDeskServer, build_server
from litedesk.server.options import (
    CLIENT_SECURE_TCP_TIMEOUT,
    RENDEZVOUS_BACKLOG,
    ServerOptions,
    key_exchange_wait,
    with_backlog,
)
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.keys import secret_b64

from .support import rustdesk_rendezvous as viewer
from .support.polling import wait_until
from .support.ports import free_port_pair
from .support.processes import RelayProcess
from .support.skips import cannot_run, requires
from .support.stream_host import StreamHost

real_reactor: Any = _real_reactor
SERVER_SEED = bytes(range(32))
SERVER_KEY = base64.b64encode(bytes(SigningKey(SERVER_SEED).verify_key)).decode()
PK = bytes([7]) * 32
OK = rz.RegisterPkResponse.OK
TOO_FREQUENT = rz.RegisterPkResponse.TOO_FREQUENT
TWISTED_BACKLOG = 50  # what a tcp: endpoint string without backlog= listens with


def parse(*argv: str) -> ServerOptions:
    options = ServerOptions()
    options.parseOptions(list(argv))
    return options


# -- parsing ---------------------------------------------------------------------------


class KeyExchangeWaitOptionTests(SynchronousTestCase):
    def test_default_and_values(self) -> None:
        """The default is the wait the server always had; seconds are taken as a float, 0
        included, and 'off' (any case) is None, on the command line and in --config."""
        self.assertEqual(parse()["key-exchange-wait"], KEY_EXCHANGE_WAIT)
        self.assertEqual(parse("--key-exchange-wait", "0")["key-exchange-wait"], 0.0)
        self.assertEqual(parse("--key-exchange-wait", "2.5")["key-exchange-wait"], 2.5)
        self.assertIsNone(parse("--key-exchange-wait", "off")["key-exchange-wait"])
        self.assertIsNone(parse("--key-exchange-wait", "OFF")["key-exchange-wait"])
        conf = Path(self.mktemp())
        conf.write_text("key-exchange-wait = off\nstream-hosts-per-ip = 3\n")
        options = parse("--config", str(conf))
        self.assertIsNone(options["key-exchange-wait"])
        self.assertEqual(options["stream-hosts-per-ip"], 3)

    def test_refused(self) -> None:
        """Negative, not a number, infinite or NaN, and 18 s or more (a waiting client has
        given up by then) are usage errors that say what is allowed."""
        for bad in ("-1", "abc", "", "inf", "nan", "18", "30", "never"):
            with self.assertRaises(usage.UsageError, msg=bad) as caught:
                parse("--key-exchange-wait", bad)
            self.assertIn("off", str(caught.exception))

    @settings(max_examples=500, deadline=None)
    @given(st.one_of(st.text(max_size=12), st.floats().map(repr), st.sampled_from(["off", "0"])))
    def test_any_text(self, text: str) -> None:
        """Whatever the text: None for 'off', a number of seconds in [0, 18), or a
        UsageError; never another exception."""
        try:
            value = key_exchange_wait(text)
        except usage.UsageError:
            return
        if value is None:
            self.assertEqual(text.strip().lower(), "off")
        else:
            self.assertTrue(0 <= value < CLIENT_SECURE_TCP_TIMEOUT, value)

    @given(st.floats(min_value=0, max_value=CLIENT_SECURE_TCP_TIMEOUT, exclude_max=True))
    def test_every_allowed_value_round_trips(self, seconds: float) -> None:
        self.assertEqual(key_exchange_wait(repr(seconds)), seconds)


class StreamHostOptionTests(SynchronousTestCase):
    def test_defaults_and_values(self) -> None:
        """Defaults are the registry's limits; whole numbers >= 0 are taken (0 = no limit),
        anything else is a usage error."""
        options = parse()
        self.assertEqual(options["stream-hosts-per-ip"], MAX_STREAM_HOSTS_PER_SITE)
        self.assertEqual(options["max-stream-hosts"], MAX_STREAM_HOSTS)
        options = parse("--stream-hosts-per-ip", "0", "--max-stream-hosts", "5")
        self.assertEqual((options["stream-hosts-per-ip"], options["max-stream-hosts"]), (0, 5))
        for name in ("--stream-hosts-per-ip", "--max-stream-hosts"):
            for bad in ("-1", "1.5", "many"):
                with self.assertRaises(usage.UsageError, msg=(name, bad)):
                    parse(name, bad)


_KINDS = st.sampled_from(["tcp", "tcp6", "ssl", "unix", "TCP", "systemd", "onion", "udp"])
_FIELD = st.from_regex(r"[a-z]{1,8}=[A-Za-z0-9.\\:/]{0,10}", fullmatch=True)


class WithBacklogTests(SynchronousTestCase):
    def test_examples(self) -> None:
        """A backlog is added to the kinds of endpoint that listen with one, only when
        the string names none; escaped colons stay inside their field."""
        self.assertEqual(
            with_backlog("tcp6:21116:interface=\\:\\:", 9), "tcp6:21116:interface=\\:\\::backlog=9"
        )
        self.assertEqual(with_backlog("tcp:1:backlog=3", 9), "tcp:1:backlog=3")
        self.assertEqual(
            with_backlog("ssl:443:privateKey=k.pem", 9), "ssl:443:privateKey=k.pem:backlog=9"
        )
        self.assertEqual(
            with_backlog("systemd:domain=INET:index=0", 9), "systemd:domain=INET:index=0"
        )
        self.assertEqual(
            with_backlog("tcp:1:interface=a\\:backlog=2", 9),
            "tcp:1:interface=a\\:backlog=2:backlog=9",
        )

    @settings(max_examples=300, deadline=None)
    @given(_KINDS, st.lists(_FIELD, max_size=4), st.integers(1, 1 << 20))
    def test_any_description(self, kind: str, fields: list[str], backlog: int) -> None:
        """Unchanged for other kinds or when a field is a backlog; otherwise the same
        string with one backlog field more."""
        description = ":".join([kind, *fields])
        got = with_backlog(description, backlog)
        names_one = any(f.startswith("backlog=") for f in fields)
        if kind.lower() in ("tcp", "tcp6", "ssl", "unix") and not names_one:
            self.assertEqual(got, f"{description}:backlog={backlog}")
        else:
            self.assertEqual(got, description)

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from(["tcp", "tcp6"]),
        st.integers(0, 65535),
        st.sampled_from(["", ":interface=127.0.0.1", ":interface=\\:\\:1", ":backlog=7"]),
        st.integers(1, 65535),
    )
    def test_twisted_listens_with_it(self, kind: str, port: int, rest: str, backlog: int) -> None:
        """What Twisted makes of the result listens with the added backlog, or with the
        one the string already named."""
        if kind == "tcp" and "\\:" in rest:
            rest = ""
        ep: Any = endpoints.serverFromString(
            MemoryReactor(), with_backlog(f"{kind}:{port}{rest}", backlog)
        )
        self.assertEqual(ep._backlog, 7 if "backlog=7" in rest else backlog)


# -- where the assembly puts them --------------------------------------------------------


class _TestReactor(MemoryReactorClock):
    """Listeners and timers in memory; the peer store's writer thread reports to the real
    reactor, so stopping the server (which closes the store) completes."""

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        real_reactor.callFromThread(f, *args, **kw)

    def listenUDP(self, port: int, protocol: Any, interface: str = "", size: int = 0) -> Any:
        return _FakePort(IPv4Address("UDP", interface, port))


class AssemblyTests(TestCase):
    def build(self, *argv: str) -> tuple[LiteDeskServer, _TestReactor]:
        data_dir = Path(self.mktemp())
        options = parse(
            "--data-dir",
            str(data_dir),
            "--key",
            secret_b64(SigningKey(SERVER_SEED)),
            "--tcp-endpoint",
            "tcp:21116:interface=127.0.0.1",
            "--nat-endpoint",
            "tcp:21115:interface=127.0.0.1",
            "--udp-endpoint",
            "udp:21116:interface=127.0.0.1",
            *argv,
        )
        reactor = _TestReactor()
        top = build_server(options, reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        return top, reactor

    def connect(self, top: LiteDeskServer, ws: bool = False) -> tuple[Any, StringTransport]:
        service: Any = top.rendezvous_ws if ws else top.rendezvous_tcp
        factory = service.factory.inner_factory if ws else service.factory
        proto = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 40000))
        proto.makeConnection(transport)
        self.addCleanup(proto.connectionLost, None)
        return proto, transport

    def test_values_reach_the_components(self) -> None:
        """The rendezvous TCP factory gets --key-exchange-wait and the registry's stream
        hosts both limits; defaults when not given."""
        top, _ = self.build()
        tcp: Any = top.rendezvous_tcp
        assert top.registry is not None
        self.assertEqual(tcp.factory.key_exchange_wait, KEY_EXCHANGE_WAIT)
        self.assertEqual(top.registry.streams.max_per_site, MAX_STREAM_HOSTS_PER_SITE)
        self.assertEqual(top.registry.streams.max_total, MAX_STREAM_HOSTS)
        top, _ = self.build(
            "--key-exchange-wait", "off", "--stream-hosts-per-ip", "3", "--max-stream-hosts", "7"
        )
        tcp = top.rendezvous_tcp
        assert top.registry is not None
        self.assertIsNone(tcp.factory.key_exchange_wait)
        self.assertEqual(top.registry.streams.max_per_site, 3)
        self.assertEqual(top.registry.streams.max_total, 7)

    def test_udp_punch_brokering_follows_the_flag(self) -> None:
        """On by default (docs/protocol.rst §5.12); --no-udp-punch leaves the broker out."""
        top, _ = self.build()
        assert top.server is not None
        self.assertIsNotNone(top.server.udp_punch)
        top, _ = self.build("--no-udp-punch")
        assert top.server is not None
        self.assertIsNone(top.server.udp_punch)

    def test_offer_follows_the_wait(self) -> None:
        """The built server's port P offers after the configured silence: at 3 s with 3,
        on accepting with 0 (before the client's first byte), never with 'off'; the
        WebSocket port never offers."""
        top, clock = self.build("--key-exchange-wait", "3")
        _, transport = self.connect(top)
        clock.advance(2.99)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.01)
        (offer,) = FrameDecoder().feed(transport.value())
        self.assertEqual(rz.RendezvousMessage.FromString(offer).WhichOneof("union"), "key_exchange")

        top, clock = self.build("--key-exchange-wait", "0")
        timers = len(clock.getDelayedCalls())
        proto, transport = self.connect(top)
        (offer,) = FrameDecoder().feed(transport.value())
        self.assertEqual(rz.RendezvousMessage.FromString(offer).WhichOneof("union"), "key_exchange")
        self.assertEqual(len(clock.getDelayedCalls()), timers + 1, "only the read deadline")
        # A client that speaks at once is served in plaintext after the offer.
        transport.clear()
        request = rz.PunchHoleRequest(id="nobody00", licence_key=SERVER_KEY)
        proto.dataReceived(
            encode_frame(rz.RendezvousMessage(punch_hole_request=request).SerializeToString())
        )
        (reply,) = FrameDecoder().feed(transport.value())
        self.assertEqual(
            rz.RendezvousMessage.FromString(reply).punch_hole_response.failure,
            rz.PunchHoleResponse.ID_NOT_EXIST,
        )
        _, ws_transport = self.connect(top, ws=True)
        clock.advance(29)
        self.assertEqual(ws_transport.value(), b"")

        top, clock = self.build("--key-exchange-wait", "off")
        _, transport = self.connect(top)
        clock.advance(29.9)
        self.assertEqual(transport.value(), b"")

    def test_listen_backlog(self) -> None:
        """Port P and the WebSocket rendezvous port listen with RENDEZVOUS_BACKLOG unless
        their string names one; ports P-1 and P-2 (HTTP) keep Twisted's default and the
        relay its own."""
        _, reactor = self.build()
        backlogs = {port: backlog for port, _, backlog, _ in reactor.tcpServers}
        self.assertEqual(
            backlogs,
            {
                21116: RENDEZVOUS_BACKLOG,
                21118: RENDEZVOUS_BACKLOG,
                21115: TWISTED_BACKLOG,
                21114: TWISTED_BACKLOG,
                21117: 4096,
                21119: 4096,
            },
        )
        _, reactor = self.build(
            "--no-relay",
            "--tcp-endpoint",
            "tcp:21116:interface=127.0.0.1:backlog=100",
            "--ws-endpoint",
            "tcp:30000:backlog=7",
            "--no-api",
        )
        backlogs = {port: backlog for port, _, backlog, _ in reactor.tcpServers}
        self.assertEqual(backlogs, {21116: 100, 30000: 7, 21115: TWISTED_BACKLOG})


# -- against a real server process ---------------------------------------------------------


def _register(src: str, port: int, peer_id: str) -> tuple[socket.socket, int | None]:
    """A stream host's RegisterPk from C{src}: the socket and the answer (None: closed
    without one)."""
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    reg = rz.RegisterPk(id=peer_id, uuid=f"uuid-{peer_id}".encode(), pk=PK)
    s.sendall(encode_frame(rz.RendezvousMessage(register_pk=reg).SerializeToString()))
    return s, _answer(s)


def _answer(s: socket.socket) -> int | None:
    decoder = FrameDecoder()
    while True:
        data = s.recv(4096)
        if not data:
            return None
        for payload in decoder.feed(data):
            msg = rz.RendezvousMessage.FromString(payload)
            if msg.WhichOneof("union") == "register_pk_response":
                return int(msg.register_pk_response.result)


class ServerProcessCase(SynchronousTestCase):
    extra: tuple[str, ...] = ()

    def setUp(self) -> None:
        self.port = free_port_pair()
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        self.relay = RelayProcess(
            data_dir,
            self.port,
            Path(self.mktemp()),
            "--key",
            secret_b64(SigningKey(SERVER_SEED)),
            *self.extra,
        )
        self.addCleanup(self.relay.stop)
        self.socks: list[socket.socket] = []

    def tearDown(self) -> None:
        for s in self.socks:
            s.close()

    def register(self, src: str, peer_id: str) -> int | None:
        s, result = _register(src, self.port, peer_id)
        self.socks.append(s)
        return result


class StreamHostLimitsTests(ServerProcessCase):
    extra = ("--stream-hosts-per-ip", "2", "--max-stream-hosts", "3")

    def test_hostile_streams_are_bounded_by_the_options(self) -> None:
        """With --stream-hosts-per-ip 2 and --max-stream-hosts 3: a third host from one
        address and a fourth in all are answered TOO_FREQUENT and closed, however many
        try; a slot freed by a closing host is taken by the next one."""
        self.assertEqual(self.register("127.0.0.2", "host000001"), OK)
        self.assertEqual(self.register("127.0.0.2", "host000002"), OK)
        for i in range(5):
            self.assertEqual(self.register("127.0.0.2", f"extra00000{i}"), TOO_FREQUENT)
            self.assertEqual(self.socks[-1].recv(1), b"", "a refused stream is closed")
        self.assertEqual(self.register("127.0.0.3", "host000003"), OK)
        for i in range(5):
            self.assertEqual(self.register(f"127.0.1.{i + 1}", f"other0000{i}"), TOO_FREQUENT)
        self.socks[0].close()  # host000001 goes offline: one slot in all is free again

        def registered() -> bool:
            s, result = _register("127.0.0.4", self.port, "host000004")
            self.socks.append(s)
            return result == OK

        wait_until(registered, 10, 0.2, "a freed slot")


class KeyExchangeAtOnceTests(ServerProcessCase):
    extra = ("--key-exchange-wait", "0")

    def test_offer_comes_first_and_every_client_is_served(self) -> None:
        """--key-exchange-wait 0: even a client that speaks at once reads the KeyExchange
        first; a stock viewer (which skips it) still gets its answer, and a stock
        TCP-mode host secures its stream and registers."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.socks.append(s)
        request = rz.PunchHoleRequest(id="nobody00", licence_key=SERVER_KEY)
        s.sendall(
            encode_frame(rz.RendezvousMessage(punch_hole_request=request).SerializeToString())
        )
        decoder = FrameDecoder()
        frames: list[bytes] = []
        while len(frames) < 2:
            data = s.recv(4096)
            self.assertTrue(data, f"closed after {frames}")
            frames += decoder.feed(data)
        kinds = [rz.RendezvousMessage.FromString(f).WhichOneof("union") for f in frames]
        self.assertEqual(kinds, ["key_exchange", "punch_hole_response"])

        host = StreamHost(
            f"127.0.0.1:{self.port}",
            "987654321",
            b"stock-uuid",
            PK,
            key=SERVER_KEY,
            secure=True,
            bind="127.0.0.2",
        )
        host.start()
        self.addCleanup(host.stop)
        self.assertTrue(host.confirmed.wait(20), f"{host.results} {host.errors}")
        self.assertTrue(host.secured)
        answer = viewer.punch_hole_request(f"127.0.0.1:{self.port}", SERVER_KEY, "987654321")
        self.assertEqual(answer.kind, "punch")


def _listen_backlog(port: int) -> int:
    """The backlog the kernel keeps for the listener on 127.0.0.1:port (ss' Send-Q)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    (line,) = out.splitlines()
    return int(line.split()[2])


def _somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


@requires("ss")
class ListenBacklogTests(ServerProcessCase):
    WAVE = 200  # hosts reconnecting at once: four times Twisted's default backlog

    def test_listening_sockets(self) -> None:
        """The running server's port P and WebSocket port P+2 listen with the largest
        backlog the kernel allows; P-1 with Twisted's 50, the relay with its 4096."""
        cap = _somaxconn()
        self.assertEqual(_listen_backlog(self.port), min(RENDEZVOUS_BACKLOG, cap))
        self.assertEqual(_listen_backlog(self.port + 2), min(RENDEZVOUS_BACKLOG, cap))
        self.assertEqual(_listen_backlog(self.port - 1), min(TWISTED_BACKLOG, cap))
        self.assertEqual(_listen_backlog(self.port + 1), min(4096, cap))

    def test_a_reconnect_wave_while_the_server_is_busy(self) -> None:
        """200 hosts in TCP mode connect while the server cannot accept (stopped, as when
        busy after a restart): the kernel completes every handshake; once it runs again,
        each one's RegisterPk is answered OK."""
        if _somaxconn() < self.WAVE:
            cannot_run(f"net.core.somaxconn is below {self.WAVE}")
        self.relay.proc.send_signal(signal.SIGSTOP)
        resumed = False
        try:
            pending = {}
            for i in range(self.WAVE):
                s = socket.socket()
                self.socks.append(s)
                s.bind((f"127.2.{i // 200}.{i % 200 + 1}", 0))
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", self.port))
                pending[s.fileno()] = s

            def all_connected() -> bool:
                _, writable, _ = select.select([], list(pending.values()), [], 0.1)
                for s in writable:
                    error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    self.assertEqual(error, 0, os.strerror(error))
                    del pending[s.fileno()]
                return not pending

            # A handshake the accept queue cannot take is dropped and retried after 1 s
            # at the earliest; these complete at once.  The deadline is a safety net.
            wait_until(all_connected, 10, 0.0, lambda: f"{len(pending)} handshakes")
            self.relay.proc.send_signal(signal.SIGCONT)
            resumed = True
            results = []
            for i, s in enumerate(self.socks):
                s.setblocking(True)
                s.settimeout(20)
                reg = rz.RegisterPk(id=f"wave{i:05d}", uuid=b"wave-%d" % i, pk=PK)
                s.sendall(encode_frame(rz.RendezvousMessage(register_pk=reg).SerializeToString()))
            for s in self.socks:
                results.append(_answer(s))
            self.assertEqual(results, [OK] * self.WAVE)
        finally:
            if not resumed:
                self.relay.proc.send_signal(signal.SIGCONT)

    test_a_reconnect_wave_while_the_server_is_busy.timeout = 60  # type: ignore[attr-defined]
