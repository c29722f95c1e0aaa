"""The HTTP operations listener: C{/health} and C{/metrics} on a real server.

The server runs in-process on loopback (L{tests.rendezvous_harness.start_server})
with its HTTP listener on an ephemeral port; requests are real HTTP through
urllib in a thread.  Covers: health 200 and 503, metrics moving after a
real UDP RegisterPk and a real relay pair, the /metrics access rule (unit
tests of the allow function, and a real request refused when
the client's address read as a stranger's), and
C{--metrics-allow} parsing (hypothesis).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.ops import access
from litedesk.ops.health import probe_database
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.relay_tap import Options
from litedesk.websocket.proxy import parse_networks
from litedesk.wire.bytescodec import encode_frame

from .rendezvous_harness import TIMEOUT, start_server, udp_client, with_timeout

PK = bytes([7]) * 32


def http_get(port: int, path: str) -> tuple[int, str, bytes]:
    """GET http://127.0.0.1:port/path (blocking): status, content type, body."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def relay_pair(port: int, uuid: str, payload: bytes) -> None:
    """Two legs pair on the relay by C{uuid}, each sends C{payload} to the other."""
    frame = encode_frame(
        rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid=uuid)).SerializeToString()
    )
    a = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    b = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        a.sendall(frame)
        b.sendall(frame)
        a.sendall(payload)
        b.sendall(payload)
        for s in (a, b):
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("relay closed the leg")
                got += chunk
            if got != payload:
                raise AssertionError("relayed bytes changed")
    finally:
        a.close()
        b.close()


class ServerHTTPTests(TestCase):
    timeout = 60

    def start(self, *extra: str) -> Any:
        svc = start_server(Path(self.mktemp()), "--key", "", *extra)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc

    def get(self, svc: Any, path: str) -> Any:
        port = svc.api.listening.getHost().port
        return with_timeout(deferToThread(http_get, port, path), 3 * TIMEOUT)

    @inlineCallbacks
    def test_health_ok_then_503_when_the_relay_stops(self) -> Any:
        """All parts up: 200 and "ok"; the relay stopped: 503 naming it."""
        svc = self.start()
        status, ctype, body = yield self.get(svc, "/health")
        self.assertEqual((status, ctype), (200, "application/json"))
        self.assertEqual(
            json.loads(body),
            {"status": "ok", "rendezvous": True, "relay": True, "database": True},
        )
        yield svc.relay.stopService()
        status, _, body = yield self.get(svc, "/health")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["status"], "down")
        self.assertIs(json.loads(body)["relay"], False)

    @inlineCallbacks
    def test_health_503_when_the_database_is_gone(self) -> Any:
        """The peer database removed under the server: 503, database false."""
        data_dir = Path(self.mktemp())
        svc = start_server(data_dir, "--key", "")
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        for f in data_dir.glob("db_v2.sqlite3*"):
            f.unlink()
        status, _, body = yield self.get(svc, "/health")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["database"], False)

    @inlineCallbacks
    def test_health_without_a_relay(self) -> Any:
        """--no-relay: the relay is reported as absent (null), not down."""
        svc = self.start("--no-relay")
        status, _, body = yield self.get(svc, "/health")
        self.assertEqual(status, 200)
        self.assertIsNone(json.loads(body)["relay"])

    @inlineCallbacks
    def test_metrics_move_with_real_traffic(self) -> Any:
        """A UDP RegisterPk and a relay pair show in the counters and gauges."""
        svc = self.start()
        status, ctype, body = yield self.get(svc, "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain"))
        before = samples(body.decode())
        self.assertEqual(before[("litedesk_registrations_total", (("outcome", "ok"),))], 0)
        self.assertEqual(before[("litedesk_relay_pairs_total", ())], 0)
        self.assertEqual(before[("litedesk_peers_registered", ())], 0)
        self.assertGreater(before[("litedesk_database_size_bytes", ())], 0)
        self.assertEqual(
            {k[1][0][1] for k in before if k[0] == "litedesk_refusals_total"},
            set(access_reasons()),
        )

        client = udp_client()
        assert client.transport is not None
        self.addCleanup(client.transport.stopListening)
        msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id="123456789", uuid=b"u" * 16, pk=PK))
        client.send(msg.SerializeToString(), svc.rendezvous_udp.listening.getHost().port)
        yield client.recv()
        relay_port = (yield svc.relay.when_listening()).getHost().port
        yield deferToThread(relay_pair, relay_port, "ops-test-pair", b"x" * 1000)

        after = samples((yield self.get(svc, "/metrics"))[2].decode())
        self.assertEqual(after[("litedesk_registrations_total", (("outcome", "ok"),))], 1)
        self.assertEqual(after[("litedesk_peers_registered", ())], 1)
        self.assertEqual(after[("litedesk_relay_pairs_total", ())], 1)
        self.assertGreaterEqual(after[("litedesk_relay_bytes_total", ())], 2000)
        for name, _ in after:
            self.assertTrue(name.startswith("litedesk_"), name)

    @inlineCallbacks
    def test_metrics_refused_outside_the_allowed_networks(self) -> Any:
        """A client the rule does not admit gets 403 and no metrics.

        Every source address this test can use is loopback, which is always
        admitted, so the test reads the connection's (real, loopback) source as
        a stranger's: only the textual-address parser is replaced, the listener,
        resource and allow list are the real ones.
        """
        svc = self.start("--metrics-allow", "192.0.2.0/24")
        self.patch(access, "_address", lambda host: ipaddress.ip_address("198.51.100.7"))
        status, _, body = yield self.get(svc, "/metrics")
        self.assertEqual(status, 403)
        self.assertNotIn(b"litedesk_", body)
        self.patch(access, "_address", lambda host: ipaddress.ip_address("192.0.2.9"))
        status, _, body = yield self.get(svc, "/metrics")
        self.assertEqual(status, 200)
        self.assertIn(b"litedesk_", body)

    @inlineCallbacks
    def test_unknown_path_is_404(self) -> Any:
        svc = self.start()
        status, _, _ = yield self.get(svc, "/nothing-here")
        self.assertEqual(status, 404)

    def test_no_api(self) -> None:
        """--no-api: no HTTP listener at all."""
        svc = self.start("--no-api")
        self.assertIsNone(svc.api)


