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
- stopping the host removes both mappings from the gateway;
- the same with NAT-PMP instead of PCP.

And the real host agent (C{twistd litedesk-host --natpmp}) in h1: its QUIC
port answers a QUIC Initial and its session port a TCP connect from the
WAN through the mapping, a viewer behind a symmetric NAT comes in through
it (the host's summary names path natpmp), and the mappings go at stop.
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
_TCP_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as e:
    print("failed:", e)
"""

# A QUIC Initial as a LiteDesk viewer sends it; any QUIC answer (the host's
# Initial, or a Retry) proves the datagram reached the host's QUIC socket.
_QUIC_INITIAL = """
import socket, sys, time
from aioquic.quic.connection import QuicConnection
from litedesk.quic.tls_config import viewer_configuration
addr = (sys.argv[1], int(sys.argv[2]))
conn = QuicConnection(configuration=viewer_configuration())
conn.connect(addr, now=time.time())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
for data, _ in conn.datagrams_to_send(now=time.time()):
    s.sendto(data, addr)
try:
    data = s.recv(2000)
    print("quic answer" if data and data[0] & 0xC0 == 0xC0 else "not quic")
except socket.timeout:
    print("no answer")
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

    def start_probe(
        self, lifetime: int, *extra: str
    ) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        """The stand-in host in h1; its report once the gateway answered."""
        log = open(self.tmp / "probe.log", "wb")  # noqa: SIM115 - the child keeps it
        self.addCleanup(log.close)
        proc = self.net.popen(
            "h1",
            [PYTHON, "-m", "tests.support.natpmp_probe", str(PORT), str(lifetime), *extra],
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

    def test_natpmp_maps_and_removes_too(self) -> None:
        """Speaking NAT-PMP only, the host gets the same mappings from the real gateway
        (external address from NAT-PMP's address request), and removes them at stop."""
        proc, got = self.start_probe(7200, "natpmp")
        self.assertEqual(
            got,
            {"mapped": PORT, "external_ip": DECLARED_EXT_IP, "tcp": PORT, "version": "NAT-PMP"},
        )
        self.assertEqual(self.from_pub(_UDP_PROBE), "echo ping")
        self.assertEqual(self.from_pub(_TCP_PROBE), "session")
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.report(proc), {"stopped": True})
        self.assertEqual((self.rules("udp"), self.rules("tcp")), ([], []))

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


@requires("netns", "miniupnpd", "nft", "Xvfb", "xclip", "display")
class NatPmpAgentLabTests(SynchronousTestCase):
    """C{twistd litedesk-host --natpmp} in h1 behind the real gateway."""

    def setUp(self) -> None:
        from .test_nat_lab import shared_lab

        self.lab = shared_lab(with_display=True)
        self.lab.net.set_ipv6(False)
        self.lab.net.set_nat("r1", "cone")
        tmp = Path(self.mktemp())
        tmp.mkdir(parents=True)
        self.igd = Miniupnpd(self.lab.net, "r1", tmp)
        self.addCleanup(self.igd.stop)
        self.igd.start(
            miniupnpd_conf(upnp=False, natpmp=True), started="Listening for NAT-PMP/PCP traffic"
        )

    def test_host_maps_its_quic_and_session_ports_and_removes_them(self) -> None:
        """The host agent maps UDP and TCP 21118 by PCP; through the mapping, from the
        WAN, its QUIC port answers a viewer's QUIC Initial and its session port takes
        a TCP connection; the mappings are gone once the host stops."""
        peer = self.lab.host("h1", "--natpmp")
        self.addCleanup(self.lab.stop_host, peer)
        log = wait_until(
            lambda: "NAT-PMP: mapped" in self.lab.host_log(peer) and self.lab.host_log(peer),
            timeout=15,
            message="the host's mapping",
        )
        self.assertIn(
            f"NAT-PMP: mapped {DECLARED_EXT_IP}:{PORT} -> 10.0.1.10:{PORT} (UDP+TCP, PCP", log
        )
        self.assertIn("QUIC host listening on UDP 21118", log)
        self.assertIn(f"dport {PORT} dnat ip to 10.0.1.10:{PORT}", self.igd.redirects())
        wan = (WAN, str(PORT))
        self.assertEqual(
            self.lab.net.x("pub", PYTHON, "-c", _QUIC_INITIAL, *wan).stdout.strip(), "quic answer"
        )
        self.assertEqual(
            self.lab.net.x("pub", PYTHON, "-c", _TCP_CONNECT, *wan).stdout.strip(), "connected"
        )
        self.lab.stop_host(peer)
        log = self.lab.host_log(peer)
        self.assertIn(f"NAT-PMP: removed the UDP mapping of port {PORT}", log)
        self.assertIn(f"NAT-PMP: removed the TCP mapping of port {PORT}", log)
        self.assertNotIn(f"dport {PORT}", self.igd.redirects())

    def test_viewer_comes_in_through_the_mapping(self) -> None:
        """A viewer behind the other (symmetric) NAT connects through the mapped port
        over QUIC (path natpmp), not the relay, and the host's session summary names
        the natpmp path and QUIC."""
        self.lab.net.set_nat("r2", "symmetric")
        peer = self.lab.host("h1", "--natpmp")
        self.addCleanup(self.lab.stop_host, peer)
        wait_until(
            lambda: "NAT-PMP: mapped" in self.lab.host_log(peer),
            timeout=15,
            message="the host's mapping",
        )
        out = self.lab.viewer("v2", peer, "--stats-json", "--duration", "1")
        self.assertEqual(out.returncode, 0, f"viewer failed: {out.stderr[-3000:]}")
        stats = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertEqual(
            (stats["path"], stats["transport"]), ("natpmp", "quic"), out.stderr[-3000:]
        )
        self.lab.stop_host(peer)
        self.assertRegex(self.lab.host_log(peer), r"Session with .* over natpmp/quic ended")
