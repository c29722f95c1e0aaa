"""The NAT lab itself: namespaces come up, NAT rewrites sources, teardown is clean."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from .support.natlab import (
    LAN_V6,
    PUB_V4,
    PUB_V6,
    ROLES,
    WAN_V4,
    NatLab,
    remove_leftovers,
)
from .support.skips import requires

# Accepts one TCP connection and prints the peer's address.
_ECHO_PEER = """
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4); s.settimeout(20)
print('ready', flush=True)
c, a = s.accept(); c.sendall(f'{a[0]} {a[1]}'.encode()); c.close()
"""
_CONNECT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
data = b''
while True:
    b = c.recv(100)
    if not b: break
    data += b
print(data.decode())
"""


@requires("netns")
class NatLabTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lab = NatLab().up()
        self.addCleanup(self.lab.down)

    def _observed(self, client: str, server_ip: str, port: int = 3478) -> str:
        server = self.lab.popen(
            "pub",
            [sys.executable, "-c", _ECHO_PEER, server_ip, str(port)],
            stdout=subprocess.PIPE,
        )
        assert server.stdout is not None
        self.assertEqual(server.stdout.readline().strip(), b"ready")
        out = self.lab.x(client, sys.executable, "-c", _CONNECT, server_ip, str(port))
        server.wait(10)
        return out.stdout.strip()

    def test_server_sees_nat_address(self) -> None:
        """A LAN host reaches the public server over TCP and appears as its router's WAN IP."""
        ip, _ = self._observed("h1", PUB_V4).split()
        self.assertEqual(ip, WAN_V4["r1"])
        ip, _ = self._observed("v2", PUB_V4).split()
        self.assertEqual(ip, WAN_V4["r2"])

    def test_ipv6_is_routed_without_nat(self) -> None:
        """Over IPv6 the server sees the LAN host's own global address."""
        ip, _ = self._observed("v2", PUB_V6).split()
        self.assertEqual(ip, LAN_V6["v2"])

    def test_ping_and_wan_input_drop(self) -> None:
        """Ping crosses the NAT; an unsolicited TCP connect to the router's WAN is dropped."""
        self.lab.x("h1", "ping", "-c1", "-W2", PUB_V4)
        probe = self.lab.x(
            "pub",
            sys.executable,
            "-c",
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('{WAN_V4['r1']}', 22), timeout=1)\n"
            "except TimeoutError: print('dropped')\n"
            "except OSError as e: print('answered', e)\n",
        )
        self.assertEqual(probe.stdout.strip(), "dropped")

    def test_teardown_and_leftovers(self) -> None:
        """down() removes every namespace; a dead run's namespaces are removed by the next."""
        self.assertEqual(len(self.lab.namespaces()), len(ROLES))
        self.lab.down()
        self.assertEqual(self.lab.namespaces(), [])
        self.lab.down()  # idempotent
        # A namespace named after a process that no longer exists is a leftover.
        dead = subprocess.Popen(["true"])
        dead.wait()
        stale = NatLab(prefix=f"nl{dead.pid}")
        # A dead pid's number may have been used by an earlier aborted run too.
        subprocess.run(["ip", "netns", "del", stale.ns("pub")], capture_output=True)
        subprocess.run(["ip", "netns", "add", stale.ns("pub")], check=True)
        self.addCleanup(stale.down)
        self.assertIn(stale.ns("pub"), remove_leftovers())
        self.assertEqual(stale.namespaces(), [])
        # Our own (live pid) lab is not a leftover.
        self.lab.up()
        remove_leftovers()
        self.assertEqual(len(self.lab.namespaces()), len(ROLES))
        self.assertNotEqual(os.getpid(), dead.pid)
