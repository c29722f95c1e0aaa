"""A stock RustDesk device's streams to the rendezvous server, emulated for tests: a host
registered over TCP ("TCP mode") and the ID change.

Written from RustDesk 1.4.9's ``src/rendezvous_mediator.rs`` (``start_tcp``,
``handle_resp``, ``register_pk``, ``handle_uuid_mismatch``, ``handle_punch_hole``,
``handle_intranet``, ``handle_request_relay``, ``create_relay``, ``get_relay_server``),
``src/server.rs`` (``accept_connection_``, ``create_relay_connection_``),
``src/ui_interface.rs`` (``change_id_shared_``, ``check_id``), ``src/common.rs``
(``secure_tcp``, ``get_key``) and hbb_common (``is_valid_custom_id``, ``Config::update_id``,
``socket_client::increase_port``).  Same independence rule as
L{tests.support.rustdesk_rendezvous}: only the generated protobuf modules, the other
stock emulators and the standard library, never LiteDesk's rendezvous or wire code.

L{StreamHost} is a host that cannot use UDP (a proxy, WebSocket mode, UDP blocked):

1. TCP to the rendezvous server; with C{secure}, C{secure_tcp} first (wait for the
   server's KeyExchange, answer it, seal every later frame), as a TCP-mode host always
   does; without it, straight on, as a host in WebSocket mode does (it skips secure_tcp).
2. Every second: C{RegisterPk{id, uuid, pk}} while the key is not confirmed on this
   stream, at most every 15 s (REG_INTERVAL); the stream is given up after 1.5 x
   keep_alive (60 s unless a RegisterPkResponse says otherwise) without a message.
3. An empty frame is answered with an empty frame (``send_bytes(Bytes::new())``: never
   sealed); ``RegisterPkResponse`` OK confirms the key, UUID_MISMATCH makes a new random
   id and registers it at once; ``PunchHole``, ``FetchLocalAddr`` and ``RequestRelay``
   are answered each in a thread of its own, exactly as if they had come by UDP: on a
   new TCP connection to the server (``PunchHoleSent`` then a listener on that local
   port; ``LocalAddr`` and the listener; ``RelayResponse`` and a relay leg).
4. When the stream ends the host starts over on a new one (after C{retry} seconds; the
   stock host waits up to 18 s from the previous start).

What a viewer reaches lands in L{StreamHost.sessions} as a L{HostSession}; every push
in L{StreamHost.pushes}.  L{change_id} is ``check_id``: the text the client shows.
"""

from __future__ import annotations

import contextlib
import queue
import random
import re
import socket
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from litedesk.proto import rendezvous_pb2 as rz

from .rustdesk_client import CLIENT_VERSION, CONNECT_TIMEOUT, PeerClosed, encode_frame
from .rustdesk_rendezvous import (
    READ_TIMEOUT,
    RELAY_PORT,
    RENDEZVOUS_PORT,
    RS_PUB_KEY,
    RendezvousStream,
    check_port,
    mangle_decode,
    mangle_encode,
    secure_tcp,
    split_host_port,
)

__all__ = [
    "ID_CHANGE_TEXT",
    "HostSession",
    "StreamHost",
    "change_id",
    "is_valid_custom_id",
]

# hbb_common config.rs / rustdesk common.rs.
REG_INTERVAL = 15.0
TIMER_OUT = 1.0
DEFAULT_KEEP_ALIVE = 60.0
# rendezvous_mediator.rs: a push from the same requester within 100 ms is a duplicate.
DUPLICATE_WINDOW = 0.1
# rendezvous_mediator.rs handle_punch_hole: the connect that opens our NAT towards the viewer.
PUNCH_CONNECT_TIMEOUT = 0.03

Result = rz.RegisterPkResponse.Result

# ui_interface.rs check_id: what the client shows for each answer ("" is success).
ID_CHANGE_TEXT = {
    Result.OK: "",
    Result.ID_EXISTS: "Not available",
    Result.TOO_FREQUENT: "Too frequent",
    Result.NOT_SUPPORT: "server_not_support",
    Result.SERVER_ERROR: "Server error",
    Result.INVALID_ID_FORMAT: "Invalid format",
}
UNKNOWN_ERROR = "Unknown error"
INVALID_FORMAT = "Invalid format"


def is_valid_custom_id(peer_id: str) -> bool:
    """hbb_common is_valid_custom_id: ^[a-zA-Z][\\w-]{5,15}$, \\w being Unicode as in Rust."""
    return re.fullmatch(r"[a-zA-Z][\w-]{5,15}", peer_id) is not None


