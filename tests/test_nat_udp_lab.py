"""UDP hole punching through real Linux NATs (the namespace lab, tests/support/natlab.py).

A punch side (tests/support/udp_punch_peer.py) runs in h1 (the host, behind
r1) and one in v2 (the viewer, behind r2), each learning its public mapping
from a UDP reflector in C{pub} as the rendezvous server would, then punching
with L{litedesk.nat.udp_puncher.UdpPuncher} and checking that the path
carries datagrams both ways.  For cone/cone, symmetric/cone and
cone/symmetric (C{MASQUERADE --random-fully} on the symmetric router; the
routers keep their WAN-side input drop), 10 fresh attempts each, with new
sockets and flushed conntrack tables: at least 9 must find the path.  Both
symmetric is refused up front (the plan is the relay) without a socket.
Needs root (network namespaces); CI runs as root.
"""

from __future__ import annotations

import atexit
import json
import select
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from .support.natlab import LAN_V4, PUB_V4, PYTHON, NatLab
from .support.udp_punch_peer import REFLECTOR

REPO = Path(__file__).resolve().parent.parent
PEER = [PYTHON, "-c", "from tests.support.udp_punch_peer import main; main()"]
REFLECTOR_PORT = 3478
ATTEMPTS = 10
WINDOW = {False: 4.0, True: 8.0}  # without and with birthday probing
_WAIT_BOUND = """
import subprocess, sys, time
for _ in range(100):
    listening = subprocess.run(["ss", "-uln"], capture_output=True, text=True).stdout
    if ":%s " % sys.argv[1] in listening:
        break
    time.sleep(0.05)
"""


def _line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The next JSON line C{proc} prints, within C{timeout} seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise AssertionError(f"no answer within {timeout} s from {proc.args!r}")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"{proc.args!r} exited ({proc.wait()}) without answering")
    answer: dict[str, Any] = json.loads(line)
    return answer


_lab: tuple[NatLab, Path] | None = None


def _shared_lab() -> tuple[NatLab, Path]:
    """One lab with the reflector in C{pub} for the module; removed when the process exits."""
    global _lab
    if _lab is None:
        lab = NatLab()
        atexit.register(lab.down)
        lab.up()
        logs = Path(tempfile.mkdtemp(prefix="litedesk-udp-lab-"))
        lab.popen("pub", [PYTHON, "-c", REFLECTOR, PUB_V4, str(REFLECTOR_PORT)])
        lab.x("pub", PYTHON, "-c", _WAIT_BOUND, str(REFLECTOR_PORT))
        _lab = (lab, logs)
    return _lab


class UdpPunchLabTests(SynchronousTestCase):
    """Host in h1 behind r1, viewer in v2 behind r2."""

    def setUp(self) -> None:
        self.lab, self.logs = _shared_lab()

    def side(self, role: str, ns: str, own: str, peer: str, n: int) -> subprocess.Popen[str]:
        argv = [
            *PEER,
            "--role", role, "--own", own, "--peer", peer,
            "--reflector", f"{PUB_V4}:{REFLECTOR_PORT}",
            "--host-id", f"lab-host-{n}",
            "--window", str(WINDOW[own != peer]),
        ]  # fmt: skip
        log = open(self.logs / f"{role}-{own}-{peer}-{n}.log", "w")  # noqa: SIM115
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns(ns), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        self.lab.procs.append(proc)  # type: ignore[arg-type]
        return proc

    def attempt(self, host_nat: str, viewer_nat: str, n: int) -> tuple[dict[str, Any], ...]:
        """One punch with fresh sockets and fresh NAT state; both sides' outcomes."""
        for router in ("r1", "r2"):
            self.lab.x(router, "conntrack", "-F", check=False)
        host = self.side("host", "h1", host_nat, viewer_nat, n)
        viewer = self.side("viewer", "v2", viewer_nat, host_nat, n)
        mapped = {"host": _line(host, 30), "viewer": _line(viewer, 30)}
        for proc, other in ((host, "viewer"), (viewer, "host")):
            ip, port = mapped[other]["mapped"].split(":")
            assert proc.stdin is not None
            proc.stdin.write(f"{ip} {port}\n")
            proc.stdin.flush()
        outcome = (_line(host, 30), _line(viewer, 30))
        host.wait(10)
        viewer.wait(10)
        return mapped["host"], mapped["viewer"], *outcome

    def punch_ten(self, host_nat: str, viewer_nat: str) -> None:
        self.lab.set_nat("r1", host_nat)
        self.lab.set_nat("r2", viewer_nat)
        results = []
        for n in range(ATTEMPTS):
            started = time.monotonic()
            _, _, host, viewer = self.attempt(host_nat, viewer_nat, n)
            results.append((host, viewer, time.monotonic() - started))
            if host.get("ok") and viewer.get("ok"):
                # Each side reached the other's public address (never a LAN one).
                self.assertTrue(host["remote"].startswith("198.51.100.12:"), host)
                self.assertTrue(viewer["remote"].startswith("198.51.100.11:"), viewer)
        good = [r for r in results if all(side.get("ok") and side.get("data") for side in r[:2])]
        summary = ", ".join(
            "{} h {:.3f}/v {:.3f} s".format(
                "ok" if r in good else "FAIL", r[0].get("elapsed", 0), r[1].get("elapsed", 0)
            )
            for r in results
        )
        print(f"\n{host_nat}/{viewer_nat}: {len(good)}/{ATTEMPTS} [{summary}]")
        self.assertGreaterEqual(len(good), ATTEMPTS - 1, f"{results}; logs in {self.logs}")

    def test_cone_cone(self) -> None:
        """Two cone NATs: a direct UDP path in at least 9 of 10 fresh attempts."""
        self.punch_ten("cone", "cone")

    def test_symmetric_host(self) -> None:
        """The host's NAT maps per destination: birthday probing gets through 9 of 10 times."""
        self.punch_ten("symmetric", "cone")

    def test_symmetric_viewer(self) -> None:
        """The viewer's NAT maps per destination: birthday probing gets through 9 of 10 times."""
        self.punch_ten("cone", "symmetric")

    def test_both_symmetric_is_refused(self) -> None:
        """Both NATs symmetric: both sides say relay at once and open no socket."""
        self.lab.set_nat("r1", "symmetric")
        self.lab.set_nat("r2", "symmetric")
        for role, ns in (("host", "h1"), ("viewer", "v2")):
            proc = self.side(role, ns, "symmetric", "symmetric", 0)
            self.assertEqual(_line(proc, 30), {"plan": "relay"})
            self.assertEqual(proc.wait(10), 0)
        self.assertNotIn(LAN_V4["h1"], self.lab.x("r1", "conntrack", "-L", check=False).stdout)
