"""NAT traversal proven on real (namespace) NATs: see tests/support/natlab.py.

Runs the real server in the lab's public namespace, host agents and headless
viewers behind cone (MASQUERADE) and symmetric (MASQUERADE --random-fully)
routers with the WAN-side input drop real routers have.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from PIL import Image
from twisted.trial.unittest import SynchronousTestCase

from .support.images import mean_error, paint_test_screen
from .support.natlab import PYTHON, VIEWER, LiteDeskLab
from .support.skips import requires
from .support.xvfb import Xvfb, set_root_image

HEARTBEAT = 15.0  # the host's registration interval (REG_INTERVAL)
NAT_TEST = "from litedesk.nat.nattype import main; main()"


_lab: LiteDeskLab | None = None


def shared_lab(with_display: bool = False) -> LiteDeskLab:
    """One lab (server running) for the module; removed when the test process exits.

    With C{with_display}, one Xvfb in the root namespace serves every host
    and viewer in the lab (X clients in a namespace use its filesystem socket).
    """
    global _lab
    if _lab is None:
        workdir = Path(tempfile.mkdtemp(prefix="litedesk-natlab-"))
        _lab = LiteDeskLab(workdir, dict(os.environ))
        atexit.register(_lab.down)
        _lab.up()
    if with_display and _lab.xvfb is None:
        _lab.xvfb = Xvfb(1920, 1080, 24).start()
        atexit.register(_lab.xvfb.stop)
        _lab.env["DISPLAY"] = str(_lab.xvfb.display)
    return _lab


@requires("netns")
class NatTypeLabTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lab = shared_lab()
        self.lab.net.set_nat("r1", "cone")
        self.lab.net.set_nat("r2", "symmetric")

    def _nat_type(self, role: str) -> str:
        out = self.lab.net.x(role, PYTHON, "-c", NAT_TEST, self.lab.server)
        return str(json.loads(out.stdout)["nat_type"])

    def test_cone_nat_is_asymmetric(self) -> None:
        """Behind a port-preserving MASQUERADE router the NAT test says ASYMMETRIC."""
        self.assertEqual(self._nat_type("h1"), "ASYMMETRIC")

    def test_symmetric_nat_is_symmetric(self) -> None:
        """Behind MASQUERADE --random-fully the NAT test says SYMMETRIC."""
        self.assertEqual(self._nat_type("v2"), "SYMMETRIC")


@requires("netns", "Xvfb", "xclip", "display")
class PathLabTests(SynchronousTestCase):
    """Which path a real session takes through real NATs, and that it works."""

    def setUp(self) -> None:
        self.lab = shared_lab(with_display=True)
        self.lab.net.set_ipv6(False)  # IPv4 only unless a test says otherwise
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir()

    def start_host(self, role: str, *extra: str) -> str:
        peer = self.lab.host(role, *extra)
        self.addCleanup(self.lab.stop_host, peer)
        return peer

    def connect(self, role: str, peer: str, *args: str) -> dict[str, object]:
        out = self.lab.viewer(role, peer, "--stats-json", "--verbose", *args)
        self.last_stderr = out.stderr
        self.assertEqual(out.returncode, 0, f"viewer failed: {out.stderr[-3000:]}")
        stats: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
        return stats

    def assert_screen(self, role: str, peer: str, path: str, *args: str) -> None:
        """Connect from C{role}; the path is C{path} and the screenshot is the host's screen."""
        expected = paint_test_screen(self.tmp / "expected.png", "NAT-LAB-MARKER")
        assert self.lab.xvfb is not None
        set_root_image(self.lab.xvfb, str(self.tmp / "expected.png"))
        shot = self.tmp / "shot.png"
        stats = self.connect(role, peer, "--screenshot", str(shot), *args)
        self.assertEqual(stats["path"], path, f"viewer log: {self.last_stderr[-3000:]}")
        got = Image.open(shot)
        self.assertEqual(got.size, expected.size)
        self.assertLess(mean_error(expected, got), 6.0)

    def nat(self, r1: str, r2: str) -> None:
        self.lab.net.set_nat("r1", r1)
        self.lab.net.set_nat("r2", r2)

    # The TCP punch (--no-udp); tests/test_udp_paths_lab.py has the UDP punch.

    def test_cone_cone_is_punched_and_screen_matches(self) -> None:
        """Both behind cone NATs: the session is hole-punched over TCP (path direct) and
        shows the screen."""
        self.nat("cone", "cone")
        peer = self.start_host("h1")
        self.assert_screen("v2", peer, "direct", "--no-udp")

    def test_symmetric_host_side_uses_relay(self) -> None:
        """Host behind a symmetric NAT, TCP only: no punch, the session goes through the
        relay and works."""
        self.nat("symmetric", "cone")
        peer = self.start_host("h1")
        self.assert_screen("v2", peer, "relay", "--no-udp")

    def test_symmetric_viewer_side_uses_relay(self) -> None:
        """Viewer behind a symmetric NAT, TCP only: the session goes through the relay."""
        self.nat("cone", "symmetric")
        peer = self.start_host("h1")
        self.assert_screen("v2", peer, "relay", "--no-udp")

    def test_ipv6_without_nat_is_direct(self) -> None:
        """Both sides with routed IPv6 (no NAT, stateful firewalls): a direct IPv6 session."""
        self.nat("cone", "cone")
        self.lab.net.set_ipv6(True)
        peer = self.start_host("h1")
        self.assert_screen("v2", peer, "ipv6")
        # The host saw the viewer's own (untranslated) IPv6 address.
        self.assertIn("logged in from 2001:db8:2::20", self.lab.host_log(peer))

    def test_ipv6_direct_behind_symmetric_nat(self) -> None:
        """Symmetric IPv4 NATs on both sides but routed IPv6: still a direct IPv6 session."""
        self.nat("symmetric", "symmetric")
        self.lab.net.set_ipv6(True)
        peer = self.start_host("h1")
        self.assert_screen("v2", peer, "ipv6")

    def test_two_hosts_found_by_lan_discovery(self) -> None:
        """Two --discoverable hosts on one LAN are both listed by --discover-lan there."""
        self.nat("cone", "cone")
        first = self.start_host("h1", "--discoverable")
        second = self.start_host("h2", "--discoverable")
        out = self.lab.net.x(
            "v1", *VIEWER, "--discover-lan", "--stats-json", "--discover-wait", "1.5"
        )
        found = {h["id"]: h for h in json.loads(out.stdout)}
        self.assertEqual(set(found), {first, second})
        self.assertTrue(all(h["platform"] for h in found.values()))
        # A viewer behind the other router (another LAN) finds neither.
        out = self.lab.net.x(
            "v2", *VIEWER, "--discover-lan", "--stats-json", "--discover-wait", "1.0"
        )
        self.assertEqual(json.loads(out.stdout), [])

    def test_same_router_uses_lan(self) -> None:
        """Host and viewer behind the same router connect over the LAN address."""
        self.nat("cone", "cone")
        peer = self.start_host("h1")
        stats = self.connect("v1", peer)
        self.assertEqual(stats["path"], "lan")


