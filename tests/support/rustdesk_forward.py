"""A stock RustDesk client's port forward (TCP tunnel), emulated for tests.

Written from RustDesk 1.4.9's ``src/port_forward.rs`` (``listen``, ``connect_and_login``,
``run_forward``), ``src/client.rs`` ``create_login_msg`` and hbb_common ``src/tcp.rs``
``set_raw``, with ``src/server/connection.rs`` read for what the host does.  Same
independence rule as L{tests.support.rustdesk_client}: never ``litedesk.forward`` or
``litedesk.session``.

What a stock client does:

1. It listens on 127.0.0.1 (the port the user chose) and, per accepted local connection,
   opens one RustDesk session by id with conn_type PORT_FORWARD (2) in the
   PunchHoleRequest and the relay leg's RequestRelay (the caller's C{dial} does that).
2. After the handshake: ``LoginRequest{port_forward{host, port}}``, no option; TestDelays
   are echoed; a ``LoginResponse.error`` goes to the user and ends that connection.
3. On ``LoginResponse.peer_info`` both ends call ``set_raw``: from then on the stream is
   the tunnelled TCP bytes verbatim, no BytesCodec header and no secretbox (the key is
   dropped).  Bytes the local socket delivered during the login go first (here the
   kernel holds them until then, which sends the same bytes in the same order).
4. ``run_forward`` copies both ways until either side ends, then drops both.

L{open_tunnel} does 2-3 on a connected client and returns a L{Tunnel} (a test talks raw
bytes through it); L{PortForwardListener} is the whole of 1-4 for a real local client.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

from litedesk.proto import message_pb2 as pb

from .rustdesk_client import LoginResult, RustDeskClient

__all__ = ["PortForwardListener", "Tunnel", "forward_login", "open_tunnel"]


def forward_login(
    client: RustDeskClient, password: str | None, host: str, port: int
) -> LoginResult:
    """The LoginRequest of a port-forward session (client.rs create_login_msg)."""
    return client.login(password, kind=pb.PortForward(host=host, port=port))


class Tunnel:
    """The raw stream after a port-forward login: bytes in, bytes out, nothing else."""

    def __init__(self, client: RustDeskClient) -> None:
        self.sock = client.sock
        self.sock.settimeout(client.timeout)
        # Bytes that arrived behind the LoginResponse are the first tunnelled ones.
        self._pending = client.set_raw()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int = 65536) -> bytes:
        """Up to C{n} bytes; b"" once the host has closed the tunnel."""
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        try:
            return self.sock.recv(n)
        except ConnectionResetError:
            return b""

    def recv_all(self) -> bytes:
        """Everything until the host closes the tunnel."""
        chunks = []
        while chunk := self.recv():
            chunks.append(chunk)
        return b"".join(chunks)

    def recv_exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.recv(n - len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def close(self) -> None:
        self.sock.close()


def open_tunnel(
    client: RustDeskClient, password: str | None, host: str, port: int
) -> tuple[LoginResult, Tunnel | None]:
    """connect_and_login on a handshaken client: the login, then raw mode if it worked."""
    result = forward_login(client, password, host, port)
    if result.response.WhichOneof("union") != "peer_info":
        return result, None
    return result, Tunnel(client)


def _copy(src: Callable[[], bytes], dst: socket.socket, stop: Callable[[], None]) -> None:
    try:
        while data := src():
            dst.sendall(data)
    except OSError:
        pass
    finally:
        stop()


class PortForwardListener:
    """port_forward.rs listen: a local port whose connections are tunnelled to
    C{host:port} as seen from the RustDesk host.

    C{dial} returns a handshaken L{RustDeskClient} for one new session (reached by id
    with conn_type PORT_FORWARD).  Login errors are kept in C{errors}, as the dialog a
    stock client would show.
    """

    def __init__(
        self, dial: Callable[[], RustDeskClient], password: str, host: str, port: int
    ) -> None:
        self.dial = dial
        self.password = password
        self.target = (host, port)
        self.errors: list[str] = []
        self.logins: list[LoginResult] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                local, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(local,), daemon=True).start()

    def _serve(self, local: socket.socket) -> None:
        with self._lock:
            self._open.add(local)
        try:
            client = self.dial()
        except Exception as e:  # what the user sees: the connection error, port stays open
            self.errors.append(f"{type(e).__name__}: {e}")
            local.close()
            return
        with self._lock:
            self._open.add(client.sock)
        try:
            result, tunnel = open_tunnel(client, self.password, *self.target)
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
            tunnel = None
        else:
            self.logins.append(result)
            if tunnel is None:
                self.errors.append(result.response.error)
        if tunnel is None:
            client.close()
            local.close()
            return
        tunnel.sock.settimeout(None)
        local.settimeout(None)

        def stop() -> None:
            # run_forward: either side ending drops both.
            for s in (local, tunnel.sock):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        up = threading.Thread(
            target=_copy, args=(lambda: local.recv(65536), tunnel.sock, stop), daemon=True
        )
        up.start()
        _copy(tunnel.recv, local, stop)
        up.join(30)
        local.close()
        tunnel.close()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
