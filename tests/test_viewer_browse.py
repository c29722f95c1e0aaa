"""Browse hosts: a C{--discoverable} host is listed by the server's LiteDesk v1
discovery listener and found by the viewer's list; LAN discovery pings are
answered.  Real sockets on 127.0.0.1, the discovery server in-process."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from litedesk.discovery.protocol import DiscoveryFactory
from litedesk.discovery.state import DiscoveryRegistry
from litedesk.host.discoverable import DiscoverableService, LanResponder
from litedesk.host_tap import Options
from litedesk.viewer.browse import lan_search, list_hosts


class DiscoveryListTests(TestCase):
    def setUp(self) -> None:
        self.factory = DiscoveryFactory(DiscoveryRegistry(), reactor)
        self.port: Any = reactor.listenTCP(0, self.factory, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(self.port.stopListening)

    async def _wait_listed(self, peer_id: str, present: bool = True) -> list[Any]:
        for _ in range(100):
            hosts = await list_hosts(reactor, "127.0.0.1", self.port.getHost().port)
            if (peer_id in [h.peer_id for h in hosts]) == present:
                return hosts
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"{peer_id} {'never listed' if present else 'still listed'}")

    def test_discoverable_host_is_listed_and_leaves(self) -> None:
        """A host with --discoverable appears in the viewer's Browse list as a host
        (other peer types are not offered) and disappears when it stops."""

        async def run() -> None:
            svc = DiscoverableService(
                reactor, "host-123456", ("127.0.0.1", self.port.getHost().port), lan_port=0
            )
            svc.startService()
            try:
                hosts = await self._wait_listed("host-123456")
                (h,) = [h for h in hosts if h.peer_id == "host-123456"]
                self.assertEqual(h.source, "server")
                self.assertTrue(h.address.startswith("127.0.0.1:"))
            finally:
                await svc.stopService()
            await self._wait_listed("host-123456", present=False)

        return ensureDeferred(run())  # type: ignore[return-value]

    def test_unreachable_listener(self) -> None:
        """A server without --discovery gives a clear ConnectionError, not a hang."""

        async def run() -> None:
            port = self.port.getHost().port
            await self.port.stopListening()
            with self.assertRaises(ConnectionError):
                await list_hosts(reactor, "127.0.0.1", port, timeout=2.0)

        return ensureDeferred(run())  # type: ignore[return-value]


class LanTests(TestCase):
    def test_lan_ping_answered(self) -> None:
        """A LAN discovery ping (RustDesk PeerDiscovery) gets this host's id and name back."""
        udp = reactor.listenUDP(0, LanResponder("lan-777777", "deskbox"), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(udp.stopListening)

        async def run() -> None:
            found = await lan_search(
                reactor, port=udp.getHost().port, wait=0.3, targets=("127.0.0.1",)
            )
            self.assertEqual(
                [(h.peer_id, h.name, h.source) for h in found], [("lan-777777", "deskbox", "lan")]
            )

        return ensureDeferred(run())  # type: ignore[return-value]


class OptionTests(TestCase):
    def test_discoverable_options(self) -> None:
        """--discoverable uses the rendezvous host, port 8877; --discovery-server overrides."""
        key = "A" * 43 + "="
        o = Options()
        o.parseOptions(["--rendezvous", "srv.example:21116", "--key", key, "--discoverable"])
        self.assertTrue(o["discoverable"])
        self.assertEqual(o.discovery_server, ("srv.example", 8877))
        self.assertEqual(int(o["lan-discovery-port"]), 21119)
        o = Options()
        o.parseOptions(
            ["--rendezvous", "srv", "--key", key, "--discovery-server", "d.example:9000"]
        )
        self.assertEqual(o.discovery_server, ("d.example", 9000))
