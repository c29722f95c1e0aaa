"""C{--event-log}: the JSON lines a real server writes for real traffic.

The server runs in-process on loopback; a relay pair, a punch request for an
unknown id and a refused registration go through its real listeners, then
the file is read back: one JSON object per line, source IPs under C{ip},
the relay uuid always blurred, peer ids blurred with C{--blur-ids}, the file
0600 and appended to across restarts.  Refusals too: a connection the relay
refuses (blocklist) and a host refused on a stream (--max-stream-hosts).
Sign-ins (written by the API and console) are checked on the sink itself:
user names are kept under --blur-ids (they are not peer ids) and cut.
"""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.ops.event_log import MAX_FIELD, EventLog
from litedesk.proto import rendezvous_pb2 as rz

from .rendezvous_harness import sleep, start_server, tcp_client, udp_client, with_timeout
from .test_ops_web import PK, relay_pair

UNKNOWN = "999888777"


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class ServerEventLogTests(TestCase):
    timeout = 60

    def start(self, *extra: str) -> tuple[Any, Path]:
        log = Path(self.mktemp())
        svc = start_server(Path(self.mktemp()), "--key", "", "--event-log", str(log), *extra)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc, log

    @inlineCallbacks
    def traffic(self, svc: Any) -> Any:
        """A relay pair, a punch request for an unknown id, a refused RegisterPk."""
        relay_port = (yield svc.relay.when_listening()).getHost().port
        yield deferToThread(relay_pair, relay_port, "event-log-pair", b"y" * 500)
        # The relay sees both legs close a moment after the client does.
        for _ in range(250):
            if svc.relay.relay.table.pairs_finished:
                break
            yield sleep(0.02)

        client = yield tcp_client(svc.rendezvous_tcp.listening.getHost().port)
        self.addCleanup(client.close)
        client.send_msg(rz.RendezvousMessage(punch_hole_request=rz.PunchHoleRequest(id=UNKNOWN)))
        reply = yield client.recv_msg()
        self.assertEqual(reply.punch_hole_response.failure, rz.PunchHoleResponse.ID_NOT_EXIST)

        udp = udp_client()
        assert udp.transport is not None
        self.addCleanup(udp.transport.stopListening)
        port = svc.rendezvous_udp.listening.getHost().port
        for uuid in (b"a" * 16, b"b" * 16):
            msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id="123456789", uuid=uuid, pk=PK))
            udp.send(msg.SerializeToString(), port)
            yield udp.recv()
        self.assertEqual(svc.server.counters["register_pk_refused"], 1)

    @inlineCallbacks
    def test_events_written(self) -> Any:
        svc, log = self.start()
        yield self.traffic(svc)
        self.assertEqual(stat.S_IMODE(log.stat().st_mode), 0o600)
        events = {e["event"]: e for e in read_events(log)}
        self.assertEqual(set(events), {"relay_pair_ended", "punch_request", "registration_refused"})
        pair = events["relay_pair_ended"]
        self.assertEqual((pair["ip_a"], pair["ip_b"]), ("127.0.0.1", "127.0.0.1"))
        self.assertEqual((pair["a_to_b"], pair["b_to_a"]), (500, 500))
        self.assertNotEqual(pair["uuid"], "event-log-pair")
        self.assertEqual(len(pair["uuid"]), 12)
        self.assertGreaterEqual(pair["duration"], 0)
        self.assertTrue(pair["outcome"])
        punch = events["punch_request"]
        self.assertEqual(
            {k: punch[k] for k in ("ip", "target_id", "result")},
            {"ip": "127.0.0.1", "target_id": UNKNOWN, "result": "id_not_exist"},
        )
        refused = events["registration_refused"]
        self.assertEqual((refused["ip"], refused["id"]), ("127.0.0.1", "123456789"))
        self.assertEqual(refused["reason"], "UUID_MISMATCH")

    @inlineCallbacks
    def test_blur_ids(self) -> Any:
        """--blur-ids: no peer id appears in the file, the same id blurs the same way."""
        svc, log = self.start("--blur-ids")
        yield self.traffic(svc)
        text = log.read_text()
        self.assertNotIn(UNKNOWN, text)
        self.assertNotIn("123456789", text)
        events = {e["event"]: e for e in read_events(log)}
        self.assertEqual(len(events["punch_request"]["target_id"]), 12)


