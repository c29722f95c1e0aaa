"""Talking TLS to a LiteDesk host by hand, past the SignedId it sends first.

A LiteDesk host speaks first on every session stream (docs/protocol.rst
§11.5): one BytesCodec frame holding its C{SignedId}.  Tests and benchmarks
that open raw TLS connections to a host (attackers, mostly) read that frame
first and then start TLS, as the LiteDesk viewer does.
"""

from __future__ import annotations

import socket

__all__ = ["read_frame", "skip_signed_id"]


def read_frame(sock: socket.socket, limit: int = 64 * 1024) -> bytes:
    """Read exactly one BytesCodec frame from C{sock}; its payload."""
    head = _read(sock, 1)
    head += _read(sock, head[0] & 0x03)
    length = int.from_bytes(head, "little") >> 2
    if length > limit:
        raise ValueError(f"first frame of {length} bytes")
    return _read(sock, length)


def skip_signed_id(sock: socket.socket) -> bytes:
    """Read the host's first frame (its SignedId) and return its payload."""
    return read_frame(sock)


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed before the host's first frame was complete")
        data += chunk
    return data
