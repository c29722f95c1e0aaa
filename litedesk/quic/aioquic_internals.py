"""The two things LiteDesk reads from aioquic that it has no public API for.

- the peer's certificate after the handshake (the viewer pins its key:
  L{litedesk.quic.tls_config.check_host_key});
- how many bytes a stream still holds unacknowledged (the host's frame-drop
  policy and producers need a backlog level, as over TCP:
  L{litedesk.screen.backpressure}).

Both are private attributes (checked against aioquic 1.7.2).  If a future
aioquic renames them, L{peer_certificate} returns None, so every host key is
refused (a session fails closed, never open), and L{stream_backlog} returns
0, so streaming goes on without drops; tests/test_quic_session.py exercises
both with real connections and fails to say so.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import QuicConnection
from cryptography import x509

__all__ = ["peer_certificate", "stream_backlog", "stream_send_buffer"]


def peer_certificate(connection: QuicConnection) -> x509.Certificate | None:
    """The certificate the peer presented in the TLS handshake, if any."""
    tls: Any = getattr(connection, "tls", None)
    cert = getattr(tls, "_peer_certificate", None)
    return cert if isinstance(cert, x509.Certificate) else None


def stream_send_buffer(connection: QuicConnection, stream_id: int) -> bytearray:
    """The bytes written to C{stream_id} and not yet acknowledged by the peer
    (aioquic's own buffer, not a copy: read it, never change it).

    That is what is queued and what is in flight: unlike a TCP socket's
    buffer, nothing of the backlog hides in a kernel.
    """
    streams: Any = getattr(connection, "_streams", None)
    stream = streams.get(stream_id) if isinstance(streams, dict) else None
    buffer = getattr(getattr(stream, "sender", None), "_buffer", None)
    return buffer if isinstance(buffer, bytearray) else bytearray()


def stream_backlog(connection: QuicConnection, stream_id: int) -> int:
    """How many bytes L{stream_send_buffer} holds."""
    return len(stream_send_buffer(connection, stream_id))
