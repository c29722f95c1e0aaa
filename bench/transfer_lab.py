"""The processes bench/transfer.py measures, and the /proc probes it reads.

Everything here runs on loopback, as a child of the benchmark that dies with
it (C{PR_SET_PDEATHSIG}), and is stopped in reverse order by
L{Processes.stop_all}:

  - L{Sshd}: a private OpenSSH server (a generated ed25519 host key, a
    generated client key in its C{authorized_keys}, C{PermitRootLogin yes},
    C{StrictModes no}, C{UsePAM no}, C{ListenAddress 127.0.0.1}) for the
    C{scp} and C{ssh -L} references;
  - L{LiteDesk}: C{twistd litedesk-relay} with hbbr's bandwidth limits off
    (its default of 128 Mb/s per pair would measure the limit, not the
    relay), and one C{twistd litedesk-host} on an Xvfb with a file root and
    one allowed forward target;
  - L{RssSampler}: VmRSS of named processes every 0.2 s, in a thread.

It lives apart from bench/transfer.py so that one holds only what is
measured and how it is reported.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from procfs import rss_bytes  # noqa: E402

from litedesk.proto import rendezvous_pb2 as rz  # noqa: E402
from tests.support.ports import free_port, free_port_pair  # noqa: E402
from tests.support.processes import TWISTD, stop_all, udp_exchange  # noqa: E402
from tests.support.xvfb import _die_with_parent  # noqa: E402

#: The Debian packages the references need beyond tests/apt-packages.txt.
APT_HINT = "apt-get install -y openssh-server openssh-client curl"
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
VIEWER = [sys.executable, "-c", "from litedesk.viewer.cli import main; main()"]
PASSWORD = "transfer-bench-password"
#: TCP state "listening" in /proc/net/tcp.
TCP_LISTEN = "0A"
MIB = 1 << 20


class Processes:
    """Every long-running child this benchmark starts, each logging to C{NAME.out}."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.out", "ab")  # noqa: SIM115 - the child holds it
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM, then SIGKILL after 10 s; only this process, by its id."""
        stop_all([proc])
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def missing_tools(names: list[str]) -> list[str]:
    """The executables of C{names} (absolute paths or command names) not present."""
    return [
        n for n in names if not (os.access(n, os.X_OK) if n.startswith("/") else shutil.which(n))
    ]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    """Whether something listens on TCP C{port} (read from /proc, so no probe connection
    reaches the listener: a probe of C{litedesk-viewer --forward} would open a session)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    want = f":{port:04X}"
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[1].endswith(want) and fields[3] == TCP_LISTEN:
            return True
    return False


