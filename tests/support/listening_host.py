"""A real C{twistd litedesk-host --listen} on its own Xvfb, and a direct viewer for it.

The hostile-client tests and the RustDesk-client tests both need one host
agent reachable on a loopback port without any server, with a password file,
and a headless LiteDesk viewer that takes a screenshot through it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .e2e_lab import VIEWER
from .polling import WaitTimeout, wait_until
from .ports import free_port_pair
from .processes import TWISTD, stop_all
from .xvfb import Xvfb


class ListeningHost:
    """The agent with C{--listen tcp:PORT:interface=127.0.0.1} and C{extra} options.

    @ivar dir: its temporary directory (config dir C{cfg}, C{host.log}, the
        password file C{pw}); removed by L{stop}.
    """

    def __init__(
        self,
        password: str,
        *extra: str,
        prefix: str = "litedesk-host-",
        preexec_fn: Callable[[], None] | None = None,
        xvfb: Xvfb | None = None,
    ) -> None:
        """
        @param xvfb: a started X server for the host (it is stopped with the
            host); default: a private 640x480 one.
        """
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.xvfb = xvfb if xvfb is not None else Xvfb(640, 480, 24).start()
        self.env = dict(self.xvfb.env)
        self.port = free_port_pair()
        self.pwfile = self.dir / "pw"
        self.pwfile.write_text(password)
        self.log = self.dir / "host.log"
        with open(self.dir / "host.out", "wb") as out:
            self.proc = subprocess.Popen(
                [
                    *TWISTD,
                    "-n",
                    "--pidfile=",
                    "--logfile",
                    str(self.log),
                    "litedesk-host",
                    "--config-dir",
                    str(self.dir / "cfg"),
                    "--listen",
                    f"tcp:{self.port}:interface=127.0.0.1",
                    "--password-file",
                    str(self.pwfile),
                    "--display",
                    str(self.xvfb.display),
                    *extra,
                ],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=preexec_fn,
            )
        try:
            wait_until(self._listening, 30, message="the host agent listening")
        except (WaitTimeout, RuntimeError):
            tail = self.log_text()[-2000:]
            self.stop()
            raise RuntimeError(f"litedesk-host did not start listening: {tail}") from None

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("litedesk-host exited")
        return "starting on" in self.log_text()

    def viewer(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The headless LiteDesk viewer, directly to this host, with C{args}."""
        return subprocess.run(
            [
                *VIEWER,
                f"127.0.0.1:{self.port}",
                "--password-file",
                str(self.pwfile),
                "--headless",
                "--known-hosts",
                str(self.dir / "known_hosts"),
                *args,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
        )

    def screenshot(self, shot: Path) -> tuple[subprocess.CompletedProcess[str], float]:
        """Run the headless viewer for one screenshot; return it and its duration."""
        start = time.monotonic()
        result = self.viewer("--screenshot", str(shot))
        return result, time.monotonic() - start

    def stop(self) -> None:
        stop_all([self.proc])
        self.xvfb.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
