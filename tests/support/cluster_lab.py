"""Two LiteDesk nodes on one PostgreSQL database, in network namespaces (issue 17 item 4).

The NAT lab (L{tests.support.natlab}) with three more namespaces on its
public bridge: PostgreSQL and two C{twistd litedesk-relay --cluster} nodes
sharing one database and one key pair::

    [h1 10.0.1.10]--br-lan [r1] 198.51.100.11 --+
                                                +-- [pub br0 198.51.100.1] probes: .100-.119
    [v2 10.0.2.20]--br-lan [r2] 198.51.100.12 --+-- [pg 198.51.100.5]   PostgreSQL
                                                +-- [na 198.51.100.21] node A
                                                +-- [nb 198.51.100.22] node B

Hosts and viewers sit behind the lab's cone NATs, as users do.  PostgreSQL
is Debian's, started by the lab inside its namespace (L{PostgresCluster}
with a lab address); the test process reads the database over its Unix
socket.  The key pair is made once with the server's own code and copied
into both data directories, as an operator copies id_ed25519 to every node.

The probes that speak the rendezvous protocol from inside the lab (many
C{RegisterPk} over UDP, C{PunchHoleRequest} and C{OnlineRequest} over TCP)
run this module as a program in the C{pub} namespace, from twenty source
addresses: hbbs refuses the 33rd C{RegisterPk} a minute from one address
and the server allows a burst of 20 punch requests per address, limits the
probes must stay under (docs/protocol.rst section 5.3).
"""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.keys import PUBLIC_FILE, SECRET_FILE, load_or_create

from .natlab import _WAIT_TCP, PUB_V4, PYTHON, SERVER_PORT, TWISTD, LiteDeskLab, NatLab, _run
from .polling import wait_until
from .postgres import PostgresCluster
from .xvfb import Xvfb

__all__ = ["NODES", "SOURCES", "ClusterLab", "ClusterNet"]

#: The cluster's namespaces (roles) and their addresses on the public bridge.
PG_ROLE = "pg"
PG_ADDR = "198.51.100.5"
NODES = {"A": ("na", "198.51.100.21"), "B": ("nb", "198.51.100.22")}
EXTRA = {PG_ROLE: PG_ADDR, **dict(NODES.values())}
LAB_NET = "198.51.100.0/24"
#: Probe source addresses in C{pub}: 20 x 10 ids stays under every per-address limit.
SOURCES = [f"198.51.100.{100 + i}" for i in range(20)]
DATABASE = "litedesk"
ROOT = Path(__file__).resolve().parents[2]


class ClusterNet(NatLab):
    """The NAT lab plus the C{pg}, C{na} and C{nb} namespaces on C{pub}'s bridge.

    Its namespaces are C{nl<pid>-c<role>}: apart from the NAT lab's
    C{nl<pid>-<role>}, which the NAT lab tests keep up for their whole
    process (the same trial worker may run both), and still removed by
    L{tests.support.natlab.remove_leftovers} once this process is gone.
    """

    def ns(self, role: str) -> str:
        if role not in EXTRA:
            super().ns(role)  # refuses unknown roles
        return f"{self.prefix}-c{role}"

    def namespaces(self) -> list[str]:
        out = _run(["ip", "netns", "list"], check=False).stdout
        names = {line.split()[0] for line in out.splitlines() if line.split()}
        return super().namespaces() + [self.ns(r) for r in EXTRA if self.ns(r) in names]

    def _build(self) -> None:
        super()._build()
        for role, addr in EXTRA.items():
            _run(["ip", "netns", "add", self.ns(role)])
            self._ip(role, "link", "set", "lo", "up")
            self._ip(
                role, "link", "add", "eth0", "type", "veth", "peer", "name", role, "netns",
                self.ns("pub"),
            )  # fmt: skip
            self._ip("pub", "link", "set", role, "master", "br0", "up")
            self._ip(role, "addr", "add", f"{addr}/24", "dev", "eth0")
            self._ip(role, "link", "set", "eth0", "up")
        for addr in SOURCES:
            self._ip("pub", "addr", "add", f"{addr}/24", "dev", "br0")