@requires("netns", "Xvfb", "xclip", "display")
class ServerLossLabTests(SynchronousTestCase):
    """What users see when the rendezvous server dies and comes back."""

    def test_server_killed_during_session(self) -> None:
        """A running session outlives the server; new viewers get a clear error; after a
        restart the host is reachable again within one heartbeat."""
        lab = shared_lab(with_display=True)
        lab.net.set_ipv6(False)
        lab.net.set_nat("r1", "cone")
        lab.net.set_nat("r2", "cone")
        peer = lab.host("h1")
        self.addCleanup(lab.stop_host, peer)

        def restart() -> None:
            if lab.server_proc is None:
                lab.start_server()

        self.addCleanup(restart)
        running = lab.viewer_popen("v2", peer, "--duration", "6", "--stats-json")
        # Wait (bounded) for that session to log in before pulling the server.
        for _ in range(300):
            if "logged in from" in lab.host_log(peer) or running.poll() is not None:
                break
            time.sleep(0.1)
        self.assertIn("logged in from", lab.host_log(peer))
        lab.stop_server(signal.SIGKILL)

        refused = lab.viewer("v2", peer)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("cannot reach rendezvous server", refused.stderr)

        out, err = running.communicate(timeout=60)
        self.assertEqual(running.returncode, 0, f"session died with the server: {err[-2000:]}")
        stats = json.loads(out.strip().splitlines()[-1])
        self.assertEqual((stats["path"], stats["transport"]), ("udp", "quic"))
        self.assertGreaterEqual(stats["frames"], 1)

        lab.start_server()
        # The host re-registers on its next heartbeat (a retry every 3 s while
        # the server is away, 15 s at most when it was not noticed).
        deadline = time.monotonic() + HEARTBEAT + 5
        result = lab.viewer("v2", peer, "--stats-json")
        while result.returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            result = lab.viewer("v2", peer, "--stats-json")
        self.assertEqual(result.returncode, 0, f"host unreachable after restart: {result.stderr}")
