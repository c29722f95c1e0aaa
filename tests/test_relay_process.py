"""`twistd litedesk-relay` as a real process: restart after kill -9, files, logs."""

from __future__ import annotations

import base64
import socket
import stat
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from litedesk.ops.client_config import decode
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire import addrmangle
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.keys import verify_id_pk

from .support.polling import wait_until
from .support.ports import free_port_pair
from .support.processes import TWISTD, RelayProcess, recv_frame, udp_exchange

ID = "123456789"
UUID = b"0123456789abcdef0123456789abcdef"
PK = bytes([7]) * 32


class RestartTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = Path(self.mktemp())
        self.log = Path(self.mktemp())
        self.port = free_port_pair()

    def start(self) -> RelayProcess:
        p = RelayProcess(self.data_dir, self.port, self.log, "--key", "")
        self.addCleanup(p.stop)
        return p

    def register_pk(self, source: str, uuid: bytes = UUID, pk: bytes = PK) -> str:
        msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=ID, uuid=uuid, pk=pk))
        return udp_exchange(msg.SerializeToString(), self.port, source).hex()

    def test_kill_9_loses_no_acknowledged_registration(self) -> None:
        """After kill -9 and restart the id stays bound to its uuid and key is still signed."""
        first = self.start()
        self.assertEqual(self.register_pk("127.0.0.2"), "820100")
        first.kill9()

        self.start()
        # The binding survived: another device cannot take the id...
        self.assertEqual(self.register_pk("127.0.0.3", uuid=b"x" * 32), "8201020802")
        # ...and the host is asked for its key once, then accepted as before.
        hb = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id=ID, serial=3))
        host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(host.close)
        host.bind(("127.0.0.2", 0))
        host.settimeout(3)
        host.sendto(hb.SerializeToString(), ("127.0.0.1", self.port))
        self.assertEqual(host.recv(100).hex(), "3a021001")
        reg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=ID, uuid=UUID, pk=PK))
        host.sendto(reg.SerializeToString(), ("127.0.0.1", self.port))
        self.assertEqual(host.recv(100).hex(), "820100")

        # A viewer now gets the host's key signed by the (persisted) server key.
        viewer = socket.create_connection(("127.0.0.1", self.port), timeout=3)
        self.addCleanup(viewer.close)
        viewer.sendall(
            encode_frame(
                rz.RendezvousMessage(
                    punch_hole_request=rz.PunchHoleRequest(id=ID)
                ).SerializeToString()
            )
        )
        push = rz.RendezvousMessage()
        push.ParseFromString(host.recv(1000))
        hs = socket.socket()
        self.addCleanup(hs.close)
        hs.bind(("127.0.0.2", 0))
        hs.settimeout(3)
        hs.connect(("127.0.0.1", self.port))
        hs.sendall(
            encode_frame(
                rz.RendezvousMessage(
                    punch_hole_sent=rz.PunchHoleSent(
                        socket_addr=push.punch_hole.socket_addr, id=ID, version="1.4.9"
                    )
                ).SerializeToString()
            )
        )
        resp = rz.RendezvousMessage()
        resp.ParseFromString(recv_frame(viewer, FrameDecoder()))
        server_pk = base64.b64decode((self.data_dir / "id_ed25519.pub").read_text())
        self.assertEqual(verify_id_pk(server_pk, resp.punch_hole_response.pk), (ID, PK))
        self.assertEqual(addrmangle.decode(resp.punch_hole_response.socket_addr)[0], "127.0.0.2")

    def test_files_are_private(self) -> None:
        """The data directory is 0700 and the secret key and database are 0600."""
        self.start()
        self.assertEqual(stat.S_IMODE(self.data_dir.stat().st_mode), 0o700)
        self.assertEqual(stat.S_IMODE((self.data_dir / "id_ed25519").stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE((self.data_dir / "db_v2.sqlite3").stat().st_mode), 0o600)

    def test_start_up_logs_key_and_client_settings(self) -> None:
        """The log names the public key, what to type into a RustDesk client and the
        config string it can import instead."""
        self.start()
        pk = (self.data_dir / "id_ed25519.pub").read_text()

        def settings() -> str:
            text = self.log.read_text() if self.log.exists() else ""
            return text if "Client config string" in text else ""

        text = wait_until(settings, 5, message="the relay's client settings in its log")
        self.assertIn(pk, text)
        self.assertIn("Client settings: ID server", text)
        # The config string a client imports carries the same key.
        [line] = [x for x in text.splitlines() if "Client config string" in x]
        self.assertEqual(decode(line.rsplit(" ", 1)[-1]).key, pk.strip())

    def test_key_mismatch_logged_for_fail2ban(self) -> None:
        """A wrong key is logged on one line with the source IP."""
        p = RelayProcess(self.data_dir, self.port, self.log)  # default -k -: key required
        self.addCleanup(p.stop)
        viewer = socket.create_connection(("127.0.0.1", self.port), timeout=3)
        self.addCleanup(viewer.close)
        viewer.sendall(
            encode_frame(
                rz.RendezvousMessage(
                    punch_hole_request=rz.PunchHoleRequest(id=ID, licence_key="bad")
                ).SerializeToString()
            )
        )
        self.assertEqual(recv_frame(viewer, FrameDecoder()).hex(), "5a021803")
        wait_until(
            lambda: "Key mismatch from 127.0.0.1" in self.log.read_text(),
            5,
            message=lambda: f"the key mismatch logged:\n{self.log.read_text()}",
        )

    def test_corrupt_key_file_refuses_to_start(self) -> None:
        """A damaged id_ed25519 stops start-up with a clear message instead of a new key."""
        self.data_dir.mkdir(mode=0o700)
        (self.data_dir / "id_ed25519").write_text("not a key")
        proc = subprocess.run(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile",
                str(self.log),
                "litedesk-relay",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--interface",
                "127.0.0.1",
            ],
            capture_output=True,
            timeout=30,
        )
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(b"id_ed25519", proc.stderr + proc.stdout)
        self.assertEqual((self.data_dir / "id_ed25519").read_text(), "not a key")
