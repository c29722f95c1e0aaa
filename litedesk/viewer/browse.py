# -*- test-case-name: tests.test_viewer_browse -*-
"""Browse hosts: the server's LiteDesk v1 discovery list and the LAN.

Two ways to find a host to connect to, both optional:

  - B{Server list.}  A host agent started with C{--discoverable} keeps one
    connection to the server's LiteDesk v1 JSON discovery listener (see
    L{litedesk.discovery.protocol}) registered as C{{"peer_id": ID,
    "peer_type": "host"}}; L{litedesk.host.discoverable} does that,
    reconnecting with backoff.  The viewer's connect dialog asks the same listener for
    C{list_peers} (L{list_hosts}) and shows the entries whose type is
    C{"host"}.  The server only runs this listener with C{--discovery}; a
    refused connection just means "no list".
  - B{LAN.}  RustDesk's peer-to-peer discovery: a viewer broadcasts a
    C{PeerDiscovery{cmd: "ping"}} (a bare rendezvous protobuf in one UDP
    datagram) to port 21119 and listening hosts answer
    C{PeerDiscovery{cmd: "pong", id, hostname, platform}}
    (the host's L{litedesk.host.discoverable.LanResponder}; L{lan_search}
    here).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.discovery.client import DISCOVERY_PORT, HOST_TYPE, LAN_PORT, JsonClient
from litedesk.proto import rendezvous_pb2 as rz

_log = Logger(namespace="litedesk.viewer.browse")


@dataclass(frozen=True)
class FoundHost:
    """One host the dialog can offer; C{source} is "server" or "lan"."""

    peer_id: str
    source: str
    address: str = ""
    name: str = ""
    platform: str = ""


async def list_hosts(
    reactor: Any, host: str, port: int = DISCOVERY_PORT, timeout: float = 5.0
) -> list[FoundHost]:
    """The hosts registered with the server's discovery listener.

    @raise ConnectionError: when the listener cannot be reached or does not
        answer within C{timeout} seconds.
    """
    answer: Deferred[dict[str, Any]] = Deferred()

    def got(msg: dict[str, Any]) -> None:
        if msg.get("type") in ("peer_list", "error") and not answer.called:
            answer.callback(msg)

    client = JsonClient(got)
    ep = HostnameEndpoint(reactor, host, port, timeout=timeout)
    from twisted.internet.endpoints import connectProtocol

    try:
        await connectProtocol(ep, client)
    except Exception as e:
        raise ConnectionError(f"discovery server {host}:{port}: {e}") from None

    def lost(reason: Failure) -> None:
        if not answer.called:
            answer.errback(ConnectionError("discovery server closed the connection"))

    client.on_lost = lost
    client.send({"type": "list_peers"})
    answer.addTimeout(timeout, reactor)
    try:
        msg = await answer
    except ConnectionError:
        raise
    except Exception:
        raise ConnectionError(f"discovery server {host}:{port} did not answer") from None
    finally:
        if client.transport is not None:
            client.transport.loseConnection()
    if msg.get("type") == "error":
        raise ConnectionError(f"discovery server: {msg.get('reason', 'error')}")
    return _hosts_in(msg)


def _hosts_in(peer_list: dict[str, Any]) -> list[FoundHost]:
    """The hosts in a C{peer_list} answer; entries that are not well-formed hosts are skipped."""
    found: list[FoundHost] = []
    for p in peer_list.get("peers", []) or []:
        if not isinstance(p, dict) or p.get("peer_type") != HOST_TYPE:
            continue
        pid = p.get("peer_id")
        if isinstance(pid, str) and pid:
            ip, pport = p.get("public_ip", ""), p.get("public_port", "")
            found.append(FoundHost(pid, "server", f"{ip}:{pport}" if ip else ""))
    return found


class _LanSearch(DatagramProtocol):
    def __init__(self) -> None:
        self.found: dict[str, FoundHost] = {}

    def startProtocol(self) -> None:
        assert self.transport is not None
        self.transport.setBroadcastAllowed(True)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        msg = rz.RendezvousMessage()
        try:
            msg.ParseFromString(data)
        except Exception:
            return
        if msg.WhichOneof("union") != "peer_discovery":
            return
        pd = msg.peer_discovery
        if pd.cmd == "pong" and pd.id:
            self.found[pd.id] = FoundHost(pd.id, "lan", addr[0], pd.hostname, pd.platform)


async def lan_search(
    reactor: Any,
    port: int = LAN_PORT,
    wait: float = 1.0,
    targets: tuple[str, ...] = ("255.255.255.255",),
) -> list[FoundHost]:
    """Broadcast a discovery ping and collect the pongs for C{wait} seconds."""
    from twisted.internet.task import deferLater

    proto = _LanSearch()
    udp = reactor.listenUDP(0, proto)
    try:
        ping = rz.RendezvousMessage(
            peer_discovery=rz.PeerDiscovery(cmd="ping", id="", hostname=socket.gethostname())
        ).SerializeToString()
        for t in targets:
            try:
                udp.write(ping, (t, port))
            except OSError as e:
                _log.debug("LAN discovery ping to {target} failed: {error}", target=t, error=e)
        await deferLater(reactor, wait, lambda: None)
    finally:
        udp.stopListening()
    return sorted(proto.found.values(), key=lambda h: h.peer_id)
