"""Two real C{twistd litedesk-relay --cluster} nodes sharing one PostgreSQL database.

On loopback (the namespace lab with a node killed is tests/test_cluster_lab.py):

- a viewer asking node B reaches a host registered on node A: B forwards
  the punch request to A, A pushes it to the host, the host answers A and
  the viewer gets the answer from B; the same for a relay request;
- node B answers for ids registered on A as A does (a RegisterPk with
  another uuid is refused), because A's committed rows reach B;
- a host that moves from A to B is served by B, and a viewer on A is
  forwarded there;
- clients get every node in ConfigUpdate, with a serial above 3;
- OnlineRequest on either node says a host on the other is online.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire import addrmangle
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from tests.support.ports import free_port_pair
from tests.support.postgres import fresh_database
from tests.support.processes import RelayProcess, recv_frame

HOST_IP = "127.0.0.2"
VIEWER_IP = "127.0.0.1"


def _message(data: bytes) -> rz.RendezvousMessage:
    msg = rz.RendezvousMessage()
    msg.ParseFromString(data)
    return msg


class FakeHost:
    """A host's UDP registration socket, as RustDesk's host keeps one."""

    def __init__(self, peer_id: str, uuid: bytes = b"host-uuid-000001") -> None:
        self.peer_id = peer_id
        self.uuid = uuid
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST_IP, 0))
        self.sock.settimeout(5.0)

    def close(self) -> None:
        self.sock.close()

    def exchange(self, port: int, msg: rz.RendezvousMessage) -> rz.RendezvousMessage:
        self.sock.sendto(msg.SerializeToString(), ("127.0.0.1", port))
        return self.receive()

    def receive(self, kind: str | None = None) -> rz.RendezvousMessage:
        deadline = time.monotonic() + 10
        while True:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            msg = _message(self.sock.recv(65536))
            if kind is None or msg.WhichOneof("union") == kind:
                return msg

    def register(self, port: int) -> None:
        """RegisterPk, then a heartbeat: the host is online on that node."""
        pk = rz.RegisterPk(id=self.peer_id, uuid=self.uuid, pk=bytes([7]) * 32)
        reply = self.exchange(port, rz.RendezvousMessage(register_pk=pk))
        assert reply.register_pk_response.result == rz.RegisterPkResponse.OK, reply
        beat = rz.RegisterPeer(id=self.peer_id, serial=0)
        self.exchange(port, rz.RendezvousMessage(register_peer=beat))


def tcp_request(
    port: int, msg: rz.RendezvousMessage, source: str = VIEWER_IP
) -> tuple[socket.socket, FrameDecoder]:
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    s.sendall(encode_frame(msg.SerializeToString()))
    return s, FrameDecoder()


def answer(s: socket.socket, decoder: FrameDecoder) -> rz.RendezvousMessage:
    while True:
        msg = _message(recv_frame(s, decoder))
        if msg.WhichOneof("union") != "key_exchange":
            return msg


def online(port: int, peer_ids: list[str]) -> bytes:
    """OnlineRequest on a node's NAT-test port (P-1): one bit per id."""
    req = rz.OnlineRequest(id="viewer", peers=peer_ids)
    s, dec = tcp_request(port - 1, rz.RendezvousMessage(online_request=req))
    with s:
        return answer(s, dec).online_response.states


def wait_online(port: int, peer_id: str) -> None:
    """Until the node at C{port} knows where C{peer_id} is (an arrival takes a commit)."""
    deadline = time.monotonic() + 10
    while online(port, [peer_id]) != bytes([0x80]):
        if time.monotonic() > deadline:
            raise AssertionError(f"{peer_id} never shown online on the node at {port}")
        time.sleep(0.05)


class ClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)
        self.dirs = {n: Path(self.mktemp()) for n in "ab"}
        self.ports = {"a": free_port_pair()}
        while abs((b := free_port_pair()) - self.ports["a"]) < 8:
            pass
        self.ports["b"] = b
        self.logs = {n: Path(self.mktemp()) for n in "ab"}
        self.nodes: dict[str, RelayProcess] = {}

    def start(self, name: str) -> RelayProcess:
        if name != "a":
            # Every node has the cluster's one key pair.
            self.dirs[name].mkdir(parents=True, exist_ok=True)
            for f in ("id_ed25519", "id_ed25519.pub"):
                shutil.copy2(self.dirs["a"] / f, self.dirs[name] / f)
        node = RelayProcess(
            self.dirs[name],
            self.ports[name],
            self.logs[name],
            "--key",
            "-",
            "--no-websocket",
            "--database",
            self.url,
            "--cluster",
            "--node-id",
            name,
            "--advertise",
            f"127.0.0.1:{self.ports[name]}",
        )
        self.addCleanup(node.stop)
        self.nodes[name] = node
        return node

    def assertStoredForTheHost(self, peer_id: str) -> None:
        """The database row of C{peer_id} is the real host's (FakeHost's defaults)."""
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT uuid, pk FROM peer WHERE id = %s", (peer_id,)).fetchone()
        self.assertEqual(row, (b"host-uuid-000001", bytes([7]) * 32))

    def host(self, peer_id: str) -> FakeHost:
        h = FakeHost(peer_id)
        self.addCleanup(h.close)
        return h

    def key(self) -> str:
        return (self.dirs["a"] / "id_ed25519.pub").read_text().strip()

    def both(self) -> None:
        self.start("a")
        self.start("b")

    def test_punch_request_forwarded_to_the_hosts_node(self) -> None:
        """A viewer on B gets the answer of a host registered on A."""
        self.both()
        host = self.host("412000001")
        host.register(self.ports["a"])
        wait_online(self.ports["b"], host.peer_id)
        req = rz.PunchHoleRequest(id=host.peer_id, licence_key=self.key(), nat_type=rz.ASYMMETRIC)
        viewer, dec = tcp_request(self.ports["b"], rz.RendezvousMessage(punch_hole_request=req))
        self.addCleanup(viewer.close)
        push = host.receive("punch_hole").punch_hole
        # The viewer's address as node B saw it: where the host must punch to.
        self.assertEqual(addrmangle.decode(push.socket_addr), viewer.getsockname())
        answer_conn, _ = tcp_request(
            self.ports["a"],
            rz.RendezvousMessage(
                punch_hole_sent=rz.PunchHoleSent(
                    socket_addr=push.socket_addr,
                    id=host.peer_id,
                    relay_server=push.relay_server,
                    nat_type=rz.ASYMMETRIC,
                    version="1.4.9",
                )
            ),
            source=HOST_IP,
        )
        self.addCleanup(answer_conn.close)
        resp = answer(viewer, dec).punch_hole_response
        self.assertEqual(addrmangle.decode(resp.socket_addr)[0], HOST_IP)
        self.assertTrue(resp.pk, "the signed id and key of the host")
        self.assertIn("forwarded to its cluster node", self.logs["b"].read_text())

    def http(self, name: str, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.ports[name] - 2}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_health_and_metrics(self) -> None:
        """/health probes PostgreSQL and the cluster listener and lists the live nodes;
        /metrics counts forwarded requests on both ends and the nodes alive."""
        self.both()
        host = self.host("412000007")
        host.register(self.ports["a"])
        wait_online(self.ports["b"], host.peer_id)
        req = rz.PunchHoleRequest(id=host.peer_id, licence_key=self.key())
        viewer, _ = tcp_request(self.ports["b"], rz.RendezvousMessage(punch_hole_request=req))
        self.addCleanup(viewer.close)
        host.receive("punch_hole")
        status, body = self.http("b", "/health")
        health = json.loads(body)
        self.assertEqual((status, health["database"], health["cluster"]), (200, True, True))
        self.assertEqual(health["cluster_nodes_alive"], ["a", "b"])
        metrics = {n: self.http(n, "/metrics")[1] for n in "ab"}
        self.assertIn("litedesk_cluster_forwarded_out_total 1.0", metrics["b"])
        self.assertIn("litedesk_cluster_forwarded_in_total 1.0", metrics["a"])
        self.assertIn("litedesk_cluster_bus_dropped_total 0.0", metrics["a"])
        # A reads the nodes' rows every 2 s: it sees B by its next read.
        deadline = time.monotonic() + 10
        while "litedesk_cluster_nodes_alive 2.0" not in metrics["a"]:
            self.assertLess(time.monotonic(), deadline, metrics["a"])
            time.sleep(0.2)
            metrics["a"] = self.http("a", "/metrics")[1]

    def test_relay_request_forwarded_to_the_hosts_node(self) -> None:
        """RequestRelay on B reaches the host on A; its RelayResponse reaches the viewer."""
        self.both()
        host = self.host("412000002")
        host.register(self.ports["a"])
        wait_online(self.ports["b"], host.peer_id)
        rr = rz.RequestRelay(id=host.peer_id, uuid="relay-uuid-1", licence_key=self.key())
        viewer, dec = tcp_request(self.ports["b"], rz.RendezvousMessage(request_relay=rr))
        self.addCleanup(viewer.close)
        push = host.receive("request_relay").request_relay
        self.assertEqual(push.uuid, "relay-uuid-1")
        conn, _ = tcp_request(
            self.ports["a"],
            rz.RendezvousMessage(
                relay_response=rz.RelayResponse(
                    socket_addr=push.socket_addr, uuid=push.uuid, version="1.4.9"
                )
            ),
            source=HOST_IP,
        )
        self.addCleanup(conn.close)
        got = answer(viewer, dec).relay_response
        self.assertEqual(got.uuid, "relay-uuid-1")

    def test_unknown_id_answered_as_on_one_node(self) -> None:
        """An id nobody registered: ID_NOT_EXIST from either node, nothing forwarded."""
        self.both()
        req = rz.PunchHoleRequest(id="499999999", licence_key=self.key())
        viewer, dec = tcp_request(self.ports["b"], rz.RendezvousMessage(punch_hole_request=req))
        self.addCleanup(viewer.close)
        self.assertEqual(
            answer(viewer, dec).punch_hole_response.failure,
            rz.PunchHoleResponse.ID_NOT_EXIST,
        )

    def test_rows_committed_on_one_node_bind_the_id_on_the_other(self) -> None:
        """An id registered on A is refused to another device on B (UUID_MISMATCH) at once:
        by B's registry once A's row reached it, by the database's row before that."""
        self.both()
        self.host("412000003").register(self.ports["a"])
        thief = FakeHost("412000003", uuid=b"another-device-1")
        self.addCleanup(thief.close)
        for _ in range(2):
            pk = rz.RegisterPk(id=thief.peer_id, uuid=thief.uuid, pk=bytes([9]) * 32)
            reply = thief.exchange(self.ports["b"], rz.RendezvousMessage(register_pk=pk))
            self.assertEqual(reply.register_pk_response.result, rz.RegisterPkResponse.UUID_MISMATCH)
        self.assertStoredForTheHost("412000003")

    def test_database_row_wins_over_a_node_that_has_not_heard(self) -> None:
        """A row another node committed, not yet heard of here (written straight into the
        database): a RegisterPk for its id from another device is refused with
        UUID_MISMATCH and the row is left as it was; the real device then registers."""
        self.start("a")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO peer (guid, id, uuid, pk, info) VALUES (%s, %s, %s, %s, %s)",
                (
                    b"g" * 16,
                    "412000008",
                    b"host-uuid-000001",
                    bytes([7]) * 32,
                    '{"ip":"127.0.0.2"}',
                ),
            )
        thief = FakeHost("412000008", uuid=b"another-device-1")
        self.addCleanup(thief.close)
        pk = rz.RegisterPk(id=thief.peer_id, uuid=thief.uuid, pk=bytes([9]) * 32)
        reply = thief.exchange(self.ports["a"], rz.RendezvousMessage(register_pk=pk))
        self.assertEqual(reply.register_pk_response.result, rz.RegisterPkResponse.UUID_MISMATCH)
        self.assertStoredForTheHost("412000008")
        self.assertIn("bound to another device by another cluster node", self.logs["a"].read_text())
        self.host("412000008").register(self.ports["a"])

    def test_host_moving_to_another_node_is_followed(self) -> None:
        """A host that re-registers on B is placed on B (a late notice of its arrival on A
        is settled by its next heartbeat on B) and B serves viewers for it."""
        self.both()
        host = self.host("412000004")
        host.register(self.ports["a"])
        wait_online(self.ports["b"], host.peer_id)
        host.register(self.ports["b"])
        beat = rz.RegisterPeer(id=host.peer_id, serial=0)
        host.exchange(self.ports["b"], rz.RendezvousMessage(register_peer=beat))
        with psycopg.connect(self.url) as conn:
            deadline = time.monotonic() + 10
            while True:
                row = conn.execute(
                    "SELECT node FROM litedesk_presence WHERE id = %s", (host.peer_id,)
                ).fetchone()
                if (row and row[0] == "b") or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        self.assertEqual(row, ("b",))
        req = rz.PunchHoleRequest(id=host.peer_id, licence_key=self.key())
        viewer, _ = tcp_request(self.ports["b"], rz.RendezvousMessage(punch_hole_request=req))
        self.addCleanup(viewer.close)
        host.receive("punch_hole")

    def test_clients_get_every_node(self) -> None:
        """ConfigUpdate (in the NAT test's TestNatResponse) lists both nodes, serial above 3."""
        self.both()
        want = {f"127.0.0.1:{self.ports[n]}" for n in "ab"}
        deadline = time.monotonic() + 15
        while True:
            req = rz.TestNatRequest(serial=3)
            s, dec = tcp_request(self.ports["a"], rz.RendezvousMessage(test_nat_request=req))
            with s:
                cu = answer(s, dec).test_nat_response.cu
            if set(cu.rendezvous_servers) == want or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        self.assertEqual(set(cu.rendezvous_servers), want)
        self.assertGreater(cu.serial, 3)

    def test_online_request_sees_hosts_on_other_nodes(self) -> None:
        """OnlineRequest on B's NAT-test port: a host on A is online, an unknown id not."""
        self.both()
        host = self.host("412000006")
        self.assertEqual(online(self.ports["b"], [host.peer_id, "400000000"]), bytes([0]))
        host.register(self.ports["a"])
        wait_online(self.ports["b"], host.peer_id)
        self.assertEqual(online(self.ports["b"], [host.peer_id, "400000000"]), bytes([0x80]))
