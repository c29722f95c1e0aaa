"""Two cluster nodes on one PostgreSQL database lose one node (issue 17 item 4).

Real processes in network namespaces (L{tests.support.cluster_lab}):
Debian's PostgreSQL, nodes A and B (C{twistd litedesk-relay --cluster}), a
host agent behind a cone NAT given both nodes, headless viewers behind
another.  One test walks through what an operator of a two-node cluster
relies on: a viewer asking B reaches a host registered on A; after A is
killed the host is online on B within 30 s and viewers reach it again; every
registration A acknowledged is in the database and known to B; a restarted A
rejoins and reaches the host now registered on B.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psycopg
from PIL import Image
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from .support.cluster_lab import ClusterLab
from .support.images import mean_error, paint_test_screen
from .support.polling import wait_until
from .support.skips import requires
from .support.xvfb import set_root_image

#: Issue 17: the host is online on the surviving node within this many seconds.
FAILOVER = 30.0
REGISTRATIONS = 200

log = Logger()


@requires("netns", "Xvfb", "xclip", "display")
class TwoNodeClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir()
        self.lab = ClusterLab(self.tmp / "lab", dict(os.environ))
        self.addCleanup(self.lab.down)
        self.lab.up()
        assert self.lab.xvfb is not None
        self.expected = paint_test_screen(self.tmp / "screen.png", "CLUSTER-LAB")
        set_root_image(self.lab.xvfb, str(self.tmp / "screen.png"))

    def connect(self, node: str, peer: str) -> dict[str, object]:
        """A headless viewer in v2 asks C{node} for C{peer}: it sees the host's screen."""
        shot = self.tmp / f"shot-{node}-{time.monotonic_ns()}.png"
        with self.lab.via(node):
            out = self.lab.viewer(
                "v2", peer, "--stats-json", "--verbose", "--screenshot", str(shot)
            )
        self.assertEqual(
            out.returncode, 0, f"viewer asking node {node} failed:\n{out.stderr[-3000:]}"
        )
        stats: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertIn(stats["path"], ("udp", "direct", "relay"))
        self.assertEqual(stats["rendezvous"], f"{self.lab.address(node)}:21116")
        got = Image.open(shot)
        self.assertEqual(got.size, self.expected.size)
        self.assertLess(mean_error(self.expected, got), 6.0)
        return stats

    def stored_ids(self) -> set[str]:
        assert self.lab.pg is not None
        with psycopg.connect(self.lab.pg.socket_url("litedesk")) as conn:
            return {i for (i,) in conn.execute("SELECT id FROM peer").fetchall()}

    def test_node_loss_and_rejoin(self) -> None:
        """A viewer on B reaches a host on A; A is killed; the host is online on B
        within 30 s and reachable there; every id A acknowledged is in PostgreSQL
        and OFFLINE (not unknown) on B; a restarted A reaches the host on B."""
        lab = self.lab
        peer = lab.host("h1")
        self.assertEqual(lab.online("A", [peer]), [True], "the host registers on A, first named")

        # B forwards the request to A, which holds the host's registration.
        self.connect("B", peer)

        ids = [f"cl{os.getpid() % 10**5:05d}{i:03d}" for i in range(REGISTRATIONS)]
        answers = lab.register("A", ids)
        acked = set(answers.get("OK", []))
        self.assertEqual(len(acked), REGISTRATIONS, f"RegisterPk answers from A: {answers}")

        lab.kill_node("A")
        killed = time.monotonic()
        # B's own answer with the host's address proves the host is registered
        # on B and answers it (B's OnlineRequest counts hosts placed on any node,
        # so it says online while the cluster still thinks the host is on A).
        # A probe B forwards to dead A waits for an answer: one that ends past
        # the deadline does not count.
        wait_until(
            lambda: (
                lab.punch("B", [peer]) == {"ADDRESS": [peer]}
                and time.monotonic() - killed <= FAILOVER
            ),
            FAILOVER,
            1.0,
            lambda: f"the host to answer through B; host log:\n{lab.host_log(peer)[-3000:]}",
        )
        # The figure for the operator's notes (the deadline above is the issue's).
        log.info(
            "host answered through B {took:.1f} s after A was killed",
            took=time.monotonic() - killed,
        )
        self.connect("B", peer)

        # No acknowledged registration is lost: in the table, and B knows each id.
        missing = acked - self.stored_ids()
        self.assertEqual(missing, set(), f"{len(missing)} acknowledged ids not in PostgreSQL")
        punched = lab.punch("B", sorted(acked))
        self.assertEqual(
            set(punched),
            {"OFFLINE"},
            f"B's answers by kind: { {k: len(v) for k, v in punched.items()} }",
        )

        lab.start_node("A")
        # A rejoins: a viewer asking it reaches the host, now registered on B.
        self.connect("A", peer)


@requires("netns", "Xvfb")
class ClusterStartTests(SynchronousTestCase):
    def test_nodes_started_together(self) -> None:
        """Both nodes started at once on a new database (they create its tables at the
        same time, as after a power cut) come up, and each acknowledges registrations."""
        lab = ClusterLab(Path(self.mktemp()), dict(os.environ))
        self.addCleanup(lab.down)
        lab.up(together=True)
        for node in ("A", "B"):
            ids = [f"st{node}{os.getpid() % 10**5:05d}{i:02d}" for i in range(5)]
            self.assertEqual(lab.register(node, ids), {"OK": ids, "NO_ANSWER": []})
