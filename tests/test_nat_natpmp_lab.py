"""NAT-PMP/PCP port mapping against a real gateway: miniupnpd on the lab router r1.

The host side is the host's own L{NatPmpService} and L{NatPmpMapper} run
in h1 (L{tests.support.natpmp_probe}: probe protocols on the mapped UDP and
TCP port instead of QUIC and sessions); the gateway is miniupnpd 2.3.1 with
NAT-PMP and PCP on, nftables backend.  From pub, on the WAN side:

- a UDP datagram to r1's WAN address and the mapped port reaches the host's
  UDP socket, and a TCP connect there reaches its TCP listener (PCP, one
  external port for both, the external address the gateway declares);
- a mapping with a short lifetime is renewed and stays reachable past
  several lifetimes, while one left unrenewed (host killed) expires;
- stopping the host removes both mappings from the gateway.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from .support.miniupnpd import DECLARED_EXT_IP, Miniupnpd, miniupnpd_conf
from .support.natlab import PYTHON, WAN_V4
from .support.polling import wait_until
from .support.skips import requires

ROOT = Path(__file__).resolve().parent.parent
PORT = 21118
WAN = WAN_V4["r1"]
# Asked of the gateway in the renewal test; miniupnpd's PCP floor is set below it.
SHORT_LIFETIME = 3

_UDP_PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for _ in range(3):
    s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recvfrom(100)[0].decode())
        break
    except socket.timeout:
        pass
"""
_TCP_PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as c:
        print(c.recv(100).decode().strip())
except OSError as e:
    print("failed:", e)
"""


@requires("netns", "miniupnpd", "nft")
class NatPmpLabTests(SynchronousTestCase):
    def setUp(self) -> None:
        from .test_nat_lab import shared_lab

        self.lab = shared_lab()
        self.net = self.lab.net
        self.net.set_ipv6(False)
        self.net.set_nat("r1", "cone")
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir(parents=True)
        self.igd = Miniupnpd(self.net, "r1", self.tmp)
        self.addCleanup(self.igd.stop)
        conf = miniupnpd_conf(upnp=False, natpmp=True, min_lifetime=2)
        self.igd.start(conf, started="Listening for NAT-PMP/PCP traffic")

    def start_probe(self, lifetime: int) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        """The stand-in host in h1; its report once the gateway answered."""
        log = open(self.tmp / "probe.log", "wb")  # noqa: SIM115 - the child keeps it
        self.addCleanup(log.close)
        proc = self.net.popen(
            "h1",
            [PYTHON, "-m", "tests.support.natpmp_probe", str(PORT), str(lifetime)],
            cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        self.addCleanup(self._kill, proc)
        return proc, self.report(proc)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def report(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> dict[str, Any]:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if not line:
            self.fail(f"no report from the probe: {self.probe_log()[-3000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    def probe_log(self) -> str:
        return (self.tmp / "probe.log").read_text(errors="replace")

    def from_pub(self, script: str) -> str:
        return self.net.x("pub", PYTHON, "-c", script, WAN, str(PORT)).stdout.strip()

    def rules(self, proto: str) -> list[str]:
        """miniupnpd's DNAT rules of C{proto} for PORT (it matches the IPv4 header's
        protocol byte: 0x11 UDP, 0x6 TCP)."""
        code = {"udp": "0x11", "tcp": "0x6"}[proto]
        rule = f"@nh,72,8 {code} th dport {PORT} dnat ip to 10.0.1.10:{PORT}"
        return [line for line in self.igd.redirects().splitlines() if rule in line]

    def test_udp_and_tcp_reach_the_host_and_are_removed_at_stop(self) -> None:
        """PCP maps UDP and TCP to one external port on the real gateway; from the
        WAN both reach the host; stopping the host removes both mappings."""
        proc, got = self.start_probe(7200)
        self.assertEqual(
            got, {"mapped": PORT, "external_ip": DECLARED_EXT_IP, "tcp": PORT, "version": "PCP"}
        )
        self.assertEqual(len(self.rules("udp")), 1, self.igd.redirects())
        self.assertEqual(len(self.rules("tcp")), 1, self.igd.redirects())
        self.assertEqual(self.from_pub(_UDP_PROBE), "echo ping")
        self.assertEqual(self.from_pub(_TCP_PROBE), "session")
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.report(proc), {"stopped": True})
        self.assertEqual(proc.wait(10), 0)
        self.assertEqual((self.rules("udp"), self.rules("tcp")), ([], []))
        self.assertIn("NAT-PMP: removed the UDP mapping of port 21118", self.probe_log())
        self.assertNotIn("echo", self.from_pub(_UDP_PROBE))

    def test_short_lifetime_is_renewed_and_unrenewed_expires(self) -> None:
        """A mapping granted for 3 s is renewed at half of it and still reaches the
        host after more than three lifetimes; the same mapping left unrenewed (the
        host killed, nothing removed) is dropped by the gateway once it expires."""
        proc, got = self.start_probe(SHORT_LIFETIME)
        self.assertEqual(got["mapped"], PORT)
        self.assertIn(f"lifetime {SHORT_LIFETIME} s", self.probe_log())
        time.sleep(SHORT_LIFETIME * 3.5)  # the behaviour under test: lifetimes pass
        self.assertEqual(len(self.rules("udp")), 1, self.igd.redirects())
        self.assertEqual(self.from_pub(_UDP_PROBE), "echo ping")
        self.assertEqual(self.from_pub(_TCP_PROBE), "session")
        # The first request and renewals at half the lifetime (about 7 by now).
        for proto in ("UDP", "TCP"):
            maps = self.igd.text().count(f"PCP MAP: added mapping {proto} {PORT}->10.0.1.10")
            self.assertGreaterEqual(maps, 4, self.igd.text()[-3000:])
        proc.kill()
        proc.wait()
        wait_until(
            lambda: not self.rules("udp") and not self.rules("tcp"),
            timeout=SHORT_LIFETIME * 5,
            message="the gateway to expire the unrenewed mappings",
        )
