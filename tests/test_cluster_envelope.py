"""The cluster's NOTIFY payloads, its node list and presence map, and the bounds of
forwarded requests on the host's node.

- every message survives encode/decode; any other text decodes to None
  (hypothesis: arbitrary text, JSON of the wrong shapes, truncations);
- peer notices and arrivals are split to fit PostgreSQL's 8,000-byte limit;
- L{Membership}: dead after silence, alive when just joined, the list and
  serial clients get;
- a node holds at most L{MAX_REMOTE} forwarded requests, each at most
  L{REMOTE_WAIT} seconds, and a bad forwarded message is counted and dropped.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from litedesk.cluster.envelope import (
    MAX_PAYLOAD,
    Answer,
    Arrival,
    Forward,
    PeerNotice,
    decode,
    encode,
    encode_arrivals,
    encode_peer_notices,
    own_prefixes,
)
from litedesk.cluster.membership import DEAD_AFTER, MIN_SERIAL, Membership, NodeRow
from litedesk.cluster.options import advertised
from litedesk.cluster.presence import Presence
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous import forwarded
from litedesk.rendezvous.registry import Registry
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.server import RendezvousServer
from litedesk.rendezvous.sinks import ReplySink
from litedesk.rendezvous.store import PeerRecord
from litedesk.wire.address import Address
from litedesk.wire.keys import ServerKey

ids = st.text(min_size=1, max_size=100)
addresses = st.tuples(st.sampled_from(["1.2.3.4", "::1", "10.0.0.7"]), st.integers(0, 65535))
records = st.builds(
    PeerRecord,
    st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
    ids,
    st.binary(min_size=1, max_size=64),
    st.binary(min_size=32, max_size=32),
    st.sampled_from(["1.2.3.4", "::1"]),
    st.sampled_from(["", "412000001"]),
)
messages = st.one_of(
    st.builds(Forward, ids, addresses, addresses, st.booleans(), st.binary(max_size=300)),
    st.builds(Answer, addresses, st.binary(max_size=300)),
    st.builds(Arrival, ids, st.lists(ids, max_size=5).map(tuple)),
    st.builds(PeerNotice, ids, st.lists(records, max_size=5).map(tuple)),
)


class EnvelopeTests(SynchronousTestCase):
    @given(messages)
    def test_round_trip(self, msg: object) -> None:
        """What one node encodes, another decodes to the same message."""
        self.assertEqual(decode(encode(msg)), msg)  # type: ignore[arg-type]

    @given(st.text(max_size=2000))
    def test_any_text_is_a_message_or_none(self, text: str) -> None:
        """Garbage never raises: it is None, or a well-formed message."""
        got = decode(text)
        if got is not None:
            self.assertEqual(decode(encode(got)), got)

    @given(messages, st.data())
    def test_truncated_or_retyped_payloads_are_refused(
        self, msg: object, data: st.DataObject
    ) -> None:
        """A cut payload or one with a field of the wrong type decodes to None."""
        text = encode(msg)  # type: ignore[arg-type]
        cut = data.draw(st.integers(0, len(text) - 1))
        self.assertIsNone(decode(text[:cut]))
        obj = json.loads(text)
        key = data.draw(st.sampled_from(sorted(k for k in obj if k != "k")))
        obj[key] = data.draw(st.sampled_from([None, 3.5, {"x": 1}, [1, 2, 3], True]))
        if obj[key] is True and isinstance(json.loads(text)[key], bool):
            return
        self.assertIsNone(decode(json.dumps(obj)))

    @given(ids, ids, st.lists(records, max_size=3), st.lists(ids, max_size=3))
    def test_own_prefixes(
        self, node: str, other: str, rows: list[PeerRecord], arrived: list[str]
    ) -> None:
        """A node recognises its own announcements by their first bytes, never another's."""
        mine = own_prefixes(node)
        for text in (
            encode(PeerNotice(node, tuple(rows))),
            *encode_arrivals(node, arrived or ["x"]),
        ):
            self.assertTrue(text.startswith(mine))
        if other != node:
            self.assertFalse(encode(PeerNotice(other, tuple(rows))).startswith(mine))
            self.assertFalse(encode(Arrival(other, tuple(arrived))).startswith(mine))
        self.assertFalse(encode(Answer(("1.2.3.4", 1), b"x")).startswith(mine))

    def test_oversize_payload_refused(self) -> None:
        self.assertIsNone(decode(" " * (MAX_PAYLOAD + 1)))

    def test_notices_split_to_fit(self) -> None:
        """3,000 rows or arrivals: every payload fits, none is lost, the order is kept."""
        rows = [
            PeerRecord(b"g" * 16, f"4{i:08d}", b"u" * 36, b"k" * 32, "192.0.2.1")
            for i in range(3000)
        ]
        payloads = encode_peer_notices("node-a", rows)
        self.assertGreater(len(payloads), 1)
        back: list[PeerRecord] = []
        for p in payloads:
            self.assertLessEqual(len(p.encode()), MAX_PAYLOAD)
            msg = decode(p)
            assert isinstance(msg, PeerNotice)
            back.extend(msg.records)
        self.assertEqual(back, rows)
        arrivals = encode_arrivals("node-a", [r.id for r in rows])
        got = [i for p in arrivals for i in decode(p).peer_ids]  # type: ignore[union-attr]
        self.assertEqual(got, [r.id for r in rows])


