"""Operations: what the API server and console stand on, plus /health, /metrics, event log.

The ops database, users and tokens (L{litedesk.ops.accounts}), the context
handed to every HTTP part (L{litedesk.ops.context}), metrics, health and
the event log.  L{litedesk.server.http_site} assembles the listener (port
P-2, where RustDesk clients look for an API server).
"""
