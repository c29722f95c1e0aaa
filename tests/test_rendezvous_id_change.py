"""ID change: RegisterPk{old_id, id, uuid} on port P (docs/protocol.rst §5.11).

The rules (L{Registry.change_id}) sans-IO, with hypothesis for the id form and for
sequences of registrations and renames; the store's rename on a real SQLite file; the
controller's answers byte for byte over StringTransport; and end to end against a real
C{twistd litedesk-relay}: a stock client's change (L{tests.support.stream_host.change_id}),
with the text it would show for each answer, surviving a restart of the server.
"""

from __future__ import annotations

import base64
import itertools
import socket
import sqlite3
import string
from pathlib import Path
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.protocols import RendezvousStreamFactory, RendezvousStreamProtocol
from litedesk.rendezvous.registry import (
    RENAME_COUNT,
    RENAME_WINDOW,
    PunchTarget,
    Registry,
    valid_custom_id,
)
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.server import RendezvousServer
from litedesk.rendezvous.store import PeerRecord, PeerStore
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.keys import ServerKey, public_b64, secret_b64

from .support import rustdesk_rendezvous as viewer
from .support.polling import wait_until
from .support.ports import free_port_pair
from .support.processes import RelayProcess, udp_exchange
from .support.stream_host import (
    INVALID_FORMAT,
    UNKNOWN_ERROR,
    StreamHost,
    change_id,
    is_valid_custom_id,
)

Result = rz.RegisterPkResponse.Result
UUID = b"0123456789abcdef0123456789abcdef"
PK = bytes([7]) * 32
OLD = "123456789"
NEW = "alice-pc1"
IP = ("198.51.100.7", 40000)
OTHER_IP = ("203.0.113.9", 40000)


def registered(*ids: str, source: tuple[str, int] = IP) -> Registry:
    reg = Registry()
    for i, peer_id in enumerate(ids):
        uuid = UUID if i == 0 else b"uuid-%d" % i
        assert reg.register_pk(peer_id, uuid, PK, source, 0.0).result == Result.OK
    return reg


