"""C{GET /metrics}: Prometheus text read from the live server at scrape time.

L{ServerCollector} holds no counts of its own: each scrape reads the
rendezvous server's C{counters} and C{punch_stats}, the registry, the relay
table and refusal counts, the server's L{litedesk.ops.counters.OpsCounters} and the database
file, so nothing is counted twice and nothing can drift.  Every name starts
with C{litedesk_}; no label names a peer (ids and addresses would make the
series unbounded), and every label takes values from a fixed table
(L{REFUSAL_REASONS}, L{RELAY_REFUSAL_REASONS}, L{PUNCH_RESULTS},
L{LOGIN_OUTCOMES}).

A scrape costs the same at a million registered hosts as at ten: nothing
here walks the peers (the online count is L{Registry.online_count}, kept as
hosts register), and what is walked is bounded by open connections (the
live relay pairs' bytes).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource

from litedesk.ops.access import IPNetwork, client_allowed
from litedesk.ops.counters import LOGIN_OUTCOMES
from litedesk.rendezvous.punch_stats import PUNCH_RESULTS, PunchStats

if TYPE_CHECKING:
    from litedesk.server.assembly import LiteDeskServer

__all__ = ["REFUSAL_REASONS", "RELAY_REFUSAL_REASONS", "MetricsResource", "ServerCollector"]

#: The C{reason} label of C{litedesk_refusals_total} and the rendezvous
#: counter each value reads.  A fixed table: a new reason is a code change.
REFUSAL_REASONS: dict[str, str] = {
    "registration": "register_pk_refused",
    "licence_mismatch": "licence_mismatch",
    "connection_limit": "requests_refused_connection",
    "request_rate": "requests_refused_rate",
    "stream_hosts": "stream_hosts_refused",
    "id_change": "id_changes_refused",
    "udp_punch": "udp_punch_sent_refused",
    # Counted by the --require-login refusal of punch and relay requests.
    "login_required": "login_required",
}

#: The relay's refusals at accept in C{litedesk_refusals_total}: reason
#: label and the C{Refusal.limit} (L{litedesk.relay.table.REFUSAL_LIMITS}).
RELAY_REFUSAL_REASONS: dict[str, str] = {
    "relay_blocklist": "blocklist",
    "relay_connections_per_ip": "max-connections-per-ip",
    "relay_unpaired": "max-unpaired",
}

#: The sign-in counters: metric name (without C{_total}), help, L{OpsCounters} kind.
_LOGINS: tuple[tuple[str, str, str], ...] = (
    ("litedesk_api_logins", "RustDesk API logins by outcome.", "api"),
    ("litedesk_console_sign_ins", "Web console sign-ins by outcome.", "console"),
)

#: Plain counters: metric name (without C{_total}), help, rendezvous counter.
_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("litedesk_punch_requests", "Punch hole requests received (TCP).", "punch_requests"),
    ("litedesk_relay_requests", "Relay requests received.", "relay_requests"),
    ("litedesk_udp_punch_requests", "UDP punch requests brokered.", "udp_punch_requests"),
    ("litedesk_udp_datagrams", "Rendezvous UDP datagrams received.", "udp_datagrams"),
    (
        "litedesk_cluster_forwarded_out",
        "Requests forwarded to the cluster node of their host.",
        "cluster_forwarded_out",
    ),
    (
        "litedesk_cluster_forwarded_in",
        "Requests other cluster nodes forwarded here for a host of this node.",
        "cluster_forwarded_in",
    ),
)


class ServerCollector(Collector):
    """Reads a L{LiteDeskServer}'s parts each time it is collected.

    @param top: the server; its parts left out by the options (C{relay}
        with C{--no-relay}, the rendezvous parts with C{--relay-only}) are
        simply not reported.
    @param clock: for the registry's notion of "online now".
    @param db_path: the peer database, whose size (with its WAL) is a gauge.
    """

    def __init__(self, top: LiteDeskServer, clock: IReactorTime, db_path: str | None) -> None:
        self._top = top
        self._clock = clock
        self._db_path = db_path

    def collect(self) -> Iterator[Any]:
        yield from self._rendezvous()
        yield from self._relay()
        yield self._refusals()
        yield from self._logins()
        if self._db_path is not None:
            size = GaugeMetricFamily(
                "litedesk_database_size_bytes", "Peer database size, WAL included."
            )
            size.add_metric([], float(_db_size(self._db_path)))
            yield size

    def _rendezvous(self) -> Iterator[Any]:
        server, registry = self._top.server, self._top.registry
        if server is None or registry is None:
            return
        c = server.counters
        reg = CounterMetricFamily(
            "litedesk_registrations", "RegisterPk requests by outcome.", labels=["outcome"]
        )
        reg.add_metric(["ok"], c.get("register_pk_ok", 0))
        reg.add_metric(["refused"], c.get("register_pk_refused", 0))
        yield reg
        for name, doc, key in _COUNTERS:
            fam = CounterMetricFamily(name, doc)
            fam.add_metric([], c.get(key, 0))
            yield fam
        yield from self._punches(server.punch_stats)
        online = GaugeMetricFamily("litedesk_hosts_online", "Hosts online now.")
        online.add_metric([], registry.online_count(self._clock.seconds()))
        yield online
        peers = GaugeMetricFamily("litedesk_peers_registered", "Peers known (in the database).")
        peers.add_metric([], len(registry))
        yield peers
        cluster = self._top.cluster
        if cluster is not None:
            nodes = GaugeMetricFamily("litedesk_cluster_nodes_alive", "Cluster nodes alive.")
            nodes.add_metric([], len(cluster.membership.alive_nodes(self._clock.seconds())))
            yield nodes
            dropped = CounterMetricFamily(
                "litedesk_cluster_bus_dropped",
                "Messages to other cluster nodes dropped because too many were waiting "
                "(PostgreSQL unreachable or far behind).",
            )
            dropped.add_metric([], cluster.bus.dropped)
            yield dropped

    @staticmethod
    def _punches(stats: PunchStats) -> Iterator[Any]:
        results = CounterMetricFamily(
            "litedesk_punch_results",
            "Punch hole requests (TCP, WebSocket) by how they ended.",
            labels=["result"],
        )
        for result in PUNCH_RESULTS:
            results.add_metric([result], stats.results[result])
        yield results
        latency = HistogramMetricFamily(
            "litedesk_punch_latency_seconds",
            "From a viewer's punch hole request to the host's answer delivered to it.",
        )
        latency.add_metric([], stats.cumulative(), stats.total)
        yield latency

    def _relay(self) -> Iterator[Any]:
        if self._top.relay is None:
            return
        table = self._top.relay.relay.table
        pairs = CounterMetricFamily("litedesk_relay_pairs", "Relay pairs formed.")
        pairs.add_metric([], table.pairs_finished + len(table.pairs))
        yield pairs
        relayed = CounterMetricFamily("litedesk_relay_bytes", "Bytes relayed, both ways.")
        relayed.add_metric([], table.bytes_relayed())
        yield relayed
        now = GaugeMetricFamily("litedesk_relay_pairs_active", "Relay pairs open now.")
        now.add_metric([], len(table.pairs))
        yield now
        unpaired = GaugeMetricFamily(
            "litedesk_relay_unpaired",
            "Relay connections not paired yet (before their first frame or waiting "
            "for their partner).",
        )
        unpaired.add_metric([], table.unpaired)
        yield unpaired

    def _refusals(self) -> CounterMetricFamily:
        """Every reason, from both parts (a part left out reads 0)."""
        fam = CounterMetricFamily(
            "litedesk_refusals", "Requests refused, by reason.", labels=["reason"]
        )
        server = self._top.server
        c = server.counters if server is not None else {}
        for reason, key in REFUSAL_REASONS.items():
            fam.add_metric([reason], c.get(key, 0))
        relay = self._top.relay.relay.refusals if self._top.relay is not None else {}
        for reason, limit in RELAY_REFUSAL_REASONS.items():
            fam.add_metric([reason], relay.get(limit, 0))
        return fam

    def _logins(self) -> Iterator[Any]:
        logins = self._top.ops_counters.logins
        for name, doc, kind in _LOGINS:
            fam = CounterMetricFamily(name, doc, labels=["outcome"])
            for outcome in LOGIN_OUTCOMES:
                fam.add_metric([outcome], logins[kind][outcome])
            yield fam


def _db_size(path: str) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(path + suffix).st_size
    return total


class MetricsResource(Resource):
    """C{/metrics}: the collector's text to allowed clients, 403 to others."""

    isLeaf = True
    _log = Logger()

    def __init__(self, collector: Collector, allowed: Iterable[IPNetwork]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(collector)
        self._allowed = tuple(allowed)

    def render_GET(self, request: Any) -> bytes:
        host = getattr(request.getClientAddress(), "host", "")
        if not client_allowed(host, self._allowed):
            self._log.info("Refused /metrics to {ip}: not loopback nor --metrics-allow", ip=host)
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"metrics are served to loopback and --metrics-allow networks only\n"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)
