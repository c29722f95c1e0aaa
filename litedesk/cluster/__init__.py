"""Several rendezvous nodes sharing one PostgreSQL database (C{--cluster}).

Every node keeps its own hosts (their UDP mappings and streams are bound to
the node they registered on) and answers any viewer: a request for a host
registered elsewhere is forwarded to that host's node over PostgreSQL
LISTEN/NOTIFY and the answer comes back the same way (docs/cluster.rst).

- L{litedesk.cluster.envelope}: the payloads nodes send each other;
- L{litedesk.cluster.membership}: which nodes exist and which are alive;
- L{litedesk.cluster.presence}: which node a host was last seen on;
- L{litedesk.cluster.cluster_sql}: the cluster's tables and statements;
- L{litedesk.cluster.pg_bus}: the listener and publisher threads;
- L{litedesk.cluster.node}: the service that ties them to the rendezvous server.
"""