class RuleTests(SynchronousTestCase):
    def test_rename(self) -> None:
        """The peer moves to the new id with its key, uuid, guid and online state; the old
        id no longer exists; the save renames the stored row."""
        reg = registered(OLD)
        peer = reg.get(OLD)
        assert peer is not None
        peer.guid = b"g" * 16
        out = reg.change_id(OLD, NEW, UUID, IP, 1.0)
        self.assertEqual((out.result, out.reason), (Result.OK, f"renamed from {OLD}"))
        self.assertEqual(out.persist, PeerRecord(b"g" * 16, NEW, UUID, PK, IP[0], OLD))
        self.assertIsNone(reg.get(OLD))
        self.assertIs(reg.get(NEW), peer)
        self.assertEqual(peer.id, NEW)
        self.assertEqual(reg.punch_target(NEW, 2.0)[0], PunchTarget.ONLINE)
        self.assertEqual(reg.punch_target(OLD, 2.0)[0], PunchTarget.ID_NOT_EXIST)
        self.assertEqual(len(reg), 1)

    def test_refusals(self) -> None:
        """Each refusal with its answer: the new id's form, no uuid, an unknown old id, a
        foreign uuid, another site, a taken id."""
        reg = registered(OLD, "bob-pc01")
        cases = [
            (OLD, "12345678", UUID, IP, Result.INVALID_ID_FORMAT),
            (OLD, "abcde", UUID, IP, Result.INVALID_ID_FORMAT),
            (OLD, "a" * 17, UUID, IP, Result.INVALID_ID_FORMAT),
            (OLD, "Bürofix1", UUID, IP, Result.INVALID_ID_FORMAT),
            (OLD, "alice pc", UUID, IP, Result.INVALID_ID_FORMAT),
            (OLD, "alicepc\n", UUID, IP, Result.INVALID_ID_FORMAT),
            (OLD, NEW, b"", IP, Result.UUID_MISMATCH),
            ("999999999", NEW, UUID, IP, Result.UUID_MISMATCH),
            (OLD, NEW, b"someone-else", IP, Result.UUID_MISMATCH),
            (OLD, NEW, UUID, OTHER_IP, Result.UUID_MISMATCH),
            (OLD, "bob-pc01", UUID, IP, Result.ID_EXISTS),
        ]
        for old, new, uuid, source, expected in cases:
            out = reg.change_id(old, new, uuid, source, 1.0)
            self.assertEqual(out.result, expected, (old, new, uuid, source, out.reason))
            self.assertIsNone(out.persist)
        self.assertIsNotNone(reg.get(OLD))

    def test_same_id_changes_nothing(self) -> None:
        """Asking for the id the device already has is OK, with nothing to store."""
        reg = registered("alice-pc1")
        out = reg.change_id("alice-pc1", "alice-pc1", UUID, IP, 1.0)
        self.assertEqual((out.result, out.persist), (Result.OK, None))

    def test_three_changes_an_hour(self) -> None:
        """A device's 4th change within the hour is TOO_FREQUENT; an hour later it works."""
        reg = registered(OLD)
        names = [OLD, "alpha-01", "bravo-02", "charlie3"]
        for old, new in itertools.pairwise(names):
            self.assertEqual(reg.change_id(old, new, UUID, IP, 10.0).result, Result.OK)
        self.assertEqual(RENAME_COUNT, 3)
        out = reg.change_id("charlie3", "delta-04", UUID, IP, 20.0)
        self.assertEqual(out.result, Result.TOO_FREQUENT)
        out = reg.change_id("charlie3", "delta-04", UUID, IP, 10.0 + RENAME_WINDOW)
        self.assertEqual(out.result, Result.OK)

    def test_per_ip_limit(self) -> None:
        """Changes count towards the per-IP RegisterPk limit: the 33rd within a minute is
        TOO_FREQUENT before anything else is looked at."""
        reg = Registry()
        results = [reg.change_id(OLD, f"name-{i:03d}", UUID, IP, 1.0).result for i in range(33)]
        self.assertEqual(results[:32], [Result.UUID_MISMATCH] * 32)
        self.assertEqual(results[32], Result.TOO_FREQUENT)

    def test_site(self) -> None:
        """Another address of the device's IPv6 /64 counts as the device (privacy
        addresses rotate); another /64 does not; a peer without a stored IP (an hbbs row
        with an unreadable info) is proven by its live address."""
        reg = registered(OLD, source=("2001:db8:1:2::10", 5000))
        out = reg.change_id(OLD, NEW, UUID, ("2001:db8:1:2:aaaa::1", 6000), 1.0)
        self.assertEqual(out.result, Result.OK)
        out = reg.change_id(NEW, "alice-pc2", UUID, ("2001:db8:1:3::10", 6000), 1.0)
        self.assertEqual(out.result, Result.UUID_MISMATCH)

        reg = Registry()
        reg.load([PeerRecord(b"g" * 16, OLD, UUID, PK, "")])
        self.assertEqual(reg.change_id(OLD, NEW, UUID, IP, 1.0).result, Result.UUID_MISMATCH)
        reg.register_peer(OLD, 3, IP, 2.0)  # asks for the key: not online yet
        reg.register_pk(OLD, UUID, PK, IP, 3.0)
        self.assertEqual(reg.change_id(OLD, NEW, UUID, IP, 4.0).result, Result.OK)

    def test_undo(self) -> None:
        """A rename that could not be stored is taken back, unless either id moved on."""
        reg = registered(OLD)
        reg.change_id(OLD, NEW, UUID, IP, 1.0)
        peer = reg.get(NEW)
        assert peer is not None
        self.assertTrue(reg.undo_change_id(peer, OLD))
        self.assertIs(reg.get(OLD), peer)
        self.assertIsNone(reg.get(NEW))
        reg.change_id(OLD, NEW, UUID, IP, 1.0)
        reg.register_pk(OLD, b"newcomer", PK, OTHER_IP, 2.0)
        self.assertFalse(reg.undo_change_id(peer, OLD))
        self.assertIs(reg.get(NEW), peer)

    def test_udp_old_id_is_no_rename(self) -> None:
        """Over UDP, old_id is ignored as by hbbs: a change request (no key) gets no answer
        and renames nothing."""
        server, udp = make_server(Clock())
        server.registry.register_pk(OLD, UUID, PK, IP, 0.0)
        req = rz.RegisterPk(old_id=OLD, id=NEW, uuid=UUID)
        server.handle_datagram(rz.RendezvousMessage(register_pk=req).SerializeToString(), IP)
        self.assertEqual(udp.sent, [])
        self.assertIsNotNone(server.registry.get(OLD))
        self.assertIsNone(server.registry.get(NEW))


