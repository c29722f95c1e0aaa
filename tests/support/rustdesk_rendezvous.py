"""The rendezvous side of a stock RustDesk client, emulated for tests: reaching a host by id.

Written from RustDesk 1.4.9's ``src/client.rs`` (``_start_inner``, ``connect``,
``request_relay``, ``create_relay``, ``secure_connection``'s use of the signed key),
``src/common.rs`` (``get_rs_pk``, ``decode_id_pk``, ``get_next_nonkeyexchange_msg``) and
hbb_common (``AddrMangle``, ``socket_client::check_port``, ``tcp::new_socket``), with
``src/rendezvous_mediator.rs`` read for what the host answers.  Same independence rule as
L{tests.support.rustdesk_client}: only the generated protobuf modules, PyNaCl (through
that module) and the standard library; never ``litedesk.session``, ``litedesk.rustdesk``
or ``litedesk.wire``, so a bug in LiteDesk's own rendezvous code cannot hide behind a
shared helper.

What a stock client does, and what the functions here do the same way:

1. L{punch_hole_request}: TCP to the rendezvous server (port 21116 unless given), one
   ``PunchHoleRequest{id, licence_key, nat_type, conn_type, version, force_relay}``,
   re-sent up to 3 times with waits of 3, 6 and 9 s on the same socket.  A
   ``PunchHoleResponse`` without an address is a failure with RustDesk's own text;
   one with an address gives the host's address (``is_local`` on a shared public IP)
   and the relay the host named; a ``RelayResponse`` means the host opened a relay.
   The signed ``IdPk`` in either is opened with the server key (the client's "Key"
   setting, base64; RustDesk's public server key when empty) and must name the id
   asked for: that gives the host's Ed25519 key, which RustDeskClient needs.
2. L{connect_direct}: TCP to the host's address from the local port the rendezvous
   socket used (SO_REUSEADDR/SO_REUSEPORT, as ``new_socket``), after closing that socket.
3. L{request_relay}: when ``force_relay`` is set or the direct connect failed, and only if
   the host named a relay: a fresh TCP connection to the rendezvous server per attempt (up
   to 3), each with a fresh uuid, ``RequestRelay{id, uuid, relay_server, secure}``, and an
   18 s wait for a ``RelayResponse``; a ``refuse_reason`` ends it.  The client keeps its
   own uuid and relay, whatever the answer carries.
4. L{connect_via_relay}: TCP to the relay (port 21117 unless given) and one plaintext
   ``RequestRelay{licence_key, id, uuid, conn_type}`` frame; then the host speaks first.

L{reach} strings these together as ``Client::_start`` does and returns a socket ready for
C{RustDeskClient(sock, peer_id, answer.host_pk)}.  Blocking sockets throughout.

5. L{secure_tcp} (``common.rs secure_tcp_impl``): what a client with a Key and an API
   login does first on each rendezvous connection: wait up to 18 s for the server's
   ``KeyExchange``, answer it and seal every later frame (L{RendezvousStream});
   L{logged_in_punch_hole_request} is step 1 that way, failing with "Failed to secure
   tcp: ..." as 1.4.1 and later do.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import socket
import struct
import time
import uuid as uuidlib
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from nacl.exceptions import BadSignatureError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import VerifyKey

from litedesk.proto import rendezvous_pb2 as rz

from .rustdesk_client import (
    CLIENT_VERSION,
    CONNECT_TIMEOUT,
    EmulatorError,
    FrameReader,
    HandshakeError,
    PeerClosed,
    SecretChannel,
    encode_frame,
    open_id_pk,
    request_relay_frame,
)

__all__ = [
    "PUNCH_WAITS",
    "READ_TIMEOUT",
    "RELAY_PORT",
    "RENDEZVOUS_PORT",
    "RS_PUB_KEY",
    "Reached",
    "RelayTicket",
    "RendezvousAnswer",
    "RendezvousFailure",
    "RendezvousStream",
    "SecureTcpFailure",
    "check_port",
    "connect_direct",
    "connect_via_relay",
    "direct_connect_timeout",
    "logged_in_punch_hole_request",
    "mangle_decode",
    "mangle_encode",
    "parse_answer",
    "punch_hole_request",
    "reach",
    "request_relay",
    "secure_tcp",
    "server_key",
    "split_host_port",
]

# hbb_common config.rs.
RENDEZVOUS_PORT = 21116
RELAY_PORT = 21117
RS_PUB_KEY = "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw="
# client.rs _start_inner: attempt i waits i * 3000 ms for an answer on the same socket.
PUNCH_WAITS = (3.0, 6.0, 9.0)
# client.rs connect: the shortest direct-connect window, and the one for a LAN address.
MIN_DIRECT_TIMEOUT = 1.0
# client.rs connect: failure to connect directly and no relay to fall back to.
NO_DIRECT = "Failed to make direct connection to remote desktop"

# client.rs _start_inner: PunchHoleResponse failures as the client words them.
FAILURE_TEXT = {
    rz.PunchHoleResponse.ID_NOT_EXIST: "ID does not exist",
    rz.PunchHoleResponse.OFFLINE: "Remote desktop is offline",
    rz.PunchHoleResponse.LICENSE_MISMATCH: "Key mismatch",
    rz.PunchHoleResponse.LICENSE_OVERUSE: "Key overuse",
}


class RendezvousFailure(EmulatorError):
    """The connection attempt ended as a stock client would end it; str() is its text."""


# --- addresses (hbb_common lib.rs AddrMangle, socket_client.rs check_port) -----------------


def mangle_encode(host: str, port: int, micros: int | None = None) -> bytes:
    """AddrMangle::encode: IPv4 obfuscated with the clock, IPv6 as 16 bytes + LE port.

    An IPv4-mapped IPv6 address is encoded as IPv4 (try_into_v4).  C{micros} pins the
    time component for tests.
    """
    ip = socket.inet_pton(socket.AF_INET6, host) if ":" in host else None
    if ip is not None and ip[:12] == bytes(10) + b"\xff\xff":
        host, ip = socket.inet_ntop(socket.AF_INET, ip[12:]), None
    if ip is not None:
        return ip + struct.pack("<H", port)
    if micros is None:
        micros = time.time_ns() // 1000
    tm = micros & 0xFFFFFFFF
    ip4 = int.from_bytes(socket.inet_aton(host), "little")
    v = ((ip4 + tm) << 49) | (tm << 17) | (port + (tm & 0xFFFF))
    return v.to_bytes(16, "little").rstrip(b"\x00")


def mangle_decode(data: bytes) -> tuple[str, int]:
    """AddrMangle::decode, total like the original: any input gives some address.

    18 bytes are IPv6 + port; longer input is the IPv6 wildcard; up to 16 bytes is the
    obfuscated IPv4 form, with the u128 arithmetic wrapping as Rust's casts do.
    """
    if len(data) > 16:
        if len(data) != 18:
            return ("::", 0)
        return socket.inet_ntop(socket.AF_INET6, data[:16]), struct.unpack("<H", data[16:])[0]
    number = int.from_bytes(data.ljust(16, b"\x00"), "little")
    tm = (number >> 17) & 0xFFFFFFFF
    ip = (((number >> 49) - tm) & 0xFFFFFFFF).to_bytes(4, "little")
    port = ((number & 0xFFFFFF) - (tm & 0xFFFF)) & 0xFFFF
    return socket.inet_ntoa(ip), port


def check_port(host: str, port: int) -> str:
    """socket_client.rs check_port: add C{port} unless the address already has one."""
    if ":" in host and not host.startswith("[") and host.count(":") > 1:
        return f"[{host}]:{port}"  # a bare IPv6 address
    if ":" not in host:
        return f"{host}:{port}"
    return host


def split_host_port(addr: str, default_port: int) -> tuple[str, int]:
    """C{check_port}, then the host and the port as a socket wants them."""
    full = check_port(addr, default_port)
    host, _, port = full.rpartition(":")
    return host.strip("[]"), int(port)


def server_key(key: str) -> bytes | None:
    """common.rs get_rs_pk: the configured Key (RustDesk's own when empty), or None if it
    is not 32 bytes of base64 (then no host key can be verified)."""
    try:
        raw = base64.b64decode(key or RS_PUB_KEY, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


# --- sockets (hbb_common tcp.rs new_socket / FramedStream) -------------------------------


def _tcp(
    target: tuple[str, int], timeout: float, local: tuple[str, int] | None = None
) -> socket.socket:
    """FramedStream::new: a reusable socket bound to C{local} (any port if None), connected."""
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # new_socket sets both on every client socket, which is what lets connect_direct
        # reuse the rendezvous socket's port right after closing it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(local or ("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        sock.settimeout(timeout)
        sock.connect(target)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        sock.close()
        raise
    return sock


def _next_message(
    sock: socket.socket, reader: FrameReader, wait: float
) -> rz.RendezvousMessage | None:
    """common.rs get_next_nonkeyexchange_msg: the next message within C{wait}, skipping one
    KeyExchange; None on timeout or an unparseable frame.

    @raise PeerClosed: the server closed the connection.
    """
    deadline = time.monotonic() + wait
    for _ in range(2):
        payload = _read_payload(sock, reader, deadline)
        if payload is None:
            return None
        msg = rz.RendezvousMessage()
        try:
            msg.ParseFromString(payload)
        except DecodeError:
            return None
        if msg.WhichOneof("union") != "key_exchange":
            return msg
    return None


def _read_payload(sock: socket.socket, reader: FrameReader, deadline: float) -> bytes | None:
    while True:
        payload = reader.next()
        if payload is not None:
            return payload
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError as e:
            raise PeerClosed("rendezvous server reset the connection") from e
        if not data:
            raise PeerClosed("rendezvous server closed the connection")
        reader.feed(data)


# --- the answer to PunchHoleRequest ------------------------------------------------------


@dataclass
class RendezvousAnswer:
    """What _start_inner keeps from the server's answer.

    @ivar kind: C{"punch"} (host address to dial), C{"local"} (is_local: a LAN address)
        or C{"relay"} (the host already went to C{relay_server} with C{uuid}).
    @ivar host_pk: the host's Ed25519 key from the server-signed IdPk, or None when the
        signature, the id or the key length is wrong (a stock client then goes on
        without encryption); C{pk_error} says why.
    @ivar local: our end of the rendezvous socket, the port a direct connect reuses.
    """

    kind: str
    signed_id_pk: bytes
    host_pk: bytes | None
    pk_error: str
    relay_server: str
    peer_addr: tuple[str, int] | None = None
    nat_type: int = rz.UNKNOWN_NAT
    uuid: str = ""
    feedback: int = 0
    local: tuple[str, int] | None = None
    message: rz.RendezvousMessage = field(default_factory=rz.RendezvousMessage)


def _verified_host_key(signed: bytes, key: str, peer_id: str) -> tuple[bytes | None, str]:
    """secure_connection's first half: the host key, or None and the reason."""
    if not signed:
        return None, "the server sent no signed key (server without key, or no version)"
    rs_pk = server_key(key)
    if rs_pk is None:
        return None, "the configured server key is not a 32-byte base64 key"
    try:
        return open_id_pk(signed, rs_pk, peer_id), ""
    except HandshakeError as e:
        return None, f"invalid public key from rendezvous server: {e}"


def parse_answer(msg: rz.RendezvousMessage, key: str, peer_id: str) -> RendezvousAnswer | None:
    """One server message as _start_inner reads it.

    @return: None for a message the client logs and ignores ("Unexpected protobuf").
    @raise RendezvousFailure: a PunchHoleResponse without an address (its failure text).
    """
    kind = msg.WhichOneof("union")
    if kind == "relay_response":
        rr = msg.relay_response
        # rr.pk() reads the oneof: a RelayResponse carrying the id instead has no key.
        signed = rr.pk if rr.WhichOneof("union") == "pk" else b""
        host_pk, why = _verified_host_key(signed, key, peer_id)
        return RendezvousAnswer(
            "relay",
            signed,
            host_pk,
            why,
            rr.relay_server,
            uuid=rr.uuid,
            feedback=rr.feedback,
            message=msg,
        )
    if kind != "punch_hole_response":
        return None
    ph = msg.punch_hole_response
    if not ph.socket_addr:
        if ph.other_failure:
            raise RendezvousFailure(ph.other_failure)
        raise RendezvousFailure(FAILURE_TEXT.get(ph.failure, "other punch hole failure"))
    host_pk, why = _verified_host_key(ph.pk, key, peer_id)
    is_local = ph.WhichOneof("union") == "is_local" and ph.is_local
    nat = ph.nat_type if ph.WhichOneof("union") == "nat_type" else rz.UNKNOWN_NAT
    return RendezvousAnswer(
        "local" if is_local else "punch",
        bytes(ph.pk),
        host_pk,
        why,
        ph.relay_server,
        peer_addr=mangle_decode(ph.socket_addr),
        nat_type=nat,
        feedback=ph.feedback,
        message=msg,
    )


def punch_hole_request(
    server: str,
    key: str,
    peer_id: str,
    *,
    force_relay: bool = False,
    nat_type: int | None = None,
    token: str = "",
    version: str = CLIENT_VERSION,
    waits: tuple[float, ...] = PUNCH_WAITS,
    require_host_key: bool = True,
    conn_type: int = rz.DEFAULT_CONN,
) -> RendezvousAnswer:
    """client.rs _start_inner up to the answer: see the module docstring, step 1.

    C{server} is the client's "ID server" setting (C{host[:port]}).  C{nat_type} defaults
    to what a client sends without a NAT test result, SYMMETRIC when forcing the relay.
    C{require_host_key} raises L{HandshakeError} instead of returning an answer whose key
    did not verify, so a test cannot drift into an unencrypted session unnoticed.

    @raise RendezvousFailure: RustDesk's text for a refusal, or "Failed to connect via
        rendezvous server" when no usable answer came.
    """
    if nat_type is None:
        nat_type = rz.SYMMETRIC if force_relay else rz.UNKNOWN_NAT
    request = rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(
            id=peer_id,
            token=token,
            nat_type=nat_type,  # type: ignore[arg-type]
            licence_key=key,
            conn_type=conn_type,  # type: ignore[arg-type]
            version=version,
            force_relay=force_relay,
        )
    )
    frame = encode_frame(request.SerializeToString())
    target = split_host_port(server, RENDEZVOUS_PORT)
    try:
        sock = _tcp(target, CONNECT_TIMEOUT)
    except OSError as e:
        raise RendezvousFailure(f"Failed to connect to rendezvous server: {e}") from e
    try:
        local = sock.getsockname()[:2]
        reader = FrameReader()
        for wait in waits:
            try:
                sock.sendall(frame)
                msg = _next_message(sock, reader, wait)
            except (PeerClosed, OSError):
                # The stream is gone: no answer can come on it any more, which is how
                # _start_inner ends up with no host address.
                break
            answer = parse_answer(msg, key, peer_id) if msg is not None else None
            if answer is not None:
                answer.local = local
                if require_host_key and answer.host_pk is None:
                    raise HandshakeError(answer.pk_error)
                return answer
    finally:
        sock.close()
    raise RendezvousFailure("Failed to connect via rendezvous server")


