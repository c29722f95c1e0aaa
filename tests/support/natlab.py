"""A NAT lab in network namespaces, for end-to-end tests of connection paths.

The topology follows docs/test-lab.rst section A::

    [h1 10.0.1.10]--+                                        +--[v2 10.0.2.20]
    [h2 10.0.1.11]--br-lan [r1] wan 198.51.100.11 --+        |
    [v1 10.0.1.20]--+   NAT+fw                      |  br-lan [r2] wan 198.51.100.12
                                        [pub br0 198.51.100.1]      NAT+fw

(h2 is a second LAN host next to h1 and v1, e.g. for LAN discovery of two hosts.)

IPv6 is routed without NAT: pub 2001:db8::1, routers 2001:db8::11 / ::12,
LANs 2001:db8:1::/64 and 2001:db8:2::/64, every address with C{nodad}; the
routers keep a stateful IPv6 firewall (outbound opens the pinhole).

Each router does NAT on its WAN side: C{cone} is plain C{MASQUERADE}
(port-preserving, endpoint-independent mapping), C{symmetric} is
C{MASQUERADE --random-fully} (a new port per destination).  Both keep the
WAN-side C{INPUT} drop real routers have; without it simultaneous punching
fails for reasons that have nothing to do with the code under test (A.4).

Only namespaces created here are touched: every veth is created between two
lab namespaces, the root namespace gets no interface, route, sysctl or rule.
Names are C{nl<pid>-<role>} (C{nl<pid>-<n>-<role>} for a process's n-th lab,
so that two modules' labs in one test process never collide);
L{NatLab.up} first removes the namespaces of
earlier runs whose process is gone, so an aborted run leaves nothing behind
for long.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .polling import wait_until
from .processes import stop_all
from .xvfb import Xvfb, _die_with_parent

ROLES = ("pub", "r1", "r2", "h1", "h2", "v1", "v2")
PUB_V4 = "198.51.100.1"
PUB_V6 = "2001:db8::1"
WAN_V4 = {"r1": "198.51.100.11", "r2": "198.51.100.12"}
WAN_V6 = {"r1": "2001:db8::11", "r2": "2001:db8::12"}
LAN_V4 = {"h1": "10.0.1.10", "h2": "10.0.1.11", "v1": "10.0.1.20", "v2": "10.0.2.20"}
LAN_V6 = {
    "h1": "2001:db8:1::10",
    "h2": "2001:db8:1::11",
    "v1": "2001:db8:1::20",
    "v2": "2001:db8:2::20",
}
ROUTER_OF = {"h1": "r1", "h2": "r1", "v1": "r1", "v2": "r2"}
_LAN_NET = {"r1": "1", "r2": "2"}
NAT_MODES = ("cone", "symmetric", "none")
_NAME = re.compile(r"^nl(\d+)-[a-z0-9-]+$")
#: Labs made in this process so far: the second and later get a suffix, so
#: that two test modules' labs in one trial worker never share names (the
#: second's up() would tear down the first's namespaces).
_LABS_MADE = itertools.count(1)


def _default_prefix() -> str:
    n = next(_LABS_MADE)
    return f"nl{os.getpid()}" if n == 1 else f"nl{os.getpid()}-{n}"


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class LabError(Exception):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(name: str) -> None:
    """Kill what still runs in C{name}, then delete it."""
    pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _run(["ip", "netns", "delete", name], check=False)


def remove_leftovers() -> list[str]:
    """Delete lab namespaces whose creating process has exited; return their names."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _delete_namespace(name)
            removed.append(name)
    return removed