def access_reasons() -> list[str]:
    """Every C{reason} of C{litedesk_refusals_total}: rendezvous and relay, always all."""
    from litedesk.ops.metrics import REFUSAL_REASONS, RELAY_REFUSAL_REASONS

    return [*REFUSAL_REASONS, *RELAY_REFUSAL_REASONS]


class AccessRuleTests(SynchronousTestCase):
    def test_loopback_always(self) -> None:
        """127.0.0.0/8, ::1 and their mapped forms are this machine: admitted."""
        for host in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
            self.assertTrue(access.client_allowed(host, ()), host)

    def test_others_only_by_network(self) -> None:
        nets = parse_networks(["192.0.2.0/24, 2001:db8::/64"], strict=True)
        self.assertTrue(access.client_allowed("192.0.2.200", nets))
        self.assertTrue(access.client_allowed("::ffff:192.0.2.1", nets))
        self.assertTrue(access.client_allowed("2001:db8::5", nets))
        self.assertFalse(access.client_allowed("192.0.3.1", nets))
        self.assertFalse(access.client_allowed("2001:db9::5", nets))
        self.assertFalse(access.client_allowed("not an address", nets))
        self.assertFalse(access.client_allowed("10.0.0.1", ()))

    def test_option_repeatable_and_checked(self) -> None:
        opts = Options()
        opts.parseOptions(
            ["--metrics-allow", "192.0.2.0/24", "--metrics-allow", "2001:db8::/64,198.51.100.7"]
        )
        self.assertEqual(
            [str(n) for n in opts.metrics_allow],
            ["192.0.2.0/24", "2001:db8::/64", "198.51.100.7/32"],
        )
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(["--metrics-allow", "192.0.2.1/24"])
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(["--metrics-allow", "everyone"])

    @given(st.text(max_size=60))
    def test_metrics_allow_any_text(self, text: str) -> None:
        """Any text parses to networks or raises ValueError, nothing else."""
        try:
            nets = parse_networks([text], strict=True)
        except ValueError:
            return
        for net in nets:
            self.assertIsInstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network)

    @given(st.ip_addresses(), st.integers(0, 128))
    def test_metrics_allow_networks(self, addr: Any, prefix: int) -> None:
        """A valid network round-trips; its own address is admitted (an IPv4-mapped
        IPv6 address is read as the IPv4 address it carries, so is left out here)."""
        assume(getattr(addr, "ipv4_mapped", None) is None)
        prefix = min(prefix, addr.max_prefixlen)
        net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
        self.assertEqual(parse_networks([str(net)], strict=True), (net,))
        self.assertTrue(access.client_allowed(str(addr), (net,)))

    def test_probe_database(self) -> None:
        """A file that is not the peer database is reported down."""
        path = Path(self.mktemp())
        path.write_bytes(b"not sqlite at all" * 100)
        self.assertFalse(probe_database(str(path)))
        self.assertFalse(probe_database(str(path) + ".missing"))


class StartUpLineTests(SynchronousTestCase):
    def test_api_server_address(self) -> None:
        """The "Client settings" line names the API server as a client types it."""
        from litedesk.server.assembly import _api_address

        self.assertEqual(_api_address("tcp6:21114:interface=\\:\\:"), "http://this host:21114")
        self.assertEqual(
            _api_address("ssl:port=443:privateKey=k.pem:certKey=c.pem"), "https://this host:443"
        )
        self.assertEqual(_api_address("unix:/run/api.sock"), "unix:/run/api.sock")


class PlainHttpWarningTests(SynchronousTestCase):
    def test_exposed_plain_http_is_recognised(self) -> None:
        """The start-up warning fires for plain HTTP on a public interface, not for TLS or
        loopback."""
        from litedesk.server.assembly import plain_http_exposed

        exposed = ["tcp6:21114:interface=\\:\\:", "tcp:21114", "tcp:21114:interface=192.0.2.1"]
        private = [
            "tcp:21114:interface=127.0.0.1",
            "tcp6:21114:interface=\\:\\:1",
            "tcp:port=21114:interface=localhost",
            "ssl:21114:privateKey=key.pem:certKey=cert.pem",
        ]
        self.assertEqual([plain_http_exposed(e) for e in exposed], [True] * 3)
        self.assertEqual([plain_http_exposed(e) for e in private], [False] * 4)