class ClusterLab(LiteDeskLab):
    """PostgreSQL, nodes A and B, hosts and viewers; L{down} removes everything.

    Hosts get both nodes (C{--rendezvous A,B}); a viewer asks the node
    named with L{via}.  Each node's log is C{node-A.log} / C{node-B.log}
    in the work directory.
    """

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(workdir, env, nat={"r1": "cone", "r2": "cone"})
        self.net = ClusterNet(nat=dict(self.net.nat))
        self.pg: PostgresCluster | None = None
        self.url = ""
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self._via: str | None = None

    # -- building and removing ----------------------------------------------------

    def up(self, together: bool = False) -> ClusterLab:
        """Build the lab and start both nodes, one after the other or C{together}
        (both start at once, as after a power cut, and create a new database's
        tables at the same time)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.net.up()
            # The nodes have IPv4 only; hosts and viewers connect through the NATs.
            self.net.set_ipv6(False)
            self.xvfb = Xvfb(1920, 1080, 24).start()
            self.env["DISPLAY"] = str(self.xvfb.display)
            self.pg = PostgresCluster(PG_ADDR, clients=LAB_NET, netns=self.net.ns(PG_ROLE))
            self.pg.create_database(DATABASE)
            self.url = self.pg.url(DATABASE)
            self._share_key()
            for node in NODES:
                self.start_node(node, wait=not together)
            for node in NODES:
                self.wait_node(node)
        except BaseException:
            self.down()
            raise
        return self

    def _share_key(self) -> None:
        """One key pair, made by the server's code, in every node's data directory."""
        first = self.data_dir("A")
        load_or_create(first)
        for node in NODES:
            if self.data_dir(node) != first:
                self.data_dir(node).mkdir(parents=True, exist_ok=True)
                for name in (SECRET_FILE, PUBLIC_FILE):
                    shutil.copy2(first / name, self.data_dir(node) / name)
        self.key = (first / PUBLIC_FILE).read_text().strip()

    def down(self) -> None:
        """Stop every process, PostgreSQL and Xvfb; delete the namespaces (idempotent)."""
        self.net.stop_processes()
        self.nodes.clear()
        pg, self.pg = self.pg, None
        if pg is not None:
            with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
                pg.stop()
        self.net.down()
        if self.xvfb is not None:
            self.xvfb.stop()
            self.xvfb = None

    # -- nodes --------------------------------------------------------------------

    @staticmethod
    def address(node: str) -> str:
        return NODES[node][1]

    def data_dir(self, node: str) -> Path:
        return self.dir / f"node-{node}"

    def node_log(self, node: str) -> str:
        """What C{node} wrote: its standard output and error, then its log."""
        files = [self.dir / f"node-{node}.out", self.dir / f"node-{node}.log"]
        return "".join(f.read_text(errors="replace") for f in files if f.exists())

    def start_node(self, node: str, wait: bool = True) -> None:
        """C{twistd litedesk-relay --cluster} for C{node} in its namespace."""
        role, _ = NODES[node]
        self.nodes[node] = self._spawn(
            role,
            f"node-{node}",
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile",
                str(self.dir / f"node-{node}.log"),
                "litedesk-relay",
                "--data-dir",
                str(self.data_dir(node)),
                "--port",
                str(SERVER_PORT),
                "--database",
                self.url,
                *self.cluster_options(node),
            ],
        )
        if wait:
            self.wait_node(node)

    def cluster_options(self, node: str) -> list[str]:
        """What makes C{node} one of the cluster (issue 17's option names)."""
        return [
            "--cluster",
            "--node-id",
            node,
            "--advertise",
            f"{self.address(node)}:{SERVER_PORT}",
        ]

    def wait_node(self, node: str) -> None:
        """Wait until C{node} listens on its rendezvous, NAT-test and relay ports."""
        role, addr = NODES[node]
        proc = self.nodes[node]

        def listens(port: int) -> bool:
            probe = [PYTHON, "-c", _WAIT_TCP, addr, str(port), "1"]
            return proc.poll() is not None or self.net.x(role, *probe, check=False).returncode == 0

        for port in (SERVER_PORT, SERVER_PORT - 1, SERVER_PORT + 1):
            wait_until(lambda: listens(port), 30, 0.1, f"node {node} to listen on {port}")  # noqa: B023
            if proc.poll() is not None:
                raise AssertionError(f"node {node} exited:\n{self.node_log(node)[-3000:]}")

    def kill_node(self, node: str) -> None:
        """SIGKILL C{node}, as a crash or a power cut would stop it."""
        proc = self.nodes.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    # -- hosts and viewers ---------------------------------------------------------

    @property
    def server(self) -> str:
        """The C{--rendezvous} hosts and viewers get: L{via}'s node(s), else all nodes."""
        return self._via or ",".join(self.address(n) for n in NODES)

    @contextlib.contextmanager
    def via(self, *nodes: str) -> Iterator[None]:
        """Hosts started and viewers run in this block name only C{nodes}."""
        saved = self._via
        self._via = ",".join(self.address(n) for n in nodes)
        try:
            yield
        finally:
            self._via = saved

    # -- probes from inside the lab ------------------------------------------------

    def probe(self, command: str, node: str, *args: Any) -> Any:
        """Run this module's C{command} in C{pub} against C{node}; its JSON answer."""
        argv = ["env", f"PYTHONPATH={ROOT}", PYTHON, "-m", __name__, command]
        argv += [json.dumps([self.address(node), *args])]
        out = self.net.x("pub", *argv)
        return json.loads(out.stdout)

    def register(self, node: str, ids: Sequence[str]) -> dict[str, list[str]]:
        """Send C{RegisterPk} for C{ids} to C{node}; the ids by answer (C{"OK"}, ...)."""
        answer: dict[str, list[str]] = self.probe("register", node, list(ids))
        return answer

    def punch(self, node: str, ids: Sequence[str]) -> dict[str, list[str]]:
        """A C{PunchHoleRequest} per id to C{node}; the ids by its answer.

        Answers are a failure's name (C{"OFFLINE"}, C{"ID_NOT_EXIST"}, ...),
        C{"ADDRESS"} (a host address to punch), C{"RELAY"} or C{"NO_ANSWER"}.
        """
        answer: dict[str, list[str]] = self.probe("punch", node, self.key, list(ids))
        return answer

    def online(self, node: str, ids: Sequence[str]) -> list[bool]:
        """C{node}'s C{OnlineRequest} answer (TCP, port 21115) for C{ids}."""
        answer: list[bool] = self.probe("online", node, list(ids))
        return answer


# -- the probes themselves (run in the lab by ClusterLab.probe) ----------------------

UUID = b"cluster-lab-uuid"
#: How long a probe waits for a node's answer (a node answers in milliseconds).
EXCHANGE_TIMEOUT = 5.0
PK = bytes(range(32))


def _register(server: str, ids: list[str]) -> dict[str, list[str]]:
    """RegisterPk per id, one socket each, resent while unanswered (as hosts do)."""
    waiting: dict[int, tuple[socket.socket, bytes, str]] = {}
    answers: dict[str, list[str]] = {}
    ep = select.epoll()
    try:
        for i, peer_id in enumerate(ids):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((SOURCES[i % len(SOURCES)], 0))
            msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=peer_id, uuid=UUID, pk=PK))
            data = msg.SerializeToString()
            s.sendto(data, (server, SERVER_PORT))
            waiting[s.fileno()] = (s, data, peer_id)
            ep.register(s.fileno(), select.EPOLLIN)
        deadline = time.monotonic() + 20
        while waiting and time.monotonic() < deadline:
            events = ep.poll(1.0)
            for fd, _ in events:
                s, _, peer_id = waiting.pop(fd)
                reply = rz.RendezvousMessage()
                reply.ParseFromString(s.recv(65536))
                if reply.WhichOneof("union") == "register_pk_response":
                    result = reply.register_pk_response.result
                    kind = rz.RegisterPkResponse.Result.Name(result)
                else:
                    kind = f"unexpected {reply.WhichOneof('union')}"
                answers.setdefault(kind, []).append(peer_id)
                ep.unregister(fd)
                s.close()
            if not events:
                for s, data, _ in waiting.values():
                    s.sendto(data, (server, SERVER_PORT))
        answers["NO_ANSWER"] = [peer_id for _, _, peer_id in waiting.values()]
    finally:
        ep.close()
        for s, _, _ in waiting.values():
            s.close()
    return answers


