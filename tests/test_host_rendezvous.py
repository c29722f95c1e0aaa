"""The host's UDP registration against the real rendezvous server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from litedesk.host.registration import Registration, RegState
from litedesk.host.rendezvous_client import RendezvousClient
from litedesk.proto import rendezvous_pb2 as rz

from .rendezvous_harness import sleep, start_server, tcp_client

reactor: Any = _reactor


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.pushes: list[Any] = []

    def punch_hole(self, msg: rz.PunchHole) -> None:
        self.pushes.append(("punch_hole", msg))

    def fetch_local_addr(self, msg: rz.FetchLocalAddr) -> None:
        self.pushes.append(("fetch_local_addr", msg))

    def request_relay(self, msg: rz.RequestRelay) -> None:
        self.pushes.append(("request_relay", msg))

    def registration_event(self, event: Any) -> None:
        self.events.append(event)


class HostRegistrationTests(TestCase):
    @inlineCallbacks
    def wait_for(self, cond: Any, timeout: float = 5.0) -> Any:
        for _ in range(int(timeout / 0.02)):
            if cond():
                return True
            yield sleep(0.02)
        return False

    def start_server(self) -> Any:
        svc = start_server(self.data_dir, "--key", "")
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc

    def start_host(self, udp_port: int, interval: float = 15.0) -> tuple[Any, Recorder]:
        key = SigningKey.generate()
        reg = Registration("123456789", b"host-uuid", bytes(key.verify_key), interval=interval)
        rec = Recorder()
        client = RendezvousClient(reg, ("127.0.0.1", udp_port), rec, reactor, tick=0.05)
        port = reactor.listenUDP(0, client, interface="127.0.0.2")
        self.addCleanup(port.stopListening)
        return client, rec

    def setUp(self) -> None:
        self.data_dir = Path(self.mktemp())

    @inlineCallbacks
    def test_registers_and_receives_pushes(self) -> Any:
        """A host registers its key and receives a viewer's punch request by UDP."""
        svc = self.start_server()
        udp = svc.rendezvous_udp.listening.getHost().port
        client, rec = self.start_host(udp)
        ok = yield self.wait_for(lambda: client.registration.state is RegState.REGISTERED)
        self.assertTrue(ok)
        self.assertEqual([e.kind for e in rec.events], ["registered"])
        self.assertTrue(client.registration.key_confirmed)
        tcp = svc.rendezvous_tcp.listening.getHost().port
        viewer = yield tcp_client(tcp)
        self.addCleanup(viewer.close)
        viewer.send_msg(
            rz.RendezvousMessage(punch_hole_request=rz.PunchHoleRequest(id="123456789"))
        )
        ok = yield self.wait_for(lambda: rec.pushes)
        self.assertTrue(ok)
        self.assertEqual(rec.pushes[0][0], "punch_hole")

    @inlineCallbacks
    def test_survives_server_restart(self) -> Any:
        """After the server restarts the host is registered again within one heartbeat."""
        svc = self.start_server()
        udp = svc.rendezvous_udp.listening.getHost().port
        client, _rec = self.start_host(udp, interval=0.5)
        ok = yield self.wait_for(lambda: client.registration.state is RegState.REGISTERED)
        self.assertTrue(ok)
        yield svc.stopService()
        from twisted.internet import reactor as r

        # Same data directory and UDP port: the restarted server knows the key but
        # has not seen the host since it started.
        from litedesk.relay_tap import Options, makeService

        opts = Options()
        opts.parseOptions(
            [
                "--data-dir",
                str(self.data_dir),
                "--key",
                "",
                "--udp-endpoint",
                f"udp:{udp}:interface=127.0.0.1",
                "--tcp-endpoint",
                "tcp:0:interface=127.0.0.1",
                "--no-relay",
                "--nat-endpoint",
                "tcp:0:interface=127.0.0.1",
            ]
        )
        svc2: Any = makeService(opts, r)
        svc2.privilegedStartService()
        svc2.startService()
        self.addCleanup(svc2.stopService)
        server = svc2.server
        self.assertFalse(server.registry.get("123456789").online(r.seconds()))
        ok = yield self.wait_for(
            lambda: server.registry.get("123456789").online(r.seconds()), timeout=3.0
        )
        self.assertTrue(ok)

    @inlineCallbacks
    def test_uuid_mismatch_reported(self) -> Any:
        """A host whose id belongs to another machine says so and stops registering."""
        svc = self.start_server()
        udp = svc.rendezvous_udp.listening.getHost().port
        first, _ = self.start_host(udp)
        yield self.wait_for(lambda: first.registration.state is RegState.REGISTERED)
        key = SigningKey.generate()
        reg = Registration("123456789", b"other-uuid", bytes(key.verify_key))
        rec = Recorder()
        impostor = RendezvousClient(reg, ("127.0.0.1", udp), rec, reactor, tick=0.05)
        port = reactor.listenUDP(0, impostor, interface="127.0.0.3")
        self.addCleanup(port.stopListening)
        ok = yield self.wait_for(lambda: reg.state is RegState.REFUSED)
        self.assertTrue(ok)
        self.assertIn("UUID_MISMATCH", rec.events[-1].detail)

    @inlineCallbacks
    def test_pushes_from_strangers_ignored(self) -> Any:
        """Only the rendezvous server may push requests to the host."""
        svc = self.start_server()
        udp = svc.rendezvous_udp.listening.getHost().port
        client, rec = self.start_host(udp)
        yield self.wait_for(lambda: client.registration.state is RegState.REGISTERED)
        from twisted.internet.protocol import DatagramProtocol

        stranger = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.4")
        self.addCleanup(stranger.stopListening)
        push = rz.RendezvousMessage(punch_hole=rz.PunchHole(socket_addr=b"\x01\x02"))
        stranger.write(push.SerializeToString(), ("127.0.0.2", client.transport.getHost().port))
        # No push is the behaviour under test: give one time to arrive.
        yield sleep(0.2)
        self.assertEqual(rec.pushes, [])


class AgentRestartTests(HostRegistrationTests):
    """Kept apart so the restart scenario reads on its own."""

    @inlineCallbacks
    def test_restarted_agent_reachable_at_once(self) -> Any:
        """An agent restarted on a new UDP port gets pushes there right away, not 15 s later."""
        svc = self.start_server()
        udp = svc.rendezvous_udp.listening.getHost().port
        key = SigningKey.generate()

        def agent() -> tuple[Any, Recorder, Any]:
            reg = Registration("123456789", b"host-uuid", bytes(key.verify_key))
            rec = Recorder()
            client = RendezvousClient(reg, ("127.0.0.1", udp), rec, reactor, tick=0.05)
            return client, rec, reactor.listenUDP(0, client, interface="127.0.0.2")

        first, _, port1 = agent()
        yield self.wait_for(lambda: first.registration.state is RegState.REGISTERED)
        yield port1.stopListening()
        second, _rec, port2 = agent()
        self.addCleanup(port2.stopListening)
        yield self.wait_for(lambda: second.registration.state is RegState.REGISTERED)
        peer = svc.server.registry.get("123456789")
        ok = yield self.wait_for(lambda: peer.addr[1] == port2.getHost().port, timeout=1.0)
        self.assertTrue(ok)
