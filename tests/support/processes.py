"""The real processes the end-to-end, lab and relay tests start: twistd, a
running litedesk-relay, stopping them all, and the socket exchanges used to
check that they answer."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.bytescodec import FrameDecoder


def stop_all(procs: Iterable[subprocess.Popen[Any]], timeout: float = 10.0) -> None:
    """SIGTERM every live process first (so they stop in parallel), then wait,
    killing any that does not exit within C{timeout}."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def udp_exchange(data: bytes, port: int, source: str, timeout: float = 3.0) -> bytes:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.settimeout(timeout)
    try:
        s.sendto(data, ("127.0.0.1", port))
        return s.recvfrom(65536)[0]
    finally:
        s.close()


def recv_frame(s: socket.socket, decoder: FrameDecoder) -> bytes:
    while True:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed")
        frames = decoder.feed(data)
        if frames:
            return frames[0]


def _tail(log: Path, lines: int = 3) -> str:
    try:
        return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


class RelayProcess:
    def __init__(self, data_dir: Path, port: int, log: Path, *extra: str) -> None:
        self.port = port
        args = [
            *TWISTD,
            "-n",
            "--pidfile=",
            "--logfile",
            str(log),
            "litedesk-relay",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--interface",
            "127.0.0.1",
            *extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            try:
                udp_exchange(
                    rz.RendezvousMessage(
                        register_peer=rz.RegisterPeer(id="(:probe:)")
                    ).SerializeToString(),
                    port,
                    "127.0.0.1",
                    timeout=0.2,
                )
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    if self.proc.poll() is None:  # else reading stderr waits for ever
                        self.proc.kill()
                        self.proc.wait(10)
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    # twistd logs a failed start (a port taken between the
                    # test's check and the bind, say) to its log file.
                    raise RuntimeError(f"litedesk-relay did not start: {err}{_tail(log)}") from None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_all([self.proc])
        if self.proc.stderr:
            self.proc.stderr.close()


def litedesk_admin(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """C{litedesk-admin --data-dir DATA_DIR ARGS} as an operator runs it: its own process,
    the password (if any) on standard input."""
    return subprocess.run(
        [sys.executable, "-m", "litedesk.ops.admin_cli", "--data-dir", str(data_dir), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