# --- the connection itself (client.rs connect, request_relay, create_relay) --------------


def direct_connect_timeout(answer: RendezvousAnswer, punch_time: float = 0.0) -> float:
    """client.rs connect's window for the direct attempt (no earlier direct failures, our
    own NAT type unknown): 1 s for a LAN address or a symmetric host, 18 s when there is
    no relay to fall back to, else six times the rendezvous round trip, at least 1 s."""
    if answer.kind == "local" or answer.nat_type == rz.SYMMETRIC:
        return MIN_DIRECT_TIMEOUT
    if not answer.relay_server:
        return CONNECT_TIMEOUT
    return max(MIN_DIRECT_TIMEOUT, punch_time * 6)


def connect_direct(answer: RendezvousAnswer, timeout: float | None = None) -> socket.socket:
    """connect_tcp_local(peer, Some(local_addr)): dial the host from our rendezvous port.

    @raise OSError: the connection failed within the window.
    """
    if answer.peer_addr is None:
        raise ValueError("no host address in a relay answer")
    window = direct_connect_timeout(answer) if timeout is None else timeout
    sock = _tcp(answer.peer_addr, window, answer.local)
    sock.settimeout(None)
    return sock


@dataclass(frozen=True)
class RelayTicket:
    """What request_relay agreed: our uuid and the relay, as create_relay uses them."""

    uuid: str
    relay: tuple[str, int]
    response: rz.RelayResponse


