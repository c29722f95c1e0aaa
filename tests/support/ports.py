"""Free loopback ports for the real processes the tests start.

A test process cannot let the kernel pick the port of a server it runs as
another process, so it picks a random candidate and checks it by binding.
Random candidates (not a counter) keep parallel trial jobs (C{trial -j})
and repeated runs from choosing the same ports.
"""

from __future__ import annotations

import os
import socket

__all__ = ["free_port", "free_port_pair"]


def _random_port() -> int:
    # Below Linux's ephemeral range (32768-60999): the kernel never hands a
    # port there to another test's connect() or bind(0) (a QUIC punch socket,
    # a client) between our check and the server's bind.
    return 20002 + int.from_bytes(os.urandom(2), "big") % 12700


def free_port_pair() -> int:
    """A port P with P-2 .. P+3 free for TCP and P free for UDP too.

    The layout of a RustDesk server: HTTP (API) port P-2, NAT test port P-1,
    rendezvous P (TCP and UDP), relay P+1, and the WebSocket ports a server
    started with --port binds by default: rendezvous P+2, relay P+3.
    """
    for _ in range(200):
        base = _random_port()
        socks = []
        try:
            for port, kind in (
                (base - 2, socket.SOCK_STREAM),
                (base - 1, socket.SOCK_STREAM),
                (base, socket.SOCK_STREAM),
                (base, socket.SOCK_DGRAM),
                (base + 1, socket.SOCK_STREAM),
                (base + 2, socket.SOCK_STREAM),
                (base + 3, socket.SOCK_STREAM),
            ):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """One port free for C{kind} on C{host}, for a process that binds it itself."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