ASCII_ID_CHARS = string.ascii_letters + string.digits + "_-"


class HypothesisTests(SynchronousTestCase):
    @settings(max_examples=500)
    @given(
        st.one_of(
            st.text(max_size=20),
            st.text(alphabet=ASCII_ID_CHARS + "é. \n", min_size=4, max_size=18),
        )
    )
    def test_id_form(self, text: str) -> None:
        """The server's form is exactly "6-16 ASCII letters, digits, _ or -, a letter
        first", and every id it takes is one a stock client would ask for."""
        expected = (
            6 <= len(text) <= 16
            and text[0] in string.ascii_letters
            and all(c in ASCII_ID_CHARS for c in text)
        )
        self.assertEqual(valid_custom_id(text), expected)
        if valid_custom_id(text):
            self.assertTrue(is_valid_custom_id(text))

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["register", "rename", "undo"]),
                st.sampled_from(["123456789", "alpha-01", "bravo-02", "charlie3", "x"]),
                st.sampled_from(["123456789", "alpha-01", "bravo-02", "charlie3", "x"]),
                st.sampled_from([UUID, b"other"]),
                st.sampled_from([IP, OTHER_IP]),
            ),
            max_size=30,
        )
    )
    def test_registry_stays_consistent(self, ops: list[tuple[str, str, str, bytes, Any]]) -> None:
        """Registrations, renames and undos in any order: every id names the peer that
        carries it, no peer is lost or doubled, and a rename is OK only to a free id."""
        reg = Registry()
        reg.ip_blocker.allow = lambda ip, peer_id, now: True  # type: ignore[method-assign]
        now = 0.0
        for op, a, b, uuid, source in ops:
            now += 1.0
            before = {p.id: p for p in reg}
            if op == "register":
                reg.register_pk(a, uuid, PK, source, now)
            elif op == "rename":
                out = reg.change_id(a, b, uuid, source, now)
                if out.result == Result.OK and a != b:
                    self.assertNotIn(b, before)
                    self.assertIs(reg.get(b), before[a])
                    self.assertIsNone(reg.get(a))
                    self.assertEqual(len(reg), len(before))
            else:
                peer = reg.get(b)
                if peer is not None:
                    reg.undo_change_id(peer, a)
            ids = [p.id for p in reg]
            self.assertEqual(len(ids), len(set(ids)))
            for p in reg:
                self.assertIs(reg.get(p.id), p)


class StoreTests(TestCase):
    def open(self) -> tuple[PeerStore, Path]:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        path = directory / "db_v2.sqlite3"
        store = PeerStore(path, IReactorFromThreads(reactor))
        self.addCleanup(store.close)
        return store, path

    @staticmethod
    def rows(path: Path) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT guid, id, uuid, pk FROM peer ORDER BY id").fetchall()
        finally:
            conn.close()

    async def test_rename_keeps_the_row(self) -> None:
        """The row stored under the old id takes the new one and keeps its guid and uuid;
        a restart loads the new id."""
        store, path = self.open()
        guid = await store.save(PeerRecord(None, OLD, UUID, PK, "192.0.2.1"))
        renamed = PeerRecord(guid, NEW, b"ignored", PK, "192.0.2.1", renamed_from=OLD)
        self.assertEqual(await store.save(renamed), guid)
        self.assertEqual(self.rows(path), [(guid, NEW, UUID, PK)])
        self.assertEqual(store.load_all(), [PeerRecord(guid, NEW, UUID, PK, "192.0.2.1")])

    async def test_rename_right_behind_the_first_save(self) -> None:
        """A rename queued before the peer's first save has returned its guid still renames
        that row (it is found by id)."""
        store, path = self.open()
        first = store.save(PeerRecord(None, OLD, UUID, PK, "192.0.2.1"))
        second = store.save(PeerRecord(None, NEW, UUID, PK, "192.0.2.1", renamed_from=OLD))
        guid = await first
        self.assertEqual(await second, guid)
        self.assertEqual(self.rows(path), [(guid, NEW, UUID, PK)])

    async def test_rename_onto_a_stored_id_fails(self) -> None:
        """A row already holding the new id (written behind the server's back) fails the
        save; the old row is untouched."""
        store, path = self.open()
        g1 = await store.save(PeerRecord(None, OLD, UUID, PK, "192.0.2.1"))
        g2 = await store.save(PeerRecord(None, NEW, b"other", PK, "192.0.2.2"))
        with self.assertRaises(sqlite3.IntegrityError):
            await store.save(PeerRecord(g1, NEW, UUID, PK, "192.0.2.1", renamed_from=OLD))
        self.assertEqual(
            sorted(self.rows(path)), sorted([(g1, OLD, UUID, PK), (g2, NEW, b"other", PK)])
        )
        self.flushLoggedErrors(sqlite3.IntegrityError)

    async def test_rename_without_a_stored_row_stores_the_new_id(self) -> None:
        """A peer whose old id never reached the disk is stored under the new id."""
        store, path = self.open()
        guid = await store.save(PeerRecord(None, NEW, UUID, PK, "192.0.2.1", renamed_from=OLD))
        self.assertEqual(self.rows(path), [(guid, NEW, UUID, PK)])