def request_relay(
    server: str,
    key: str,
    peer_id: str,
    relay: str,
    *,
    secure: bool = True,
    token: str = "",
    attempts: int = 3,
    wait: float = CONNECT_TIMEOUT,
) -> RelayTicket:
    """client.rs request_relay: ask the host, through the server, to meet us on C{relay}.

    C{secure} is what a stock client sends: whether the server gave it a signed key at
    all (C{!signed_id_pk.is_empty()}, verified or not).  The rendezvous RequestRelay
    carries no licence key (only the relay leg does).

    @raise RendezvousFailure: the host's C{refuse_reason}, or "Timeout".
    """
    target = split_host_port(server, RENDEZVOUS_PORT)
    for _ in range(attempts):
        # A fresh socket per attempt: hbbs parks requesters by address.
        try:
            sock = _tcp(target, CONNECT_TIMEOUT)
        except OSError as e:
            raise RendezvousFailure(f"Failed to connect to rendezvous server: {e}") from e
        uuid = str(uuidlib.uuid4())
        msg = rz.RendezvousMessage(
            request_relay=rz.RequestRelay(
                id=peer_id, token=token, uuid=uuid, relay_server=relay, secure=secure
            )
        )
        try:
            sock.sendall(encode_frame(msg.SerializeToString()))
            answer = _next_message(sock, FrameReader(), wait)
        except PeerClosed:
            answer = None
        finally:
            sock.close()
        if answer is not None and answer.WhichOneof("union") == "relay_response":
            rr = answer.relay_response
            if rr.refuse_reason:
                raise RendezvousFailure(rr.refuse_reason)
            return RelayTicket(uuid, split_host_port(relay, RELAY_PORT), rr)
    raise RendezvousFailure("Timeout")