def increase_port(host: str, offset: int) -> str:
    """socket_client.rs increase_port for C{host:port} (what check_port produced)."""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and int(port) > 0 and name.count(":") == 0:
        return f"{name}:{int(port) + offset}"
    return host


def _connect(
    target: tuple[str, int], timeout: float, local: tuple[str, int] | None
) -> socket.socket:
    """tcp.rs new_socket + connect: SO_REUSEADDR/SO_REUSEPORT, bound to C{local}."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if local is not None:
            sock.bind(local)
        sock.settimeout(timeout)
        sock.connect(target)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class HostSession:
    """A stream a viewer reached the host on: C{path} is "punch", "local" or "relay"."""

    path: str
    sock: socket.socket
    uuid: str = ""


class StreamEnded(Exception):
    """The rendezvous stream ended; str() says why, as the host logs it."""


class StreamHost:
    """A RustDesk host registered over TCP (see the module docstring).

    @ivar peer_id: the id it registers (a new random one after UUID_MISMATCH).
    @ivar pushes: every PunchHole, FetchLocalAddr, RequestRelay, ConfigUpdate received.
    @ivar sessions: the streams viewers reached it on.
    @ivar results: every RegisterPkResponse result, in order.
    @ivar keep_alives: every keep_alive (s) the server told it.
    @ivar heartbeats: empty frames received (and answered unless muted).
    @ivar streams: rendezvous streams opened so far.
    @ivar ended: why each stream ended.
    """

    def __init__(
        self,
        server: str,
        peer_id: str,
        uuid: bytes,
        pk: bytes,
        *,
        key: str = "",
        bind: str = "127.0.0.1",
        secure: bool = False,
        relay_mode: bool = False,
        relay_option: str = "",
        nat_type: int = rz.UNKNOWN_NAT,
        retry: float = 0.2,
    ) -> None:
        self.server = check_port(server, RENDEZVOUS_PORT)
        self.target = split_host_port(self.server, RENDEZVOUS_PORT)
        self.peer_id = peer_id
        self.uuid = uuid
        self.pk = pk
        self.key = key
        self.bind = bind
        self.secure = secure
        # WebSocket or proxy mode: every push is answered through a relay.
        self.relay_mode = relay_mode
        self.relay_option = relay_option
        self.nat_type = nat_type
        self.retry = retry
        self.pushes: queue.Queue[rz.RendezvousMessage] = queue.Queue()
        self.sessions: queue.Queue[HostSession] = queue.Queue()
        self.results: list[int] = []
        self.keep_alives: list[int] = []
        self.heartbeats = 0
        self.streams = 0
        self.secured = False
        self.ended: list[str] = []
        self.errors: list[str] = []
        self.confirmed = threading.Event()
        self.answer_heartbeats = True
        self._keep_alive = DEFAULT_KEEP_ALIVE
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._last_push: dict[str, tuple[tuple[str, int], float]] = {}
        self._thread = threading.Thread(target=self._run, name="stream host", daemon=True)

    # -- control (test thread) ------------------------------------------------------------

    def start(self) -> StreamHost:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)

    def set_id(self, peer_id: str) -> None:
        """What the client does after a successful ID change (ipc.rs, config "id"):
        Config::set_key_confirmed(false) and Config::set_id, so the host registers the new
        id on its stream at its next chance."""
        self.peer_id = peer_id
        self.confirmed.clear()

    def drop_stream(self) -> None:
        """End the current stream from our side (the host then starts a new one)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def local_address(self) -> tuple[str, int] | None:
        sock = self._sock
        if sock is None:
            return None
        try:
            host, port = sock.getsockname()[:2]
        except OSError:
            return None
        return str(host), int(port)

    # -- the rendezvous stream (rendezvous_mediator.rs start_tcp) -------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve_stream()
            except (StreamEnded, PeerClosed, OSError, ValueError) as e:
                self.ended.append(str(e) or type(e).__name__)
            except Exception as e:  # the emulator's own bug: recorded for the test
                self.errors.append(f"stream: {e!r}")
            self.confirmed.clear()
            self._stop.wait(self.retry)

    def _serve_stream(self) -> None:
        sock = _connect(self.target, CONNECT_TIMEOUT, (self.bind, 0))
        self._sock = sock
        self.streams += 1
        self._keep_alive = DEFAULT_KEEP_ALIVE
        try:
            stream = RendezvousStream(sock)
            if self.secure:
                self.secured = secure_tcp(stream, self.key or RS_PUB_KEY)
            self._loop(stream)
        finally:
            self._sock = None
            sock.close()

    def _loop(self, stream: RendezvousStream) -> None:
        last_sent: float | None = None
        last_recv = time.monotonic()
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TIMER_OUT
                if now - last_recv > self._keep_alive * 1.5:
                    raise StreamEnded("Rendezvous connection is timeout")
                if not self.confirmed.is_set() and (
                    last_sent is None or now - last_sent >= REG_INTERVAL
                ):
                    self._register_pk(stream)
                    last_sent = now
            payload = stream.next_payload(max(0.0, next_tick - time.monotonic()))
            if payload is None:
                continue
            last_recv = time.monotonic()
            if not payload:
                self.heartbeats += 1
                if self.answer_heartbeats:
                    stream.sock.sendall(encode_frame(b""))
                continue
            msg = rz.RendezvousMessage()
            try:
                msg.ParseFromString(payload)
            except DecodeError as e:
                raise StreamEnded(f"unparseable message: {e}") from e
            self._handle(msg, stream)

    def _register_pk(self, stream: RendezvousStream) -> None:
        msg = rz.RegisterPk(id=self.peer_id, uuid=self.uuid, pk=self.pk)
        stream.send(rz.RendezvousMessage(register_pk=msg))

    def _handle(self, msg: rz.RendezvousMessage, stream: RendezvousStream) -> None:
        kind = msg.WhichOneof("union")
        if kind == "register_pk_response":
            rpr = msg.register_pk_response
            self.results.append(rpr.result)
            if rpr.result == Result.OK:
                self.confirmed.set()
            elif rpr.result == Result.UUID_MISMATCH:
                # Config::update_id, then register_pk on the same stream.
                self.peer_id = str(random.randrange(1_000_000_000, 2_000_000_000))
                self._register_pk(stream)
            if rpr.keep_alive > 0:
                self.keep_alives.append(rpr.keep_alive)
                self._keep_alive = float(rpr.keep_alive)
        elif kind in ("punch_hole", "fetch_local_addr", "request_relay"):
            self.pushes.put(msg)
            if not self._duplicate(msg, kind):
                threading.Thread(target=self._answer, args=(msg,), daemon=True).start()
        elif kind == "configure_update":
            self.pushes.put(msg)

    def _duplicate(self, msg: rz.RendezvousMessage, kind: str) -> bool:
        """LAST_MSG / LAST_RELAY_MSG: the same requester within 100 ms is ignored."""
        member = getattr(msg, kind)
        addr = mangle_decode(member.socket_addr)
        slot = "relay" if kind == "request_relay" else "punch"
        now = time.monotonic()
        last = self._last_push.get(slot)
        self._last_push[slot] = (addr, now)
        return last is not None and last[0] == addr and now - last[1] < DUPLICATE_WINDOW

    # -- answering a push (handle_punch_hole, handle_intranet, handle_request_relay) -----

    def _answer(self, msg: rz.RendezvousMessage) -> None:
        kind = msg.WhichOneof("union")
        try:
            if kind == "request_relay":
                rr = msg.request_relay
                # handle_request_relay uses the relay as given, without get_relay_server.
                self._create_relay(rr.socket_addr, rr.relay_server, rr.uuid, initiate=False)
            elif kind == "punch_hole":
                ph = msg.punch_hole
                relay = self._relay_server(ph.relay_server)
                if (
                    ph.nat_type == rz.SYMMETRIC
                    or self.nat_type == rz.SYMMETRIC
                    or self.relay_mode
                    or ph.force_relay
                ):
                    self._create_relay(ph.socket_addr, relay, str(uuidlib.uuid4()), initiate=True)
                else:
                    self._punch(ph, relay)
            elif kind == "fetch_local_addr":
                self._intranet(msg.fetch_local_addr)
        except Exception as e:
            self.errors.append(f"{kind}: {e!r}")

    def _relay_server(self, provided: str) -> str:
        """get_relay_server: our relay-server option, else the server's, else port + 1."""
        return self.relay_option or provided or increase_port(self.server, 1)

    def _punch(self, ph: rz.PunchHole, relay: str) -> None:
        peer = mangle_decode(ph.socket_addr)
        sock = _connect(self.target, CONNECT_TIMEOUT, (self.bind, 0))
        local = sock.getsockname()[:2]
        # "key important here for punch hole to tell my gateway incoming peer is safe"
        with contextlib.suppress(OSError):
            _connect(peer, PUNCH_CONNECT_TIMEOUT, local).close()
        sent = rz.PunchHoleSent(
            socket_addr=ph.socket_addr,
            id=self.peer_id,
            relay_server=relay,
            nat_type=self.nat_type,  # type: ignore[arg-type]
            version=CLIENT_VERSION,
        )
        sock.sendall(encode_frame(rz.RendezvousMessage(punch_hole_sent=sent).SerializeToString()))
        self._accept(sock, "punch")

    def _intranet(self, fla: rz.FetchLocalAddr) -> None:
        relay = self._relay_server(fla.relay_server)
        if not self.relay_mode:
            with contextlib.suppress(OSError):
                peer = mangle_decode(fla.socket_addr)
                sock = _connect(self.target, CONNECT_TIMEOUT, (self.bind, 0))
                local = sock.getsockname()[:2]
                la = rz.LocalAddr(
                    id=self.peer_id,
                    socket_addr=mangle_encode(*peer),
                    local_addr=mangle_encode(local[0], local[1]),
                    relay_server=relay,
                    version=CLIENT_VERSION,
                )
                sock.sendall(encode_frame(rz.RendezvousMessage(local_addr=la).SerializeToString()))
                self._accept(sock, "local")
                return
        self._create_relay(fla.socket_addr, relay, str(uuidlib.uuid4()), initiate=True)

    def _accept(self, sock: socket.socket, path: str) -> None:
        """server.rs accept_connection_: drop the socket, listen on its port, accept one."""
        local = sock.getsockname()[:2]
        sock.close()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind(local)
            listener.listen(1)
            listener.settimeout(CONNECT_TIMEOUT)
            conn, _ = listener.accept()
        finally:
            listener.close()
        conn.settimeout(None)
        self.sessions.put(HostSession(path, conn))

    def _create_relay(self, socket_addr: bytes, relay: str, uuid: str, *, initiate: bool) -> None:
        """create_relay: RelayResponse on a new server connection, then the relay leg."""
        rr = rz.RelayResponse(socket_addr=socket_addr, version=CLIENT_VERSION)
        if initiate:
            rr.uuid = uuid
            rr.relay_server = relay
            rr.id = self.peer_id
        with _connect(self.target, CONNECT_TIMEOUT, (self.bind, 0)) as sock:
            sock.sendall(encode_frame(rz.RendezvousMessage(relay_response=rr).SerializeToString()))
        if not relay:
            raise ValueError("no relay server to connect to")
        leg = _connect(split_host_port(relay, RELAY_PORT), CONNECT_TIMEOUT, (self.bind, 0))
        request = rz.RequestRelay(licence_key=self.key or RS_PUB_KEY, uuid=uuid)
        leg.sendall(encode_frame(rz.RendezvousMessage(request_relay=request).SerializeToString()))
        leg.settimeout(None)
        self.sessions.put(HostSession("relay", leg, uuid))