# --- the controller: answers on the wire --------------------------------------------------

KEY = SigningKey(bytes(range(32)))


class Datagrams:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


class ManualStore:
    def __init__(self, failing: bool = False) -> None:
        self.failing = failing
        self.saves: list[tuple[PeerRecord, Deferred[bytes]]] = []

    def save(self, record: PeerRecord) -> Deferred[bytes]:
        if self.failing:
            return fail(sqlite3.OperationalError("disk I/O error"))
        d: Deferred[bytes] = Deferred()
        self.saves.append((record, d))
        return d


def make_server(clock: Clock, store: Any = None) -> tuple[RendezvousServer, Datagrams]:
    server = RendezvousServer(
        clock=clock,
        registry=Registry(),
        key=ServerKey(public_b64(KEY), KEY),
        relays=RelayList([]),
        store=store,
    )
    udp = Datagrams()
    server.udp = udp
    return server, udp


class Wire:
    """One connection to port P's protocol on a StringTransport."""

    def __init__(self, server: RendezvousServer, clock: Clock, ip: str, port: int) -> None:
        factory = RendezvousStreamFactory(
            server, RendezvousStreamProtocol, clock=clock, key_exchange_wait=None
        )
        self.proto = cast(RendezvousStreamProtocol, factory.buildProtocol(None))
        peer = IPv6Address("TCP", ip, port) if ":" in ip else IPv4Address("TCP", ip, port)
        self.transport = StringTransport(peerAddress=peer)
        self.proto.makeConnection(self.transport)
        self.decoder = FrameDecoder()

    def send(self, msg: Any) -> None:
        self.proto.dataReceived(encode_frame(rz.RendezvousMessage(**msg).SerializeToString()))

    def answers(self) -> list[str]:
        data = self.transport.value()
        self.transport.clear()
        return [p.hex() for p in self.decoder.feed(data)]

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)


def change(old_id: str, new_id: str, uuid: bytes = UUID) -> dict[str, Any]:
    return {"register_pk": rz.RegisterPk(old_id=old_id, id=new_id, uuid=uuid)}


class ControllerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_answers_byte_for_byte(self) -> None:
        """OK 820100, INVALID_ID_FORMAT 8201020805, UUID_MISMATCH 8201020802, ID_EXISTS
        8201020803, TOO_FREQUENT 8201020804; a refused request's connection is closed after
        its answer."""
        server, _ = make_server(self.clock)
        reg = server.registry
        reg.register_pk(OLD, UUID, PK, IP, 0.0)
        reg.register_pk("bob-pc01", b"bob", PK, OTHER_IP, 0.0)
        cases = [
            (change(OLD, "1abcdefg"), "8201020805"),
            (change(OLD, NEW, b"wrong"), "8201020802"),
            (change(OLD, "bob-pc01"), "8201020803"),
            (change(OLD, NEW), "820100"),
        ]
        for msg, expected in cases:
            wire = Wire(server, self.clock, IP[0], 1000)
            wire.send(msg)
            self.assertEqual(wire.answers(), [expected])
            self.assertTrue(wire.closing)
        names = [NEW, "alpha-01", "bravo-02"]
        for old, new in itertools.pairwise(names):
            Wire(server, self.clock, IP[0], 1000).send(change(old, new))
        wire = Wire(server, self.clock, IP[0], 1000)
        wire.send(change("bravo-02", "charlie3"))
        self.assertEqual(wire.answers(), ["8201020804"])
        self.assertEqual(server.counters["id_changes"], 3)
        self.assertEqual(server.counters["id_changes_refused"], 4)

    def test_ok_waits_for_the_disk(self) -> None:
        """OK goes out once the renamed row is stored, on the connection kept open for it."""
        store = ManualStore()
        server, _ = make_server(self.clock, store)
        server.registry.register_pk(OLD, UUID, PK, IP, 0.0)
        wire = Wire(server, self.clock, IP[0], 1000)
        wire.send(change(OLD, NEW))
        self.assertEqual(wire.answers(), [])
        self.assertFalse(wire.closing)
        ((record, d),) = store.saves
        self.assertEqual((record.id, record.renamed_from), (NEW, OLD))
        d.callback(b"g" * 16)
        self.assertEqual(wire.answers(), ["820100"])
        self.assertEqual(server.registry.get(NEW).guid, b"g" * 16)  # type: ignore[union-attr]

    def test_failed_write_undoes_the_rename(self) -> None:
        """A rename the store cannot write is answered SERVER_ERROR (8201020807) and the
        device keeps its old id."""
        server, _ = make_server(self.clock, ManualStore(failing=True))
        server.registry.register_pk(OLD, UUID, PK, IP, 0.0)
        wire = Wire(server, self.clock, IP[0], 1000)
        wire.send(change(OLD, NEW))
        self.assertEqual(wire.answers(), ["8201020807"])
        self.assertIsNotNone(server.registry.get(OLD))
        self.assertIsNone(server.registry.get(NEW))
        self.flushLoggedErrors(sqlite3.OperationalError)

    def test_renamed_stream_host_keeps_its_stream(self) -> None:
        """A host registered on a stream keeps it through the change: a punch request for
        the new id goes there, the old id is unknown."""
        server, _ = make_server(self.clock)
        host = Wire(server, self.clock, IP[0], 2000)
        host.send({"register_pk": rz.RegisterPk(id=OLD, uuid=UUID, pk=PK)})
        host.answers()
        Wire(server, self.clock, IP[0], 3000).send(change(OLD, NEW))
        v = Wire(server, self.clock, OTHER_IP[0], 4000)
        v.send({"punch_hole_request": rz.PunchHoleRequest(id=NEW, licence_key=public_b64(KEY))})
        (push,) = host.answers()
        self.assertTrue(push.startswith("4a"))  # PunchHole, field 9
        v = Wire(server, self.clock, OTHER_IP[0], 4001)
        v.send({"punch_hole_request": rz.PunchHoleRequest(id=OLD, licence_key=public_b64(KEY))})
        self.assertEqual(v.answers(), ["5a00"])  # ID_NOT_EXIST


# --- end to end ------------------------------------------------------------------------------

SERVER_SEED = bytes(range(32))
SERVER_KEY = base64.b64encode(bytes(SigningKey(SERVER_SEED).verify_key)).decode()