def connect_via_relay(
    relay: tuple[str, int] | str,
    uuid: str,
    key: str,
    peer_id: str = "",
    conn_type: int = rz.DEFAULT_CONN,
) -> socket.socket:
    """client.rs create_relay: TCP to the relay and the one plaintext RequestRelay frame.

    The socket is then a stream to the host (hbbr copies bytes once both legs are there):
    hand it to C{RustDeskClient(sock, peer_id, host_pk)}, whose handshake waits for the
    host's SignedId.
    """
    addr = split_host_port(relay, RELAY_PORT) if isinstance(relay, str) else relay
    try:
        sock = _tcp(addr, CONNECT_TIMEOUT)
    except OSError as e:
        raise RendezvousFailure(f"Failed to connect to relay server: {e}") from e
    sock.sendall(request_relay_frame(uuid, key, peer_id, conn_type))
    sock.settimeout(None)
    return sock


@dataclass
class Reached:
    """A connected stream to the host and how it was reached."""

    sock: socket.socket
    path: str  # "direct" (punched or LAN address) or "relay"
    answer: RendezvousAnswer
    uuid: str = ""


def reach(
    server: str,
    key: str,
    peer_id: str,
    *,
    force_relay: bool = False,
    conn_type: int = rz.DEFAULT_CONN,
) -> Reached:
    """Client::_start: the whole way from id to a connected stream.

    C{conn_type} (FILE_TRANSFER, PORT_FORWARD) goes in the PunchHoleRequest and in the
    relay leg's RequestRelay, as client.rs does; the RequestRelay to the rendezvous
    server carries none (client.rs request_relay leaves it at its default).

    A host-opened relay (RelayResponse) is joined at once; otherwise the host's address
    is dialled unless C{force_relay}, and the relay is requested when that is skipped or
    fails, if the host named one (else RustDesk's "Failed to make direct connection").
    """
    answer = punch_hole_request(server, key, peer_id, force_relay=force_relay, conn_type=conn_type)
    if answer.kind == "relay":
        relay = answer.relay_server
        sock = connect_via_relay(relay, answer.uuid, key, peer_id, conn_type)
        return Reached(sock, "relay", answer, answer.uuid)
    if not force_relay:
        with contextlib.suppress(OSError):
            return Reached(connect_direct(answer), "direct", answer)
    if not answer.relay_server:
        raise RendezvousFailure(NO_DIRECT)
    ticket = request_relay(
        server, key, peer_id, answer.relay_server, secure=bool(answer.signed_id_pk)
    )
    sock = connect_via_relay(ticket.relay, ticket.uuid, key, peer_id, conn_type)
    return Reached(sock, "relay", answer, ticket.uuid)