def relay_closes_at_once(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.recv(1) == b""


class RefusalEventTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_relay_and_stream_refusals_written(self) -> Any:
        data_dir = Path(self.mktemp())
        data_dir.mkdir(mode=0o700)
        (data_dir / "blocklist.txt").write_text("127.0.0.1\n")
        log = Path(self.mktemp())
        svc = start_server(
            data_dir, "--key", "", "--event-log", str(log), "--max-stream-hosts", "1"
        )
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        relay_port = (yield svc.relay.when_listening()).getHost().port
        self.assertTrue((yield deferToThread(relay_closes_at_once, relay_port)))

        port = svc.rendezvous_tcp.listening.getHost().port
        results = []
        for peer_id in ("streamhost1", "streamhost2"):
            conn = yield tcp_client(port)
            self.addCleanup(conn.close)
            conn.send_msg(
                rz.RendezvousMessage(
                    register_pk=rz.RegisterPk(id=peer_id, uuid=peer_id.encode(), pk=PK)
                )
            )
            reply = yield with_timeout(conn.recv_msg())
            results.append(reply.register_pk_response.result)
        self.assertEqual(results, [rz.RegisterPkResponse.OK, rz.RegisterPkResponse.TOO_FREQUENT])
        events = read_events(log)
        self.assertIn(
            {"event": "relay_refused", "ip": "127.0.0.1", "reason": "blocklist"},
            [{k: e[k] for k in ("event", "ip", "reason")} for e in events],
        )
        (refused,) = [e for e in events if e["event"] == "registration_refused"]
        self.assertEqual((refused["ip"], refused["id"]), ("127.0.0.1", "streamhost2"))
        self.assertEqual(refused["reason"], "TOO_FREQUENT")
        self.assertIn("hosts registered over streams", refused["detail"])


class EventLogFileTests(SynchronousTestCase):
    def test_sign_in(self) -> None:
        """Both ways in, the outcome, the name kept under --blur-ids and cut to MAX_FIELD."""
        path = Path(self.mktemp())
        clock = Clock()
        clock.advance(1700000000)
        events = EventLog(str(path), clock, blur_ids=True)
        events.sign_in("192.0.2.7", "alice", "ok", "api")
        events.sign_in("2001:db8::7", "m" * 500, "bad_password", "console")
        events.close()
        first, second = read_events(path)
        self.assertEqual(
            first,
            {
                "time": 1700000000,
                "event": "sign_in",
                "ip": "192.0.2.7",
                "user": "alice",
                "result": "ok",
                "via": "api",
            },
        )
        self.assertEqual(second["user"], "m" * MAX_FIELD)
        self.assertEqual((second["result"], second["via"]), ("bad_password", "console"))

    def test_appends_and_bounds_fields(self) -> None:
        """A second log on the same file appends; a stranger's huge id is cut."""
        path = Path(self.mktemp())
        path.write_text('{"earlier": true}\n')
        clock = Clock()
        clock.advance(1700000000.5)
        events = EventLog(str(path), clock)
        events.punch_request("192.0.2.1", "x" * 65536 + '\n"}', "offline")
        events.close()
        events.punch_request("192.0.2.1", "after close", "offline")
        lines = read_events(path)
        self.assertEqual(lines[0], {"earlier": True})
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[1]["time"], 1700000000.5)
        self.assertEqual(lines[1]["target_id"], "x" * MAX_FIELD)

    def test_unopenable_file_refuses_to_start(self) -> None:
        from litedesk.relay_tap import Options, makeService

        opts = Options()
        missing = Path(self.mktemp()) / "no-such-dir" / "events.jsonl"
        opts.parseOptions(["--data-dir", self.mktemp(), "--event-log", str(missing)])
        with self.assertRaises(SystemExit) as caught:
            makeService(opts)
        self.assertIn("--event-log", str(caught.exception))
