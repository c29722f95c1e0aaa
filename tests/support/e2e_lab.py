"""A LiteDesk lab for end-to-end tests: Xvfb, server, host agents, viewer CLI.

Everything runs as real processes on loopback: C{twistd litedesk-relay},
C{twistd litedesk-host} on a private Xvfb, and C{litedesk-viewer --headless}.
A recording TCP proxy sits in front of the relay (the server hands it out as
the relay address), so tests can check what a relay operator would see.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from litedesk.proto import rendezvous_pb2 as rz

from .polling import wait_until
from .ports import free_port_pair
from .processes import TWISTD, stop_all, udp_exchange
from .xvfb import Xvfb, _die_with_parent

#: What the lab needs (for L{tests.support.skips.requires}): an X server for
#: the hosts, xclip (their clipboard), ImageMagick (test images) and xdotool.
NEEDS = ("Xvfb", "xclip", "display", "xdotool")
PROBE = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="(:probe:)")).SerializeToString()
VIEWER = [sys.executable, "-c", "from litedesk.viewer.cli import main; main()"]


class RecordingProxy:
    """A TCP forwarder on 127.0.0.1 that keeps every byte it forwards."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.captured = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.captured += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def snapshot(self) -> bytes:
        with self._lock:
            return bytes(self.captured)

    def close(self) -> None:
        self._stop = True
        self._listener.close()


class Lab:
    """One server, hosts on demand, one Xvfb; stopped when the process exits."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="litedesk-e2e-"))
        self.xvfb = Xvfb(1920, 1080, 24).start()
        self.env = dict(self.xvfb.env)
        self.port = free_port_pair()
        self.proxy = RecordingProxy(("127.0.0.1", self.port + 1))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.hosts: dict[str, str] = {}
        self._options: dict[str, tuple[tuple[str, ...], str]] = {}
        data = self.dir / "server"
        self._spawn(
            "relay",
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile",
                str(self.dir / "relay.log"),
                "litedesk-relay",
                "--data-dir",
                str(data),
                "--port",
                str(self.port),
                "--interface",
                "127.0.0.1",
                "--relay-servers",
                f"127.0.0.1:{self.proxy.port}",
            ],
        )
        self._wait_udp()
        self.key = (data / "id_ed25519.pub").read_text().strip()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def _wait_udp(self) -> None:
        def answers() -> bool:
            try:
                udp_exchange(PROBE, self.port, "127.0.0.1", timeout=0.3)
            except OSError:
                return False
            return True

        wait_until(answers, 30, 0.1, f"litedesk-relay to answer; see {self.dir}")

    def host(self, name: str, *extra: str, password: str = "e2e-password") -> str:
        """Start (once) a host agent called C{name}; return its id.

        The lab is shared by every test module of a process: a name asked for
        again with other options is a clash between modules, not a reuse.
        """
        options = (extra, password)
        if name in self.hosts:
            if self._options[name] != options:
                raise AssertionError(
                    f"lab host {name!r} already runs with {self._options[name]!r}, "
                    f"not {options!r}: give this one another name"
                )
            return self.hosts[name]
        self._options[name] = options
        cfg = self.dir / f"host-{name}"
        pwfile = self.dir / f"{name}.pw"
        pwfile.write_text(password)
        peer_id = f"e2e{abs(hash(name)) % 10**6:06d}"
        self._spawn(
            f"host-{name}",
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile",
                str(self.dir / f"host-{name}.log"),
                "litedesk-host",
                "--config-dir",
                str(cfg),
                "--rendezvous",
                f"127.0.0.1:{self.port}",
                "--key",
                self.key,
                "--id",
                peer_id,
                "--password-file",
                str(pwfile),
                "--display",
                str(self.xvfb.display),
                *extra,
            ],
        )
        log = self.dir / f"host-{name}.log"
        wait_until(
            lambda: log.exists() and f"as id {peer_id}" in log.read_text(),
            30,
            0.1,
            lambda: f"host {name} to register; see {log}:\n{log.read_text()[-3000:]}",
        )
        self.hosts[name] = peer_id
        return peer_id

    def viewer(
        self, peer_id: str, *args: str, password: str = "e2e-password", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            *VIEWER,
            peer_id,
            "--rendezvous",
            f"127.0.0.1:{self.port}",
            "--key",
            self.key,
            "--password",
            password,
            "--headless",
            *args,
        ]
        return subprocess.run(
            argv,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        stop_all(self.procs)
        self.proxy.close()
        self.xvfb.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


_lab: Lab | None = None


def lab() -> Lab:
    global _lab
    if _lab is None:
        _lab = Lab()
        atexit.register(_lab.stop)
    return _lab


def cleanup_env() -> None:
    os.environ.pop("LITEDESK_PASSWORD", None)