class MembershipTests(SynchronousTestCase):
    def test_dead_after_silence_alive_when_new(self) -> None:
        m = Membership("a", base_serial=0)
        died = m.update([NodeRow("a", "a.example:21116", 0), NodeRow("b", "b.example", 1)], 1, 100)
        self.assertEqual(died, [])
        self.assertTrue(m.alive("b", 100))
        self.assertFalse(m.alive("b", 100 + DEAD_AFTER))
        self.assertTrue(m.alive("a", 1e9), "this node")
        self.assertTrue(m.alive("c", 100), "joined since the last read")
        died = m.update([NodeRow("a", "a.example:21116", 0), NodeRow("b", "b", 30)], 1, 130)
        self.assertEqual(died, ["b"])

    def test_list_and_serial(self) -> None:
        """This node first, each address once; the serial starts above 3 and grows."""
        m = Membership("b", base_serial=0)
        m.update([NodeRow("a", "x:1", 0), NodeRow("b", "y:2", 0), NodeRow("c", "x:1", 0)], 1, 0)
        self.assertEqual(m.rendezvous_servers(), ["y:2", "x:1"])
        self.assertEqual(m.serial, MIN_SERIAL + 1)
        m.update([], 3, 1)
        self.assertEqual(m.serial, MIN_SERIAL + 3)
        m.update([], 2, 2)
        self.assertEqual(m.serial, MIN_SERIAL + 3, "never goes back")
        self.assertEqual(Membership("a", base_serial=50).serial, 50)

    def test_presence(self) -> None:
        p = Presence("a")
        self.assertTrue(p.arrived("h1", "b"))
        self.assertFalse(p.arrived("h1", "b"))
        p.renamed("h1", "h2")
        self.assertEqual((p.node_of("h1"), p.node_of("h2")), (None, "b"))
        p.load([("h3", "c")])
        self.assertEqual(p.node_of("h3"), "c")


class AdvertiseTests(SynchronousTestCase):
    def test_advertised_address(self) -> None:
        """--advertise wins; else the public host, with the port unless it is 21116."""
        self.assertEqual(
            advertised({"advertise": "id-a.example:9"}, "srv", 21116), "id-a.example:9"
        )
        self.assertEqual(advertised({"advertise": None}, "srv.example", 21116), "srv.example")
        self.assertEqual(advertised({"advertise": None}, "srv.example", 31116), "srv.example:31116")


