"""End to end: C{litedesk-viewer --forward} through a real server, relay and host agent.

A few MiB downloaded over HTTP through the forward arrive intact (SHA-256),
on the direct (LAN) path and through the relay, also for two connections at
once; a target the host does not allow, an allowed target that is closed and
a view-only host each end the viewer at start-up with exit 1 and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from .support.e2e_lab import NEEDS, VIEWER, lab
from .support.polling import wait_until
from .support.ports import free_port
from .support.skips import requires
from .support.xvfb import _die_with_parent

SIZE = 3 * 1024 * 1024 + 12345


class _HttpTarget:
    """C{python -m http.server} on 127.0.0.1 serving one random file."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.data = os.urandom(SIZE)
        (root / "blob.bin").write_bytes(self.data)
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        wait_until(lambda: _accepts(self.port), 15, 0.1, "the HTTP target to listen")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _download(port: int) -> str:
    url = f"http://127.0.0.1:{port}/blob.bin"
    with urllib.request.urlopen(url, timeout=60) as resp:
        return hashlib.sha256(resp.read()).hexdigest()


@requires(*NEEDS)
class PortForwardEndToEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lab = lab()
        self.http = _HttpTarget(Path(self.mktemp()))
        self.addCleanup(self.http.stop)
        self.closed_port = free_port()
        # One host per test: its --allow-forward names this test's target.
        self.peer = self.lab.host(
            f"fwd-{self.http.port}",
            "--allow-forward",
            f"127.0.0.1:{self.http.port}",
            "--allow-forward",
            f"127.0.0.1:{self.closed_port}",
        )

    def start_forward(
        self, target_port: int, *extra: str, duration: float = 20, peer: str | None = None
    ) -> tuple[subprocess.Popen[str], int]:
        lport = free_port()
        argv = [
            *VIEWER,
            peer or self.peer,
            "--rendezvous",
            f"127.0.0.1:{self.lab.port}",
            "--key",
            self.lab.key,
            "--password",
            "e2e-password",
            "--forward",
            f"{lport}:127.0.0.1:{target_port}",
            "--duration",
            str(duration),
            "--stats-json",
            "--verbose",
            *extra,
        ]
        proc = subprocess.Popen(
            argv,
            env=self.lab.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )
        self.addCleanup(_kill, proc)
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=_collect, args=(proc, self.stderr), daemon=True)
        self.reader.start()
        return proc, lport

    def wait_listening(self, proc: subprocess.Popen[str], lport: int) -> None:
        # The viewer logs (--verbose) when it listens; probing the port would
        # open a session per probe.
        wait_until(
            lambda: (
                proc.poll() is not None
                or any(f"Forwarding 127.0.0.1:{lport}" in line for line in self.stderr)
            ),
            30,
            0.1,
            "the viewer to listen",
        )
        self.assertIsNone(proc.poll(), f"viewer exited: {''.join(self.stderr)}")

    def wait_exit(self, proc: subprocess.Popen[str]) -> str:
        """The viewer's stdout once it has exited (its stderr is in C{self.stderr})."""
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait(60)
        self.reader.join(10)
        return out

    def finish(self, proc: subprocess.Popen[str]) -> dict[str, object]:
        out = self.wait_exit(proc)
        self.assertEqual(proc.returncode, 0, f"viewer failed: {''.join(self.stderr)}")
        stats: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return stats

    def download_through(self, *extra: str, clients: int = 1) -> dict[str, object]:
        proc, lport = self.start_forward(self.http.port, *extra, duration=15)
        self.wait_listening(proc, lport)
        results: list[str] = []

        def fetch() -> None:
            try:
                results.append(_download(lport))
            except Exception as e:
                results.append(repr(e))

        threads = [threading.Thread(target=fetch) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(results, [self.http.sha] * clients)
        stats = self.finish(proc)
        fwd = stats["forward"]
        assert isinstance(fwd, dict)
        self.assertEqual(fwd["target"], f"127.0.0.1:{self.http.port}")
        self.assertEqual(fwd["listen"], lport)
        self.assertEqual(fwd["connections"], clients)
        self.assertGreaterEqual(fwd["bytes_in"], clients * SIZE)
        self.assertGreater(fwd["bytes_out"], 0)
        return stats

    def test_download_direct(self) -> None:
        """A download through the forward on the LAN path is byte-identical."""
        stats = self.download_through()
        self.assertEqual(stats["path"], "lan")

    def test_download_relayed(self) -> None:
        """Through the relay too, and the relay carries no plaintext of it."""
        before = len(self.lab.proxy.snapshot())
        stats = self.download_through("--force-relay")
        self.assertEqual(stats["path"], "relay")
        relayed = self.lab.proxy.snapshot()[before:]
        self.assertGreater(len(relayed), SIZE)
        self.assertNotIn(self.http.data[1000:1064], relayed)

    def test_two_concurrent_connections(self) -> None:
        """Two local clients at once each get their own session and the whole file."""
        self.download_through(clients=2)

    def refused(self, target_port: int, peer: str | None = None) -> str:
        proc, _ = self.start_forward(target_port, peer=peer)
        self.wait_exit(proc)
        err = "".join(self.stderr)
        self.assertEqual(proc.returncode, 1, err)
        return err

    def test_target_not_allowed(self) -> None:
        """A target missing from --allow-forward ends the viewer at start-up."""
        err = self.refused(free_port())
        self.assertIn("litedesk-viewer: forward not allowed", err)

    def test_target_unreachable(self) -> None:
        """An allowed target that nothing listens on is reported as unreachable."""
        err = self.refused(self.closed_port)
        self.assertIn("litedesk-viewer: forward target unreachable", err)

    def test_view_only_host_refuses(self) -> None:
        """A --view-only host refuses every forward, even an allowed one."""
        peer = self.lab.host(
            f"fwd-ro-{self.http.port}",
            "--view-only",
            "--allow-forward",
            f"127.0.0.1:{self.http.port}",
        )
        err = self.refused(self.http.port, peer=peer)
        self.assertIn("litedesk-viewer: forward not allowed", err)


def _collect(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