def _exchange(server: str, port: int, source: str, msg: rz.RendezvousMessage) -> Any:
    """Send one framed message over TCP; the first answer that is not a KeyExchange."""
    with socket.create_connection(
        (server, port), timeout=EXCHANGE_TIMEOUT, source_address=(source, 0)
    ) as s:
        s.sendall(encode_frame(msg.SerializeToString()))
        decoder = FrameDecoder()
        while True:
            data = s.recv(65536)
            if not data:
                return None
            for frame in decoder.feed(data):
                reply = rz.RendezvousMessage()
                reply.ParseFromString(frame)
                if reply.WhichOneof("union") != "key_exchange":
                    return reply


def _punch_one(server: str, key: str, peer_id: str, source: str) -> str:
    request = rz.PunchHoleRequest(id=peer_id, licence_key=key, nat_type=rz.ASYMMETRIC)
    try:
        reply = _exchange(
            server, SERVER_PORT, source, rz.RendezvousMessage(punch_hole_request=request)
        )
    except OSError as e:
        return f"NO_ANSWER ({e.__class__.__name__})"
    if reply is None:
        return "NO_ANSWER (closed)"
    kind = reply.WhichOneof("union")
    if kind == "relay_response":
        return "RELAY"
    if kind != "punch_hole_response":
        return f"unexpected {kind}"
    ph = reply.punch_hole_response
    if ph.socket_addr:
        return "ADDRESS"
    return ph.other_failure or rz.PunchHoleResponse.Failure.Name(ph.failure)


