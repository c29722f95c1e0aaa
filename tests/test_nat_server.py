"""The server carries IPv6 endpoints between viewer and host (direct IPv6 path)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire import addrmangle

from .test_rendezvous_integration import ID, SERVER_PK_B64, RendezvousTestBase

VIEWER_V6 = ("2001:db8:2::20", 40001)
HOST_V6 = ("2001:db8:1::10", 40002)


class SocketAddrV6Tests(RendezvousTestBase):
    @inlineCallbacks
    def test_v6_endpoints_are_forwarded(self) -> Any:
        """The viewer's IPv6 endpoint reaches the host in PunchHole, the host's comes back."""
        host = yield self.register_host()
        viewer = yield self.tcp()
        req = rz.PunchHoleRequest(
            id=ID,
            licence_key=SERVER_PK_B64,
            nat_type=rz.ASYMMETRIC,
            socket_addr_v6=addrmangle.encode(VIEWER_V6),
        )
        viewer.send_msg(rz.RendezvousMessage(punch_hole_request=req))
        data, _ = yield host.recv()
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        self.assertEqual(addrmangle.decode(push.punch_hole.socket_addr_v6), VIEWER_V6)

        host_tcp = yield self.tcp("127.0.0.2")
        sent = rz.PunchHoleSent(
            socket_addr=push.punch_hole.socket_addr,
            id=ID,
            nat_type=rz.ASYMMETRIC,
            version="1.4.9",
            socket_addr_v6=addrmangle.encode(HOST_V6),
        )
        host_tcp.send_msg(rz.RendezvousMessage(punch_hole_sent=sent))
        frame = yield viewer.recv()
        resp = rz.RendezvousMessage()
        resp.ParseFromString(frame)
        self.assertEqual(addrmangle.decode(resp.punch_hole_response.socket_addr_v6), HOST_V6)
        yield host_tcp.closed

    @inlineCallbacks
    def test_no_v6_no_field(self) -> Any:
        """Without IPv6 endpoints nothing extra is sent (OSS-identical PunchHole)."""
        host = yield self.register_host()
        viewer = yield self.tcp()
        req = rz.PunchHoleRequest(id=ID, licence_key=SERVER_PK_B64, nat_type=rz.ASYMMETRIC)
        viewer.send_msg(rz.RendezvousMessage(punch_hole_request=req))
        data, _ = yield host.recv()
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        self.assertEqual(push.punch_hole.socket_addr_v6, b"")
