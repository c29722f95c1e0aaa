"""The nginx recipe of docs/websocket.rst §6, run: Debian's nginx terminates TLS and
proxies /ws/id and /ws/relay to the server's WebSocket listeners on loopback, and a
WSS client gets through it what a client in WebSocket mode needs.

A real nginx process (tests/support/nginx.py) with a self-signed certificate made
by the test; the server trusts 127.0.0.1 (where nginx connects from) as a proxy,
and the clients connect to nginx from 127.0.0.3, so the server only knows that
address from nginx's X-Real-IP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire import addrmangle
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.keys import secret_b64, verify_id_pk

from .rendezvous_harness import start_server, tcp_client, udp_client
from .support.nginx import NGINX, Nginx
from .support.polling import pause, until
from .support.skips import cannot_run
from .support.ws_client import WSClient, ws_connect

ID = "123456789"
PK = bytes([7]) * 32
SERVER_SEED = bytes(range(32))
SERVER_PK_B64 = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
CLIENT = "127.0.0.3"


def _aborter(client: Any) -> Any:
    transport: Any = client.transport
    return transport.abortConnection


def _stopper(client: Any) -> Any:
    transport: Any = client.transport
    return transport.stopListening


class NginxInFrontTests(TestCase):
    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        if NGINX is None:
            cannot_run("needs nginx (apt: nginx; tests/apt-packages.txt)")
        tmp = Path(self.mktemp())
        tmp.mkdir()
        self.svc = start_server(
            tmp / "data",
            "--key",
            secret_b64(SigningKey(SERVER_SEED)),
            "--ws-endpoint",
            "tcp:0:interface=127.0.0.1",
            "--ws-relay-endpoint",
            "tcp:0:interface=127.0.0.1",
            "--trusted-proxy",
            "127.0.0.1/32",
        )
        self.addCleanup(self._stop_server)
        self.logged: list[str] = []
        globalLogPublisher.addObserver(self._observe)  # type: ignore[arg-type]
        self._closers: list[Any] = []

        async def later() -> None:
            await pause(0)
            self.nginx = nginx = Nginx(
                tmp / "nginx",
                self.svc.rendezvous_ws.listening.getHost().port,
                self.svc.relay_ws.listening.getHost().port,
            )
            self.addCleanup(nginx.stop)
            self.tls = optionsForClientTLS(
                "localhost", trustRoot=Certificate.loadPEM(self.nginx.cert_pem)
            )

        return Deferred.fromCoroutine(later())

    def _observe(self, event: dict[str, Any]) -> None:
        self.logged.append(formatEvent(event))

    def tearDown(self) -> None:
        globalLogPublisher.removeObserver(self._observe)  # type: ignore[arg-type]
        for close in self._closers:
            close()

    def _stop_server(self) -> Deferred[None]:
        async def settle() -> None:
            await self.svc.stopService()
            await pause(0.05)

        return Deferred.fromCoroutine(settle())

    async def wss(self, path: str) -> WSClient:
        c = await ws_connect(
            self.nginx.port, path=path, bind=CLIENT, tls=self.tls, server_name="localhost"
        )
        self._closers.append(c.abort)
        return c

    async def register_host(self) -> Any:
        host = udp_client("127.0.0.2")
        self._closers.append(_stopper(host))
        msg = rz.RendezvousMessage(
            register_pk=rz.RegisterPk(id=ID, uuid=b"0123456789abcdef0123456789abcdef", pk=PK)
        )
        host.send(msg.SerializeToString(), self.svc.rendezvous_udp.listening.getHost().port)
        data, _ = await host.recv()
        self.assertEqual(data.hex(), "820100")
        return host

    async def test_rendezvous_through_nginx(self) -> None:
        """Through nginx's /ws/id over TLS: TestNatRequest is answered; a punch request
        reaches the host with the client's own address (from X-Real-IP), the host's
        answer comes back with the signed key; a wrong key is refused and logged under
        the client's address; RegisterPk gets TCP's answer."""
        c = await self.wss("/ws/id")
        c.send(
            rz.RendezvousMessage(test_nat_request=rz.TestNatRequest(serial=0)).SerializeToString()
        )
        self.assertTrue((await c.recv_msg()).HasField("test_nat_response"))

        host = await self.register_host()
        viewer = await self.wss("/ws/id")
        req = rz.PunchHoleRequest(
            id=ID, licence_key=SERVER_PK_B64, nat_type=rz.SYMMETRIC, version="1.4.9"
        )
        viewer.send_msg(rz.RendezvousMessage(punch_hole_request=req))
        data, _ = await host.recv()
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        self.assertEqual(addrmangle.decode(push.punch_hole.socket_addr)[0], CLIENT)
        host_tcp = await tcp_client(self.svc.rendezvous_tcp.listening.getHost().port, "127.0.0.2")
        self._closers.append(_aborter(host_tcp))
        sent = rz.PunchHoleSent(socket_addr=push.punch_hole.socket_addr, id=ID, version="1.4.9")
        host_tcp.send_msg(rz.RendezvousMessage(punch_hole_sent=sent))
        resp = (await viewer.recv_msg()).punch_hole_response
        self.assertEqual(verify_id_pk(base64.b64decode(SERVER_PK_B64), resp.pk), (ID, PK))

        wrong = await self.wss("/ws/id")
        wrong.send_msg(
            rz.RendezvousMessage(punch_hole_request=rz.PunchHoleRequest(id=ID, licence_key="x"))
        )
        self.assertEqual((await wrong.recv()).hex(), "5a021803")
        self.assertIn(f"Key mismatch from {CLIENT}", "\n".join(self.logged))

        register = rz.RendezvousMessage(
            register_pk=rz.RegisterPk(id="nginx0001", uuid=b"n" * 32, pk=bytes([3]) * 32)
        )
        w = await self.wss("/ws/id")
        w.send_msg(register)
        over_ws = (await w.recv_msg()).register_pk_response.result
        register.register_pk.id = "nginx0002"
        t = await tcp_client(self.svc.rendezvous_tcp.listening.getHost().port, "127.0.0.4")
        self._closers.append(_aborter(t))
        t.send_msg(register)
        self.assertEqual(over_ws, (await t.recv_msg()).register_pk_response.result)

    async def test_relayed_stream_through_nginx(self) -> None:
        """Through nginx's /ws/relay: a WSS leg pairs with a TCP leg (its messages arrive
        as frames, the TCP leg's frames as messages, 2 MB each way, unchanged) and with
        another WSS leg; the relay logs the client's address."""
        licence = SERVER_PK_B64
        first = rz.RendezvousMessage(
            request_relay=rz.RequestRelay(uuid="via-nginx", licence_key=licence)
        )
        w = await self.wss("/ws/relay")
        w.send_msg(first)
        relay_port = self.svc.relay.when_listening().result.getHost().port
        t = await tcp_client(relay_port, "127.0.0.4")
        self._closers.append(_aborter(t))
        t.send_raw(encode_frame(first.SerializeToString()))
        await until(lambda: self.svc.relay.relay.table.pairs)
        blocks = [os.urandom(200_000) for _ in range(10)]
        for b in blocks:
            t.send_raw(encode_frame(b))
        got = [await w.recv(10) for _ in blocks]
        self.assertEqual(
            hashlib.sha256(b"".join(got)).digest(), hashlib.sha256(b"".join(blocks)).digest()
        )
        self.assertEqual([len(g) for g in got], [len(b) for b in blocks])
        for b in blocks:
            w.send(b)
        decoder = FrameDecoder()
        await until(lambda: len(t.raw) >= sum(len(encode_frame(b)) for b in blocks), timeout=20)
        self.assertEqual(decoder.feed(t.raw), blocks)
        # nginx may hand the WSS leg's first message over after the TCP leg's, so
        # the client's address may be either side of the pairing line.
        self.assertRegex(
            "\n".join(self.logged),
            rf"relay paired via-nginx: (\S+ with )?{re.escape(CLIENT)}:\d+",
        )

        second = rz.RendezvousMessage(
            request_relay=rz.RequestRelay(uuid="both-ws", licence_key=licence)
        )
        one = await self.wss("/ws/relay")
        one.send_msg(second)
        two = await self.wss("/ws/relay")
        two.send_msg(second)
        one.send(b"over nginx twice")
        self.assertEqual(await two.recv(), b"over nginx twice")