def _punch(server: str, key: str, ids: list[str]) -> dict[str, list[str]]:
    answers: dict[str, list[str]] = {}
    # All at once: a node that answers late (or never) costs one timeout, not one per id.
    with ThreadPoolExecutor(len(ids) or 1) as pool:
        results = pool.map(
            lambda a: _punch_one(server, key, *a),
            [(peer_id, SOURCES[i % len(SOURCES)]) for i, peer_id in enumerate(ids)],
        )
        for peer_id, kind in zip(ids, results, strict=True):
            answers.setdefault(kind, []).append(peer_id)
    return answers


def _online(server: str, ids: list[str]) -> list[bool]:
    msg = rz.RendezvousMessage(online_request=rz.OnlineRequest(id="clusterlab", peers=ids))
    reply = _exchange(server, SERVER_PORT - 1, PUB_V4, msg)
    states = reply.online_response.states if reply is not None else b""
    # A bitmap, most significant bit first (hbbs handle_online_request).
    return [
        bool(i // 8 < len(states) and states[i // 8] & (0x80 >> i % 8)) for i in range(len(ids))
    ]


def main(argv: list[str]) -> None:
    """C{register|punch|online JSON-ARGS}: print the probe's answer as JSON."""
    command, args = argv[0], json.loads(argv[1])
    probes: dict[str, Any] = {"register": _register, "punch": _punch, "online": _online}
    print(json.dumps(probes[command](*args)))


if __name__ == "__main__":
    main(sys.argv[1:])
