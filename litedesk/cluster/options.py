"""C{twistd litedesk-relay}'s cluster options, declared here to keep
L{litedesk.server.options} to the single-node server."""

from __future__ import annotations

import re
import socket
from typing import Any

from twisted.python import usage

from litedesk.wire.address import DEFAULT_RENDEZVOUS_PORT, parse_host_port

__all__ = ["CLUSTER_OPT_FLAGS", "CLUSTER_OPT_PARAMETERS", "advertised", "check_cluster_options"]

CLUSTER_OPT_FLAGS: list[list[Any]] = [
    [
        "cluster",
        None,
        "Run as one node of several sharing the --database (PostgreSQL): any node answers "
        "for any host, and clients are given every node (docs/cluster.rst).",
    ],
]

CLUSTER_OPT_PARAMETERS: list[list[Any]] = [
    [
        "node-id",
        None,
        None,
        "This node's name in the cluster, unique among its nodes [default: the host name].",
    ],
    [
        "advertise",
        None,
        None,
        "This node's rendezvous address (HOST[:PORT]) as clients reach it; every node hands "
        "all of them out in ConfigUpdate [default: --public-host or the host name, and --port].",
    ],
]

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def check_cluster_options(opts: Any, port: int) -> None:
    """Fill the cluster defaults and refuse what cannot work."""
    if not opts["cluster"]:
        return
    if not opts["database"]:
        raise usage.UsageError(
            "--cluster needs --database postgresql://...: the nodes share that database"
        )
    if opts["relay-only"]:
        raise usage.UsageError("--cluster is for rendezvous nodes: drop --relay-only")
    if opts["node-id"] is None:
        opts["node-id"] = socket.gethostname().split(".")[0] or "node"
    if not _NODE_ID.fullmatch(opts["node-id"]):
        raise usage.UsageError(
            f"--node-id {opts['node-id']!r}: use 1-63 of A-Z a-z 0-9 _ . - from a letter or digit"
        )
    # No --advertise: the assembly uses the public host it works out once
    # for the whole server (the host name may take a DNS lookup).
    if opts["advertise"] is not None:
        try:
            parse_host_port(opts["advertise"], port)
        except ValueError as e:
            raise usage.UsageError(f"--advertise {opts['advertise']!r}: {e}") from None


def advertised(opts: Any, public_host: str, port: int) -> str:
    """This node's address for clients: C{--advertise}, else C{public_host}[:port]."""
    if opts["advertise"] is not None:
        return str(opts["advertise"])
    return public_host if port == DEFAULT_RENDEZVOUS_PORT else f"{public_host}:{port}"