# --- secure TCP (common.rs secure_tcp_impl, client.rs _start_inner with a login) ---------

# hbb_common config.rs: secure_tcp waits this long for the server's first message.
READ_TIMEOUT = 18.0


class SecureTcpFailure(RendezvousFailure):
    """secure_tcp failed; str() is RustDesk's text, "Failed to secure tcp: ..." included
    where _start_inner adds it."""


class RendezvousStream:
    """A rendezvous socket as FramedStream sees it: frames sealed both ways once C{channel}
    is set (C{set_key}), and C{next_message} as get_next_nonkeyexchange_msg reads them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()
        self.channel: SecretChannel | None = None

    def send(self, msg: rz.RendezvousMessage) -> None:
        payload = msg.SerializeToString()
        if self.channel is not None:
            payload = self.channel.seal(payload)
        self.sock.sendall(encode_frame(payload))

    def next_payload(self, wait: float) -> bytes | None:
        """FramedStream::next within C{wait}: None on timeout; decrypted once keyed.

        @raise EmulatorError: a sealed frame that does not open ("decryption error").
        @raise PeerClosed: the server closed the connection.
        """
        payload = _read_payload(self.sock, self.reader, time.monotonic() + wait)
        if payload is not None and self.channel is not None:
            payload = self.channel.open(payload)
        return payload

    def next_message(self, wait: float) -> rz.RendezvousMessage | None:
        """get_next_nonkeyexchange_msg: skips one KeyExchange; None on a timeout, an
        unparseable or undecryptable frame."""
        deadline = time.monotonic() + wait
        for _ in range(2):
            try:
                payload = self.next_payload(max(0.0, deadline - time.monotonic()))
            except (EmulatorError, OSError):
                return None
            if payload is None:
                return None
            msg = rz.RendezvousMessage()
            try:
                msg.ParseFromString(payload)
            except DecodeError:
                return None
            if msg.WhichOneof("union") != "key_exchange":
                return msg
        return None


def secure_tcp(
    stream: RendezvousStream,
    key: str,
    *,
    wait: float = READ_TIMEOUT,
    client_sk: bytes | None = None,
    session_key: bytes | None = None,
) -> bool:
    """common.rs secure_tcp_impl on TCP (a client in WebSocket mode returns at once).

    Reads the server's first frame within C{wait}.  A KeyExchange must hold exactly one
    entry, the server key's combined signature over a 32-byte X25519 key; the answer is
    KeyExchange{[our X25519 key, box(session key, zero nonce)]} in plaintext, and every
    frame after it is sealed.  Any other first message is consumed and dropped and the
    stream stays plaintext (returns False), as does a closed or failing stream.
    C{client_sk}/C{session_key} pin the random values for vectors.

    @raise SecureTcpFailure: RustDesk's error text ("deadline has elapsed" on silence).
    """
    rs_pk = server_key(key) if key else None
    if rs_pk is None:
        raise SecureTcpFailure("Handshake failed: invalid public key from rendezvous server")
    try:
        payload = _read_payload(stream.sock, stream.reader, time.monotonic() + wait)
    except (PeerClosed, OSError):
        return False
    if payload is None:
        raise SecureTcpFailure("deadline has elapsed")
    msg = rz.RendezvousMessage()
    try:
        msg.ParseFromString(payload)
    except DecodeError:
        return False
    if msg.WhichOneof("union") != "key_exchange":
        return False
    keys = msg.key_exchange.keys
    if len(keys) != 1:
        raise SecureTcpFailure("Handshake failed: invalid key exchange message")
    try:
        their_pk = VerifyKey(rs_pk).verify(keys[0])
    except (BadSignatureError, ValueError) as e:
        raise SecureTcpFailure("Signature mismatch in key exchange") from e
    if len(their_pk) != 32:
        raise SecureTcpFailure("Wrong their public length in key exchange")
    sk = PrivateKey(client_sk) if client_sk is not None else PrivateKey.generate()
    sym = session_key if session_key is not None else os.urandom(32)
    sealed = Box(sk, PublicKey(their_pk)).encrypt(sym, bytes(24)).ciphertext
    answer = rz.KeyExchange(keys=[bytes(sk.public_key), sealed])
    stream.send(rz.RendezvousMessage(key_exchange=answer))
    stream.channel = SecretChannel(sym)
    return True


def logged_in_punch_hole_request(
    server: str,
    key: str,
    peer_id: str,
    token: str,
    *,
    waits: tuple[float, ...] = PUNCH_WAITS,
    secure_wait: float = READ_TIMEOUT,
) -> tuple[RendezvousAnswer, bool]:
    """_start_inner for a client logged in to an API server (1.4.1+): TCP, secure_tcp
    (its failure ends the attempt), then PunchHoleRequest with the token as
    L{punch_hole_request} sends it, on the sealed stream.

    @return: the answer and whether the stream was sealed.
    @raise SecureTcpFailure: "Failed to secure tcp: ..." as the client shows it.
    @raise RendezvousFailure: as L{punch_hole_request}.
    """
    request = rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(
            id=peer_id,
            token=token,
            nat_type=rz.UNKNOWN_NAT,
            licence_key=key,
            conn_type=rz.DEFAULT_CONN,
            version=CLIENT_VERSION,
        )
    )
    try:
        sock = _tcp(split_host_port(server, RENDEZVOUS_PORT), CONNECT_TIMEOUT)
    except OSError as e:
        raise RendezvousFailure(f"Failed to connect to rendezvous server: {e}") from e
    try:
        stream = RendezvousStream(sock)
        try:
            sealed = secure_tcp(stream, key, wait=secure_wait)
        except SecureTcpFailure as e:
            raise SecureTcpFailure(f"Failed to secure tcp: {e}") from e
        for wait in waits:
            try:
                stream.send(request)
            except OSError:
                break
            msg = stream.next_message(wait)
            answer = parse_answer(msg, key, peer_id) if msg is not None else None
            if answer is not None:
                answer.local = sock.getsockname()[:2]
                return answer, sealed
    finally:
        sock.close()
    raise RendezvousFailure("Failed to connect via rendezvous server")


# --- UDP punch (RustDesk 1.4.1 and later, with enable-udp-punch on) ----------------------
#
# client.rs _start / _start_inner / test_udp_uat / udp_nat_connect and common.rs punch_udp:
# a UDP socket sends TestNatRequest{} to the server's UDP port until the TCP request goes
# out; PunchHoleRequest carries the UDP port learnt (0 if none); an answer with is_udp
# aims the UDP socket at the host, and both sides send empty datagrams until one arrives.
# RustDesk 1.4.2 and later run a second attempt without UDP beside this one (select_ok).

# test_udp_uat and punch_udp: resend after 20 ms, the wait growing x1.5 up to 200 ms.
UDP_RETRY_FIRST = 0.02
UDP_RETRY_MAX = 0.2
# punch_udp: "UDP punch is timed out" after this long.
UDP_PUNCH_TIME = 20.0


def _next_udp_retry(wait: float) -> float:
    return min(wait * 1.5, UDP_RETRY_MAX)


@dataclass
class UdpPunchAttempt:
    """The attempt of _start_inner that has a UDP socket: what it sent and got.

    @ivar udp: the punch socket; connected to the host's UDP endpoint when C{is_udp}.
    @ivar udp_port: the C{udp_port} its PunchHoleRequest carried (0: none learnt).
    @ivar nat_tests: TestNatRequest datagrams it sent.
    @ivar from_server: datagrams the server sent to the punch socket meanwhile.
    """

    answer: RendezvousAnswer
    is_udp: bool
    udp: socket.socket
    udp_port: int
    nat_tests: int
    from_server: list[bytes]


def udp_punch_hole_request(
    server: str,
    key: str,
    peer_id: str,
    *,
    stun_port: int | None = None,
    local_ip: str = "127.0.0.1",
    nat_test_time: float = 0.0,
    waits: tuple[float, ...] = PUNCH_WAITS,
) -> UdpPunchAttempt:
    """_start_inner with a UDP socket, up to the answer (the caller closes C{udp}).

    1. new_direct_udp_for: a UDP socket for the server (bound to C{local_ip} here).
    2. test_udp_uat: TestNatRequest{} twice, then once per retry interval.  A
       TestNatResponse on the socket gives the port; so does the public STUN probe, which
       RustDesk runs from another socket: C{stun_port} is what it reported (None: no STUN
       answer in time).
    3. TCP to the server; wait for a port at most half the connect time (C{nat_test_time}
       more here, to let the test run), then stop the NAT test.
    4. PunchHoleRequest{id, nat_type, licence_key, conn_type, version, udp_port} as
       L{punch_hole_request} sends it, up to 3 times on that connection.
    5. An answer with C{is_udp}: connect the UDP socket to the host's address.

    @raise RendezvousFailure: as L{punch_hole_request}.
    """
    target = split_host_port(server, RENDEZVOUS_PORT)
    udp = socket.socket(socket.AF_INET6 if ":" in target[0] else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind((local_ip, 0))
        udp.setblocking(False)
        test = rz.RendezvousMessage(test_nat_request=rz.TestNatRequest()).SerializeToString()
        for _ in range(2):
            udp.sendto(test, target)
        sent, port = 2, stun_port or 0
        from_server: list[bytes] = []
        started = time.monotonic()
        try:
            sock = _tcp(target, CONNECT_TIMEOUT)
        except OSError as e:
            raise RendezvousFailure(f"Failed to connect to rendezvous server: {e}") from e
        rtt = time.monotonic() - started
        deadline = time.monotonic() + rtt / 2 + nat_test_time
        wait = UDP_RETRY_FIRST
        next_send = time.monotonic() + wait
        while True:
            port = port or _nat_test_answer(udp, from_server)
            now = time.monotonic()
            if port or now >= deadline:
                break
            if now >= next_send:
                udp.sendto(test, target)
                sent += 1
                wait = _next_udp_retry(wait)
                next_send = now + wait
            time.sleep(0.001)
        port = port or _nat_test_answer(udp, from_server)
        answer = _udp_request(sock, key, peer_id, port, waits)
        is_udp = answer.kind == "punch" and answer.message.punch_hole_response.is_udp
        if is_udp:
            assert answer.peer_addr is not None
            udp.setblocking(True)
            udp.connect(answer.peer_addr)
        return UdpPunchAttempt(answer, is_udp, udp, port, sent, from_server)
    except BaseException:
        udp.close()
        raise


def _nat_test_answer(udp: socket.socket, log: list[bytes]) -> int:
    """Read what waits on the punch socket; a TestNatResponse's port, else 0."""
    port = 0
    while True:
        try:
            data = udp.recv(1500)
        except (BlockingIOError, InterruptedError):
            return port
        except OSError:
            return port  # ICMP unreachable reported on the socket: nothing to read
        log.append(data)
        msg = rz.RendezvousMessage()
        with contextlib.suppress(DecodeError):
            msg.ParseFromString(data)
            if msg.WhichOneof("union") == "test_nat_response":
                port = msg.test_nat_response.port & 0xFFFF