class RssSampler:
    """VmRSS of named processes every C{interval} seconds until L{stop}.

    A process that has exited simply stops adding samples, so its last
    sample is its RSS just before it ended.
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.samples: dict[str, list[int]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            rss = rss_bytes(pid)
            # Under 1 MiB: caught between exec and the interpreter's start.
            if rss is not None and rss >= MIB:
                self.samples[name].append(rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[str, list[int]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


# -- the OpenSSH references ----------------------------------------------------------


class Sshd:
    """A private sshd on 127.0.0.1 and the client options that reach it."""

    def __init__(self, workdir: Path, procs: Processes) -> None:
        self.dir = workdir / "ssh"
        self.procs = procs
        self.port = 0
        self.user = getpass.getuser()
        self.client_key = self.dir / "client_ed25519"
        self.made_privsep_dir: Path | None = None
        self.control = self.dir / "control"

    def start(self) -> None:
        self.dir.mkdir(mode=0o700)
        host_key = self.dir / "ssh_host_ed25519_key"
        for key in (host_key, self.client_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                check=True,
                stdin=subprocess.DEVNULL,
            )
        shutil.copy(f"{self.client_key}.pub", self.dir / "authorized_keys")
        config = self.dir / "sshd_config"
        config.write_text(
            "ListenAddress 127.0.0.1\n"
            f"HostKey {host_key}\n"
            "PidFile none\n"
            "PermitRootLogin yes\n"
            "PubkeyAuthentication yes\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "AllowTcpForwarding yes\n"
            # Debian's own sshd_config line: scp (OpenSSH 9) speaks SFTP.
            f"Subsystem sftp {SFTP_SERVER}\n"
        )
        self._privsep_dir()
        self.port = free_port()
        argv = [SSHD, "-D", "-e", "-f", str(config), "-p", str(self.port)]
        proc = self.procs.spawn("sshd", argv, dict(os.environ))
        wait_for(lambda: listening(self.port) or proc.poll() is not None, 20, "sshd")
        if proc.poll() is not None:
            log = (self.procs.workdir / "sshd.out").read_text()[-2000:]
            raise RuntimeError(f"sshd exited: {log}")

    def _privsep_dir(self) -> None:
        # sshd started as root needs its privilege separation directory, which
        # Debian's service unit creates at boot; a container has none.
        path = Path("/run/sshd")
        if os.geteuid() == 0 and not path.exists():
            path.mkdir(mode=0o755)
            self.made_privsep_dir = path

    def cleanup(self) -> None:
        if self.made_privsep_dir is not None:
            with contextlib.suppress(OSError):
                self.made_privsep_dir.rmdir()

    def options(self) -> list[str]:
        """The client options of every ssh/scp call (no user config, no prompts)."""
        return [
            "-F",
            "none",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-i",
            str(self.client_key),
        ]

    def ssh(self, *args: str) -> list[str]:
        return ["ssh", *self.options(), "-p", str(self.port), *args, f"{self.user}@127.0.0.1"]

    def open_master(self) -> None:
        """One ssh connection kept open (C{ControlMaster}) that every L{scp} runs over,
        so an scp's wall time is its transfer: no TCP connect, key exchange or login."""
        self.control = self.dir / "control"
        argv = self.ssh("-M", "-N", "-o", f"ControlPath={self.control}")
        proc = self.procs.spawn("ssh-master", argv, dict(os.environ))
        wait_for(lambda: self.control.exists() or proc.poll() is not None, 20, "the ssh master")
        if proc.poll() is not None:
            raise RuntimeError(f"ssh -M exited; see {self.procs.workdir}/ssh-master.out")

    def scp(self, src: str, dst: str) -> list[str]:
        """scp from C{src} to C{dst} over the master connection; C{remote:} is the sshd side."""
        src, dst = (p.replace("remote:", f"{self.user}@127.0.0.1:") for p in (src, dst))
        control = ["-o", f"ControlPath={self.control}"]
        return ["scp", "-q", *self.options(), *control, "-P", str(self.port), src, dst]

    def cipher(self) -> str:
        """The cipher a default client and this sshd agree on (from C{ssh -v})."""
        argv = self.ssh()
        argv[argv.index("LogLevel=ERROR")] = "LogLevel=DEBUG1"
        out = subprocess.run(
            [*argv, "true"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
        m = re.search(r"kex: server->client cipher: (\S+) MAC: (\S+)", out.stderr)
        return f"{m.group(1)} (MAC {m.group(2)})" if m else "unknown"

    def setup_seconds(self, tries: int = 3) -> float:
        """Median wall time of C{ssh HOST true}: what an scp of its own would spend
        before its first byte (printed for context; L{scp} runs over the master)."""
        times = []
        for _ in range(tries):
            t0 = time.monotonic()
            subprocess.run([*self.ssh(), "true"], check=True, timeout=30, stdin=subprocess.DEVNULL)
            times.append(time.monotonic() - t0)
        return sorted(times)[len(times) // 2]


# -- LiteDesk ------------------------------------------------------------------------


class LiteDesk:
    """The LiteDesk server (rendezvous + relay) and one host agent."""

    def __init__(self, workdir: Path, procs: Processes) -> None:
        self.workdir = workdir
        self.procs = procs
        self.port = 0
        self.key = ""
        self.peer_id = f"xfer{os.getpid() % 10**6:06d}"
        self.password_file = workdir / "host.pw"
        self.password_file.write_text(PASSWORD)
        self.host: subprocess.Popen[bytes] | None = None

    @property
    def relay_port(self) -> int:
        return self.port + 1

    def start_server(self) -> None:
        self.port = free_port_pair()
        data = self.workdir / "server"
        argv = [
            *TWISTD,
            "-n",
            "--pidfile=",
            "--logfile",
            str(self.workdir / "server.log"),
            "litedesk-relay",
            "--data-dir",
            str(data),
            "--port",
            str(self.port),
            "--interface",
            "127.0.0.1",
            "--relay-servers",
            f"127.0.0.1:{self.relay_port}",
            # hbbr's per-pair default (128 Mb/s) would be what the relay rows measure.
            "--single-bandwidth",
            "0",
            "--total-bandwidth",
            "0",
            "--limit-speed",
            "0",
        ]
        proc = self.procs.spawn("server", argv, dict(os.environ))
        probe = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="(:probe:)"))

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"litedesk-relay exited; see {self.workdir}/server.log")
            try:
                udp_exchange(probe.SerializeToString(), self.port, "127.0.0.1", timeout=0.3)
            except OSError:
                return False
            return listening(self.relay_port)

        wait_for(answers, 30, "litedesk-relay")
        self.key = (data / "id_ed25519.pub").read_text().strip()

    def start_host(self, display: str, file_root: Path, forward_to: int) -> None:
        log = self.workdir / "host.log"
        argv = [
            *TWISTD,
            "-n",
            "--pidfile=",
            "--logfile",
            str(log),
            "litedesk-host",
            "--config-dir",
            str(self.workdir / "host-config"),
            "--rendezvous",
            f"127.0.0.1:{self.port}",
            "--key",
            self.key,
            "--id",
            self.peer_id,
            "--password-file",
            str(self.password_file),
            "--display",
            display,
            "--file-root",
            str(file_root),
            "--allow-forward",
            f"127.0.0.1:{forward_to}",
        ]
        host = self.host = self.procs.spawn("host", argv, dict(os.environ, DISPLAY=display))

        def registered() -> bool:
            if host.poll() is not None:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"litedesk-host exited:\n{tail}")
            return log.exists() and f"as id {self.peer_id}" in log.read_text()

        wait_for(registered, 30, "litedesk-host to register")

    def viewer(self, *extra: str, relay: bool) -> list[str]:
        """The viewer command line of one headless session."""
        return [
            *VIEWER,
            self.peer_id,
            "--rendezvous",
            f"127.0.0.1:{self.port}",
            "--key",
            self.key,
            "--password-file",
            str(self.password_file),
            "--headless",
            *(["--force-relay"] if relay else []),
            "--stats-json",
            *extra,
        ]
