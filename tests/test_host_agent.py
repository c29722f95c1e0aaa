"""The assemblies as built objects: the host agent's named parts, and the
listeners both daemons share (litedesk/services.py).

The agent runs in this process on Xvfb against an in-process server on
loopback, so the test reaches what it built by name (C{agent.identity},
C{agent.ctx}, C{agent.listen}, ...) the way a maintainer would.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import endpoints
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.host.agent import HostAgent, build_host_agent
from litedesk.host.passwords import ONE_TIME_PASSWORD_FILE
from litedesk.host_tap import Options as HostOptions
from litedesk.services import EndpointService, UDPListenerService, parse_udp_endpoint
from litedesk.session.admission import DEFAULT_TOTAL

from .rendezvous_harness import start_server
from .support.polling import until
from .support.skips import requires
from .support.xvfb import shared_xvfb

reactor: Any = _reactor


def _escape(interface: str) -> str:
    return interface.replace(":", "\\:")


class ParseUdpEndpointTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """udp:PORT, port=, and an escaped IPv6 interface."""
        self.assertEqual(parse_udp_endpoint("udp:21116"), (21116, ""))
        self.assertEqual(parse_udp_endpoint("udp:port=5:interface=127.0.0.1"), (5, "127.0.0.1"))
        self.assertEqual(parse_udp_endpoint("udp:0:interface=\\:\\:1"), (0, "::1"))

    def test_refusals(self) -> None:
        """Not UDP, no port, a port out of range or an unknown option: a usage error."""
        for bad in ("tcp:21116", "udp", "udp:65536", "udp:x", "udp:1:backlog=5"):
            with self.assertRaises(usage.UsageError, msg=bad):
                parse_udp_endpoint(bad)

    @given(
        st.integers(0, 65535),
        st.one_of(st.just(""), st.ip_addresses().map(str)),
    )
    def test_round_trip(self, port: int, interface: str) -> None:
        """Any port and address written as twistd strings read back exactly."""
        text = f"udp:{port}" + (f":interface={_escape(interface)}" if interface else "")
        self.assertEqual(parse_udp_endpoint(text), (port, interface))

    @given(st.text(max_size=60))
    def test_any_text_parses_or_is_refused(self, text: str) -> None:
        """Arbitrary text gives a port in range or a usage error, nothing else."""
        try:
            port, _ = parse_udp_endpoint(text)
        except usage.UsageError:
            return
        self.assertTrue(0 <= port < 65536)


class SharedListenerTests(TestCase):
    def test_stream_bind_failure_stops_start_up(self) -> None:
        """A stream port already taken fails the start (twistd exits) instead of
        the daemon running on without it."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        ep = endpoints.serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1")
        svc = EndpointService("taken", ep, Factory.forProtocol(Protocol))
        self.assertRaises(CannotListenError, svc.privilegedStartService)
        self.assertIsNone(svc.listening)

    @inlineCallbacks
    def test_stream_and_udp_listeners_name_their_ports(self) -> Any:
        """Once started, each listener exposes the port it bound; stopped, it frees it."""
        ep = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        tcp = EndpointService("tcp", ep, Factory.forProtocol(Protocol))
        udp = UDPListenerService("udp", reactor, "udp:0:interface=127.0.0.1", DatagramProtocol())
        for svc in (tcp, udp):
            svc.privilegedStartService()
            svc.startService()
        yield until(lambda: tcp.listening, message="the TCP listener")
        assert tcp.listening is not None and udp.listening is not None
        tcp_port: int = tcp.listening.getHost().port  # type: ignore[attr-defined]
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5):
            pass
        self.assertEqual(udp.listening.getHost().host, "127.0.0.1")  # type: ignore[attr-defined]
        yield tcp.stopService()
        yield udp.stopService()
        self.assertIsNone(udp.listening)
        refused = socket.socket()
        self.addCleanup(refused.close)
        self.assertNotEqual(refused.connect_ex(("127.0.0.1", tcp_port)), 0)


@requires("Xvfb")
class HostAgentTests(TestCase):
    def setUp(self) -> None:
        self.display = shared_xvfb().display
        self.config_dir = Path(self.mktemp())

    def _agent(self, *argv: str) -> HostAgent:
        opts = HostOptions()
        opts.parseOptions(
            [
                "--config-dir",
                str(self.config_dir),
                "--display",
                str(self.display),
                "--listen",
                "tcp:0:interface=127.0.0.1",
                *argv,
            ]
        )
        agent = build_host_agent(opts, reactor)
        agent.privilegedStartService()
        agent.startService()
        self.addCleanup(lambda: agent.stopService() if agent.running else None)
        return agent

    @inlineCallbacks
    def test_registered_host_by_its_named_parts(self) -> Any:
        """A host given --rendezvous registers its own id and key with the server,
        listens where --listen says, and has no parts it was not asked for."""
        server = start_server(Path(self.mktemp()), "--key", "", "--no-relay")
        self.addCleanup(server.stopService)
        udp = server.rendezvous_udp.listening.getHost().port
        agent = self._agent(
            "--rendezvous",
            f"127.0.0.1:{udp}",
            "--key",
            server.key.public_key,
            "--no-nat-test",
            "--view-only",
        )
        peer_id = agent.identity.peer_id
        self.assertEqual((self.config_dir / "id").read_text().strip(), peer_id)
        peer = yield until(
            lambda: server.registry.get(peer_id), message=f"{peer_id} registered with the server"
        )
        yield until(lambda: peer.pk, message="the host's key registered")
        self.assertEqual(peer.pk, agent.identity.public_key)
        self.assertIsNotNone(agent.paths)
        self.assertIsNotNone(agent.rendezvous_udp)
        self.assertIsNone(agent.nat_test)  # --no-nat-test
        self.assertIsNone(agent.upnp)
        self.assertIsNone(agent.discoverable)
        self.assertTrue(agent.ctx.view_only)
        self.assertIsNone(agent.ctx.input)

        yield until(lambda: agent.listen and agent.listen.listening, message="the listener")
        assert agent.listen is not None and agent.listen.listening is not None
        port: int = agent.listen.listening.getHost().port  # type: ignore[attr-defined]
        admission = agent.ctx.admission
        assert admission is not None
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            # An unauthenticated session is admitted against the agent's limiter.
            yield until(lambda: len(admission) == 1, message="the session admitted")

    def test_listen_only_and_one_time_password(self) -> None:
        """Without --rendezvous nothing registers; without --password-file the
        one-time password is in its 0600 file (and the verifier accepts that one),
        and the unauthenticated limit is sized from the open-file limit."""
        agent = self._agent("--view-only")  # no xclip processes to outlive the test
        self.assertIsNone(agent.paths)
        self.assertIsNone(agent.rendezvous_udp)
        self.assertIsNone(agent.nat_test)
        path = self.config_dir / ONE_TIME_PASSWORD_FILE
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(path.read_text().strip(), agent.verifier.one_time_password)
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert agent.ctx.admission is not None
        self.assertEqual(agent.ctx.admission.total, max(16, min(DEFAULT_TOTAL, soft // 4)))