def change_id(
    server: str,
    old_id: str,
    new_id: str,
    uuid: bytes,
    *,
    bind: str = "127.0.0.1",
    wait: float = READ_TIMEOUT,
) -> str:
    """ui_interface.rs change_id_shared_ with one rendezvous server: "" on success, else
    the text the client shows.

    The new id is checked first (no connection for "Invalid format"), then
    C{RegisterPk{old_id, id, uuid}} goes out on a plain TCP connection, without a key,
    and the next message that is not a KeyExchange decides.
    """
    if not is_valid_custom_id(new_id):
        return INVALID_FORMAT
    if not uuid:
        return UNKNOWN_ERROR
    try:
        sock = _connect(split_host_port(server, RENDEZVOUS_PORT), CONNECT_TIMEOUT, (bind, 0))
    except OSError:
        return "Failed to connect to rendezvous server"
    try:
        stream = RendezvousStream(sock)
        request = rz.RegisterPk(old_id=old_id, id=new_id, uuid=uuid)
        try:
            stream.send(rz.RendezvousMessage(register_pk=request))
        except OSError:
            return UNKNOWN_ERROR
        msg = stream.next_message(wait)
    finally:
        sock.close()
    if msg is None or msg.WhichOneof("union") != "register_pk_response":
        return UNKNOWN_ERROR
    return ID_CHANGE_TEXT.get(msg.register_pk_response.result, UNKNOWN_ERROR)