class Sink:
    def __init__(self, addr: Address) -> None:
        self.addr = addr
        self.local: Address = ("127.0.0.1", 21116)
        self.sent: list[rz.RendezvousMessage] = []

    def send_message(self, msg: rz.RendezvousMessage) -> None:
        self.sent.append(msg)


class Link:
    """The cluster as the rendezvous server sees it, recording what it is asked."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, Address, rz.RendezvousMessage]] = []
        self.where: dict[str, str] = {}

    def locate(self, peer_id: str, now: float) -> str | None:
        return self.where.get(peer_id)

    def locate_online(self, peer_id: str, now: float) -> bool:
        return peer_id in self.where

    def forward(self, node: str, viewer: ReplySink, message: rz.RendezvousMessage) -> bool:
        return True

    def answer(self, origin: str, viewer: Address, message: rz.RendezvousMessage) -> None:
        self.answers.append((origin, viewer, message))


class ForwardedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.server = RendezvousServer(
            clock=self.clock, registry=Registry(), key=ServerKey("", None), relays=RelayList([])
        )
        self.link = Link()
        self.server.cluster = self.link

    def forward(self, n: int, peer_id: str = "412000001") -> None:
        req = rz.RendezvousMessage(punch_hole_request=rz.PunchHoleRequest(id=peer_id))
        self.server.handle_forwarded(
            "b", ("198.51.100.1", n), ("192.0.2.1", 21116), False, req.SerializeToString()
        )

    def test_unknown_host_answered_back_to_the_origin(self) -> None:
        """A forwarded request for an id this node does not know: ID_NOT_EXIST goes back."""
        self.forward(1)
        ((origin, viewer, msg),) = self.link.answers
        self.assertEqual((origin, viewer), ("b", ("198.51.100.1", 1)))
        self.assertEqual(msg.punch_hole_response.failure, rz.PunchHoleResponse.ID_NOT_EXIST)

    def test_forwarded_request_is_never_forwarded_again(self) -> None:
        """Even if this node's presence says another node: answered here."""
        self.link.where["412000001"] = "c"
        self.forward(1)
        self.assertEqual(self.server.counters["cluster_forwarded_out"], 0)
        self.assertEqual(len(self.link.answers), 1)

    def test_waiting_forwarded_requests_are_bounded(self) -> None:
        """A flood of forwarded requests holds at most MAX_REMOTE, none past REMOTE_WAIT."""
        self.patch(forwarded, "MAX_REMOTE", 50)
        for n in range(500):
            self.forward(n)
        self.assertLessEqual(self.server.remote_waiting(), 50)
        self.assertLessEqual(self.server.parked_count(), 50)
        self.clock.advance(forwarded.REMOTE_WAIT + 1)
        self.forward(9999)
        self.assertEqual(self.server.remote_waiting(), 1)
        self.assertEqual(self.server.parked_count(), 1)

    def test_bad_messages_counted_and_dropped(self) -> None:
        """Not protobuf, or not a request: counted, nothing parked, nothing sent."""
        for data in (
            b"\xff\xff\xff",
            rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="x")).SerializeToString(),
        ):
            self.server.handle_forwarded("b", ("198.51.100.1", 1), ("192.0.2.1", 1), False, data)
            self.server.deliver_forwarded(("198.51.100.1", 1), data)
        self.assertEqual(self.server.counters["cluster_bad_messages"], 4)
        self.assertEqual((self.server.parked_count(), self.link.answers), (0, []))

    def test_answer_delivered_to_the_parked_viewer(self) -> None:
        """On the origin: a host's answer from another node reaches the viewer, once."""
        viewer = Sink(("198.51.100.7", 5000))
        self.server._parked[viewer.addr] = viewer
        resp = rz.RendezvousMessage(
            punch_hole_response=rz.PunchHoleResponse(socket_addr=b"\x01" * 6, relay_server="r")
        )
        self.server.deliver_forwarded(viewer.addr, resp.SerializeToString())
        self.server.deliver_forwarded(viewer.addr, resp.SerializeToString())
        self.assertEqual(viewer.sent, [resp])