@dataclass
class NatLab:
    """Six namespaces; C{up()} builds them, C{down()} removes them (both idempotent)."""

    prefix: str = field(default_factory=_default_prefix)
    nat: dict[str, str] = field(default_factory=lambda: {"r1": "cone", "r2": "cone"})
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, role: str) -> str:
        """The namespace name for a role (pub, r1, r2, h1, v1, v2)."""
        if role not in ROLES:
            raise ValueError(f"unknown lab role {role!r}")
        return f"{self.prefix}-{role}"

    # -- building --------------------------------------------------------------

    def up(self) -> NatLab:
        remove_leftovers()
        self.down()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _ip(self, role: str, *args: str) -> None:
        _run(["ip", "-n", self.ns(role), *args])

    def x(self, role: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside a role's namespace."""
        return _run(["ip", "netns", "exec", self.ns(role), *argv], check=check)

    def _build(self) -> None:
        for role in ROLES:
            _run(["ip", "netns", "add", self.ns(role)])
            self._ip(role, "link", "set", "lo", "up")
        self._ip("pub", "link", "add", "br0", "type", "bridge")
        self._ip("pub", "addr", "add", f"{PUB_V4}/24", "dev", "br0")
        self._ip("pub", "addr", "add", f"{PUB_V6}/64", "dev", "br0", "nodad")
        self._ip("pub", "link", "set", "br0", "up")
        # pub is the internet's core for IPv6: it routes between the LAN prefixes.
        self.x("pub", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        for r in ("r1", "r2"):
            net = _LAN_NET[r]
            self._ip(
                r, "link", "add", "wan", "type", "veth", "peer", "name", r, "netns", self.ns("pub")
            )
            self._ip("pub", "link", "set", r, "master", "br0", "up")
            self._ip(r, "addr", "add", f"{WAN_V4[r]}/24", "dev", "wan")
            self._ip(r, "addr", "add", f"{WAN_V6[r]}/64", "dev", "wan", "nodad")
            self._ip(r, "link", "set", "wan", "up")
            self._ip(r, "link", "add", "br-lan", "type", "bridge")
            self._ip(r, "addr", "add", f"10.0.{net}.1/24", "dev", "br-lan")
            self._ip(r, "addr", "add", f"2001:db8:{net}::1/64", "dev", "br-lan", "nodad")
            self._ip(r, "link", "set", "br-lan", "up")
            self._ip(r, "route", "add", "default", "via", PUB_V4)
            self._ip(r, "-6", "route", "add", "default", "via", PUB_V6)
            self._ip("pub", "-6", "route", "add", f"2001:db8:{net}::/64", "via", WAN_V6[r])
            self.x(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            self.x(r, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
            self._firewall(r)
            self.set_nat(r, self.nat.get(r, "cone"))
        for h, r in ROUTER_OF.items():
            net = _LAN_NET[r]
            self._ip(
                h, "link", "add", "eth0", "type", "veth", "peer", "name", h, "netns", self.ns(r)
            )
            self._ip(r, "link", "set", h, "master", "br-lan", "up")
            self._ip(h, "addr", "add", f"{LAN_V4[h]}/24", "dev", "eth0")
            self._ip(h, "addr", "add", f"{LAN_V6[h]}/64", "dev", "eth0", "nodad")
            self._ip(h, "link", "set", "eth0", "up")
            self._ip(h, "route", "add", "default", "via", f"10.0.{net}.1")
            self._ip(h, "-6", "route", "add", "default", "via", f"2001:db8:{net}::1")

    def _firewall(self, r: str) -> None:
        for tool in ("iptables", "ip6tables"):
            icmp = "icmp" if tool == "iptables" else "ipv6-icmp"
            for rule in (
                [
                    "-A",
                    "INPUT",
                    "-i",
                    "wan",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
                ["-A", "INPUT", "-i", "wan", "-p", icmp, "-j", "ACCEPT"],
                # The WAN-side drop real routers have (docs/test-lab.rst A.4).
                ["-A", "INPUT", "-i", "wan", "-j", "DROP"],
                [
                    "-A",
                    "FORWARD",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
                ["-A", "FORWARD", "-i", "br-lan", "-j", "ACCEPT"],
                ["-A", "FORWARD", "-p", icmp, "-j", "ACCEPT"],
                ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"],
                ["-P", "FORWARD", "DROP"],
            ):
                if tool == "ip6tables" and "DNAT" in rule:
                    continue
                self.x(r, tool, *rule)

    def set_nat(self, router: str, mode: str) -> None:
        """C{cone} (MASQUERADE), C{symmetric} (--random-fully) or C{none} on a router."""
        if mode not in NAT_MODES:
            raise ValueError(f"unknown NAT mode {mode!r}")
        self.x(router, "iptables", "-t", "nat", "-F", "POSTROUTING")
        if mode != "none":
            # Symmetric: a new random port per destination (endpoint-dependent mapping).
            random = ["--random-fully"] if mode == "symmetric" else []
            self.x(
                router,
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "wan",
                "-j",
                "MASQUERADE",
                *random,
            )
        if shutil.which("conntrack"):
            self.x(router, "conntrack", "-F", check=False)
        self.nat[router] = mode

    def set_ipv6(self, on: bool) -> None:
        """Give the LAN hosts an IPv6 default route (on) or none (IPv4-only hosts)."""
        for h, r in ROUTER_OF.items():
            self.x(h, "ip", "-6", "route", "del", "default", check=False)
            if on:
                gw = f"2001:db8:{_LAN_NET[r]}::1"
                self.x(h, "ip", "-6", "route", "add", "default", "via", gw)

    # -- processes ---------------------------------------------------------------

    def popen(self, role: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a process in a role's namespace; L{down} stops it."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.ns(role), *argv], **kwargs
        )
        self.procs.append(proc)
        return proc

    def stop_processes(self) -> None:
        stop_all(self.procs)
        self.procs.clear()

    def namespaces(self) -> list[str]:
        """The lab's namespaces that exist right now."""
        out = _run(["ip", "netns", "list"], check=False).stdout
        names = {line.split()[0] for line in out.splitlines() if line.split()}
        return [self.ns(r) for r in ROLES if self.ns(r) in names]

    def down(self) -> None:
        self.stop_processes()
        for name in self.namespaces():
            _delete_namespace(name)


# -- LiteDesk processes in the lab ------------------------------------------------

PYTHON = sys.executable
TWISTD = [PYTHON, "-c", "from twisted.scripts.twistd import run; run()"]
VIEWER = [PYTHON, "-c", "from litedesk.viewer.cli import main; main()"]
SERVER_PORT = 21116

_WAIT_TCP = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit('nothing listens on %s:%s' % (sys.argv[1], sys.argv[2]))
        time.sleep(0.05)
"""


class LiteDeskLab:
    """A NAT lab with C{twistd litedesk-relay} in C{pub}, hosts and viewers behind routers.

    C{env} is passed to every process (set C{DISPLAY} there: X clients in a
    namespace fall back to the filesystem socket of the root namespace's
    Xvfb, docs/test-lab.rst A.5).
    """

    def __init__(self, workdir: Path, env: dict[str, str], nat: dict[str, str] | None = None):
        self.dir = workdir
        self.env = env
        self.net = NatLab(nat=dict(nat or {"r1": "cone", "r2": "cone"}))
        self.key = ""
        self.server_proc: subprocess.Popen[bytes] | None = None
        self.hosts: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self.xvfb: Xvfb | None = None
        self._count = 0

    def up(self) -> LiteDeskLab:
        self.net.up()
        try:
            self.start_server()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        self.net.down()

    def _spawn(self, role: str, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.out", "ab")  # noqa: SIM115 - closed below, child keeps it
        try:
            return self.net.popen(
                role,
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def wait_tcp(self, role: str, host: str, port: int, timeout: float = 30.0) -> None:
        self.net.x(role, PYTHON, "-c", _WAIT_TCP, host, str(port), str(timeout))

    @property
    def server(self) -> str:
        return f"{PUB_V4}:{SERVER_PORT}"

    def start_server(self) -> None:
        data = self.dir / "server"
        self.server_proc = self._spawn(
            "pub",
            "server",
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile",
                str(self.dir / "server.log"),
                "litedesk-relay",
                "--data-dir",
                str(data),
                "--port",
                str(SERVER_PORT),
            ],
        )
        for port in (SERVER_PORT, SERVER_PORT - 1, SERVER_PORT + 1):
            self.wait_tcp("pub", PUB_V4, port)
        self.key = (data / "id_ed25519.pub").read_text().strip()

    def stop_server(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (C{signal.SIGKILL}: as if it crashed)."""
        if self.server_proc is not None and self.server_proc.poll() is None:
            self.server_proc.send_signal(sig)
            self.server_proc.wait(10)
        self.server_proc = None

    def host(self, role: str, *extra: str, password: str = "lab-password") -> str:
        """Start a host agent in C{role}'s namespace; return its id once registered."""
        self._count += 1
        name = f"host{self._count}-{role}"
        peer_id = f"lab{os.getpid() % 10**5:05d}{self._count:02d}"
        pwfile = self.dir / f"{name}.pw"
        pwfile.write_text(password)
        argv = [
            *TWISTD,
            "-n",
            "--pidfile=",
            "--logfile",
            str(self.dir / f"{name}.log"),
            "litedesk-host",
            "--config-dir",
            str(self.dir / name),
            "--rendezvous",
            self.server,
            "--key",
            self.key,
            "--id",
            peer_id,
            "--password-file",
            str(pwfile),
        ]
        if "DISPLAY" in self.env:
            argv += ["--display", self.env["DISPLAY"]]
        proc = self._spawn(role, name, [*argv, *extra])
        self.hosts[peer_id] = (name, proc)
        log = self.dir / f"{name}.log"
        registered = wait_until(
            lambda: (
                (log.exists() and f"as id {peer_id}" in log.read_text()) or proc.poll() is not None
            ),
            30,
            0.1,
            f"the host in {role} to register; see {log}",
        )
        if registered and proc.poll() is None:
            return peer_id
        raise LabError(f"host in {role} did not register (it exited); see {log}")

    def stop_host(self, peer_id: str) -> None:
        _, proc = self.hosts[peer_id]
        stop_all([proc])

    def host_log(self, peer_id: str) -> str:
        name, _ = self.hosts[peer_id]
        return (self.dir / f"{name}.log").read_text()

    def viewer_argv(self, role: str, peer_id: str, *args: str, password: str) -> list[str]:
        return [
            "ip",
            "netns",
            "exec",
            self.net.ns(role),
            *VIEWER,
            peer_id,
            "--rendezvous",
            self.server,
            "--key",
            self.key,
            "--password",
            password,
            "--headless",
            # The lab changes NAT types between tests: no NAT type kept from
            # an earlier viewer (tests/test_viewer_nat_cache.py tests keeping).
            "--nat-ttl",
            "0",
            *args,
        ]

    def viewer(
        self,
        role: str,
        peer_id: str,
        *args: str,
        password: str = "lab-password",
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run C{litedesk-viewer --headless} in C{role}'s namespace to completion."""
        return subprocess.run(
            self.viewer_argv(role, peer_id, *args, password=password),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def viewer_popen(
        self, role: str, peer_id: str, *args: str, password: str = "lab-password"
    ) -> subprocess.Popen[str]:
        """Start a headless viewer in the background (stdout/stderr piped)."""
        proc = subprocess.Popen(
            self.viewer_argv(role, peer_id, *args, password=password),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=_die_with_parent,
        )
        self.net.procs.append(proc)  # type: ignore[arg-type]
        return proc