def _udp_request(
    sock: socket.socket, key: str, peer_id: str, udp_port: int, waits: tuple[float, ...]
) -> RendezvousAnswer:
    request = rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(
            id=peer_id,
            nat_type=rz.UNKNOWN_NAT,
            licence_key=key,
            conn_type=rz.DEFAULT_CONN,
            version=CLIENT_VERSION,
            udp_port=udp_port,
        )
    )
    frame = encode_frame(request.SerializeToString())
    try:
        local = sock.getsockname()[:2]
        reader = FrameReader()
        for wait in waits:
            try:
                sock.sendall(frame)
                msg = _next_message(sock, reader, wait)
            except (PeerClosed, OSError):
                break
            answer = parse_answer(msg, key, peer_id) if msg is not None else None
            if answer is not None:
                answer.local = local
                return answer
    finally:
        sock.close()
    raise RendezvousFailure("Failed to connect via rendezvous server")


def punch_udp(udp: socket.socket, *, listen: bool, max_time: float = UDP_PUNCH_TIME) -> bytes:
    """common.rs punch_udp on a connected socket: an empty datagram now and per retry
    interval until one arrives; the viewer (C{listen} False) takes any, the host only a
    non-empty one (KCP's first segment), which is returned.

    @raise RendezvousFailure: "UDP punch is timed out" after C{max_time}.
    """
    deadline = time.monotonic() + max_time
    wait = UDP_RETRY_FIRST
    next_send = time.monotonic() + wait
    with contextlib.suppress(OSError):
        udp.send(b"")
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise RendezvousFailure("UDP punch is timed out")
        if now >= next_send:
            with contextlib.suppress(OSError):
                udp.send(b"")
            wait = _next_udp_retry(wait)
            next_send = now + wait
        udp.settimeout(max(0.001, min(next_send, deadline) - now))
        try:
            data = udp.recv(1500)
        except OSError:
            # Nothing yet (a timeout), or the peer's port is not open yet (an ICMP
            # error reported on the socket): keep punching.
            continue
        if data or not listen:
            return data
