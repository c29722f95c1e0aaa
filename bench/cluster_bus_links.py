"""The bus clients of bench/cluster_bus.py: one node's connections, per backend.

A L{Link} is what a cluster node holds to reach the other nodes: a listener
connection read by a blocking thread, which hands every message to a
callable (the node's queue, as a node would hand it to the reactor with
C{callFromThread}), and a publisher connection used by the node's main
thread.  L{NotifyLink} is PostgreSQL LISTEN/NOTIFY through psycopg 3,
L{RedisLink} Redis pub/sub through redis-py (imported only when used: LiteDesk
does not depend on it), L{TcpLink} the reference, one TCP connection with
4-byte length prefixes.
"""

from __future__ import annotations

import importlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["CHANNELS", "Link", "NotifyLink", "RedisLink", "TcpLink", "open_link"]

CHANNELS = {1: "litedesk_node_1", 2: "litedesk_node_2"}

Deliver = Callable[[str], None]


class Link:
    """One node's connections to the bus: L{listen} starts the listener thread."""

    def __init__(self) -> None:
        self.stopping = threading.Event()

    def listen(self, deliver: Deliver) -> None:
        def run() -> None:
            try:
                self.receive(deliver)
            except Exception as e:  # the node must hear of it, not hang
                if not self.stopping.is_set():
                    deliver(f"!{type(e).__name__}: {e}")

        threading.Thread(target=run, daemon=True).start()

    def receive(self, deliver: Deliver) -> None:
        raise NotImplementedError

    def send(self, channel: str, payload: str) -> None:
        raise NotImplementedError

    def send_many(self, channel: str, payloads: list[str]) -> None:
        """Publish C{payloads} in one exchange with the broker (one round trip)."""
        raise NotImplementedError

    def close(self) -> None:
        self.stopping.set()


class TcpLink(Link):
    """The reference: one TCP connection, frames with a 4-byte length."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock

    def receive(self, deliver: Deliver) -> None:
        buf = b""
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                return
            buf += data
            while len(buf) >= 4:
                (size,) = struct.unpack_from(">I", buf)
                if len(buf) < 4 + size:
                    break
                deliver(buf[4 : 4 + size].decode())
                buf = buf[4 + size :]

    def send(self, channel: str, payload: str) -> None:
        data = payload.encode()
        self.sock.sendall(struct.pack(">I", len(data)) + data)

    def send_many(self, channel: str, payloads: list[str]) -> None:
        data = [p.encode() for p in payloads]
        self.sock.sendall(b"".join(struct.pack(">I", len(d)) + d for d in data))

    def close(self) -> None:
        super().close()
        self.sock.close()


class NotifyLink(Link):
    """psycopg 3: an autocommit connection that LISTENs, another that publishes."""

    def __init__(self, url: str, mine: str) -> None:
        super().__init__()
        import psycopg

        self.listener = psycopg.connect(url, autocommit=True)
        self.listener.execute(f"LISTEN {mine}")
        self.publisher = psycopg.connect(url, autocommit=True)

    def receive(self, deliver: Deliver) -> None:
        while not self.stopping.is_set():
            for n in self.listener.notifies(timeout=0.5):
                deliver(n.payload)

    def send(self, channel: str, payload: str) -> None:
        self.publisher.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def send_many(self, channel: str, payloads: list[str]) -> None:
        # psycopg runs executemany in pipeline mode: one round trip, and the
        # statements between its Syncs commit (and notify) together.
        with self.publisher.cursor() as cur:
            cur.executemany("SELECT pg_notify(%s, %s)", [(channel, p) for p in payloads])

    def close(self) -> None:
        super().close()
        self.publisher.close()


class RedisLink(Link):
    """redis-py: a pub/sub connection that subscribes, another that publishes."""

    def __init__(self, port: int, mine: str) -> None:
        super().__init__()
        redis: Any = importlib.import_module("redis")
        self.publisher = redis.Redis(host="127.0.0.1", port=port)
        self.pubsub = redis.Redis(host="127.0.0.1", port=port).pubsub(
            ignore_subscribe_messages=True
        )
        self.pubsub.subscribe(mine)

    def receive(self, deliver: Deliver) -> None:
        while not self.stopping.is_set():
            m = self.pubsub.get_message(timeout=0.5)
            if m is not None:
                deliver(m["data"].decode())

    def send(self, channel: str, payload: str) -> None:
        self.publisher.publish(channel, payload)

    def send_many(self, channel: str, payloads: list[str]) -> None:
        pipe = self.publisher.pipeline(transaction=False)
        for p in payloads:
            pipe.publish(channel, p)
        pipe.execute()

    def close(self) -> None:
        super().close()
        self.publisher.close()


def open_link(backend: str, role: int, where: Any) -> Link:
    """Node C{role}'s link; C{where} is the TCP listening socket, URL or port."""
    if backend == "tcp":
        if role == 2:
            sock, _ = where.accept()
            return TcpLink(sock)
        return TcpLink(socket.create_connection(where.getsockname()))
    if backend == "redis":
        return RedisLink(where, CHANNELS[role])
    return NotifyLink(where, CHANNELS[role])
