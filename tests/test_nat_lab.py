"""NAT traversal proven on real (namespace) NATs: see tests/natlab.py.

Runs the real server in the lab's public namespace, host agents and headless
viewers behind cone (MASQUERADE) and symmetric (MASQUERADE --random-fully)
routers with the WAN-side input drop real routers have.
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from .natlab import PYTHON, LiteDeskLab, skip_reason

NAT_TEST = "from litedesk.nat.nattype import main; main()"


_lab: LiteDeskLab | None = None


def shared_lab() -> LiteDeskLab:
    """One lab (server running) for the module; removed when the test process exits."""
    global _lab
    if _lab is None:
        workdir = Path(tempfile.mkdtemp(prefix="litedesk-natlab-"))
        _lab = LiteDeskLab(workdir, dict(os.environ))
        atexit.register(_lab.down)
        _lab.up()
    return _lab


class NatTypeLabTests(SynchronousTestCase):
    skip = skip_reason()

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