class EndToEndTests(SynchronousTestCase):
    """A real server; the device registers from 127.0.0.2 and asks from there too."""

    def setUp(self) -> None:
        self.port = free_port_pair()
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        self.server = f"127.0.0.1:{self.port}"
        self.relay = self.start()

    def start(self) -> RelayProcess:
        relay = RelayProcess(
            self.data_dir,
            self.port,
            Path(self.mktemp()),
            "--key",
            secret_b64(SigningKey(SERVER_SEED)),
        )
        self.addCleanup(relay.stop)
        return relay

    def udp_register(self, peer_id: str, uuid: bytes, source: str) -> int:
        msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=peer_id, uuid=uuid, pk=PK))
        answer = rz.RendezvousMessage()
        answer.ParseFromString(udp_exchange(msg.SerializeToString(), self.port, source))
        return int(answer.register_pk_response.result)

    def rows(self) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.data_dir / "db_v2.sqlite3")
        try:
            return conn.execute("SELECT guid, id, uuid FROM peer ORDER BY id").fetchall()
        finally:
            conn.close()

    def test_change_survives_a_restart(self) -> None:
        """A TCP-mode host changes its id: the old id is gone at once and after a restart
        of the server; the new id is stored with the same guid and uuid, so the host's
        registration under it is OK after the restart and a client reaches it by punch."""
        host = StreamHost(self.server, OLD, UUID, PK, key=SERVER_KEY, bind="127.0.0.2")
        self.addCleanup(host.stop)
        host.start()
        self.assertTrue(host.confirmed.wait(20), host.ended)
        ((guid, _, _),) = wait_until(self.rows, 10, message="the host's row")

        self.assertEqual(change_id(self.server, OLD, NEW, UUID, bind="127.0.0.2"), "")
        host.set_id(NEW)
        with self.assertRaisesRegex(viewer.RendezvousFailure, "ID does not exist"):
            viewer.punch_hole_request(self.server, SERVER_KEY, OLD, waits=(3.0,))
        self.assertEqual(self.rows(), [(guid, NEW, UUID)])

        self.relay.stop()
        self.relay = self.start()
        self.assertEqual(self.rows(), [(guid, NEW, UUID)])
        with self.assertRaisesRegex(viewer.RendezvousFailure, "ID does not exist"):
            viewer.punch_hole_request(self.server, SERVER_KEY, OLD, waits=(3.0,))
        wait_until(lambda: host.streams >= 2 and host.confirmed.is_set(), 30, message="back")
        self.assertNotIn(Result.UUID_MISMATCH, host.results)
        self.assertEqual(host.peer_id, NEW)
        answer = viewer.punch_hole_request(self.server, SERVER_KEY, NEW)
        self.assertEqual((answer.kind, answer.host_pk), ("punch", PK))
        self.assertEqual(self.rows(), [(guid, NEW, UUID)])

    test_change_survives_a_restart.timeout = 90  # type: ignore[attr-defined]

    def test_refusals_as_the_client_shows_them(self) -> None:
        """What a stock client shows for each refusal: another device's uuid or another
        address "Unknown error" (UUID_MISMATCH), a taken id "Not available", an id with a
        non-ASCII letter "Invalid format" (the client lets it through, the server does
        not), a 4th change within the hour "Too frequent"; the device keeps its id
        throughout the refusals."""
        self.assertEqual(self.udp_register(OLD, UUID, "127.0.0.2"), Result.OK)
        self.assertEqual(self.udp_register("bob-pc01", b"bob", "127.0.0.3"), Result.OK)
        ask = lambda old, new, uuid=UUID, bind="127.0.0.2": change_id(  # noqa: E731
            self.server, old, new, uuid, bind=bind
        )
        self.assertEqual(ask(OLD, NEW, b"someone-else"), UNKNOWN_ERROR)
        self.assertEqual(ask(OLD, NEW, bind="127.0.0.4"), UNKNOWN_ERROR)
        self.assertEqual(ask(OLD, "bob-pc01"), "Not available")
        self.assertTrue(is_valid_custom_id("Bürofix1"))
        self.assertEqual(ask(OLD, "Bürofix1"), INVALID_FORMAT)
        self.assertEqual(ask(OLD, "12345678"), INVALID_FORMAT)  # the client's own check
        self.assertEqual(self.udp_register(OLD, UUID, "127.0.0.2"), Result.OK)
        names = [OLD, "alpha-01", "bravo-02", "charlie3"]
        for old, new in itertools.pairwise(names):
            self.assertEqual(ask(old, new), "")
        self.assertEqual(ask("charlie3", "delta-04"), "Too frequent")
        with self.assertRaisesRegex(viewer.RendezvousFailure, "ID does not exist"):
            viewer.punch_hole_request(self.server, SERVER_KEY, "bravo-02", waits=(3.0,))
        self.assertEqual([r[1] for r in self.rows()], ["bob-pc01", "charlie3"])

    def test_request_without_answer_is_bounded(self) -> None:
        """A change request's connection is closed once answered by the server's read
        deadline at the latest; garbage instead of an answer never kills the listener."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(encode_frame(b"\xff\xff\xff"))
            self.assertEqual(s.recv(10), b"")
        self.assertEqual(self.udp_register(OLD, UUID, "127.0.0.2"), Result.OK)
        self.assertEqual(change_id(self.server, OLD, NEW, UUID, bind="127.0.0.2"), "")
