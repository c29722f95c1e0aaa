"""A stock RustDesk client, emulated for tests: the controlling side of a RustDesk session.

Written from RustDesk's own source (rustdesk/rustdesk 1.4.9 ``src/client.rs``, hbb_common
``src/tcp.rs``, ``src/bytes_codec.rs``, ``src/config.rs``) and deliberately independent of
LiteDesk: it never imports ``litedesk.session`` or ``litedesk.rustdesk`` (nor LiteDesk's
framing in ``litedesk.wire``), only the generated protobuf modules, PyNaCl and the standard
library.  It is the yardstick LiteDesk's host side is measured against, so sharing code
with it would let one bug hide another.

What it does, in the order a stock client does it:

1. TCP connect; on a relay leg, first one plaintext ``RendezvousMessage{request_relay}``
   frame (client.rs ``create_relay``).
2. ``secure_connection`` (client.rs): read the host's first frame, a ``SignedId``; open it
   with the host's Ed25519 key (the one the rendezvous server signed), require the id to be
   the peer's id and a 32-byte X25519 key inside; answer ``PublicKey{our X25519 pk,
   box(session key, zero nonce)}`` and switch to secretbox frames from the next frame on.
   A stock client falls back to plaintext when the signature fails; the emulator sends the
   same bytes a stock client sends and then raises L{HandshakeError} unless told to accept
   an insecure session, so a test cannot pass on a plaintext session by accident.
3. Encryption (tcp.rs ``Encrypt``): one key both ways, a u64 counter per direction starting
   at 0 and incremented before each frame, nonce = counter little-endian padded to 24 bytes,
   payload = MAC || ciphertext.  A received payload of 0 or 1 byte is passed up unopened and
   does not advance the counter.
4. Login (client.rs ``handle_hash``/``create_login_msg``): wait for ``Hash``; password proof
   SHA256(SHA256(password || salt) || challenge); ``LoginRequest`` with the host id as
   username, my_id, my_name, the desktop ``option{supported_decoding}``, session_id,
   version, os_login and my_platform; then wait for ``LoginResponse``.  Host ``TestDelay``
   messages are echoed unchanged at any time, as the client's io_loop does.
   File-transfer and port-forward sessions put ``file_transfer{dir, show_hidden}`` or
   ``port_forward{host, port}`` in the LoginRequest and leave the option out
   (``get_option_message``); what follows the login is in L{tests.support.rustdesk_files}
   and L{tests.support.rustdesk_forward}.
5. Raw mode (hbb_common tcp.rs ``set_raw``): after a port-forward login the stream carries
   the tunnelled bytes as they are, no framing and no encryption (L{RustDeskClient.set_raw}).

Blocking sockets: a test drives the emulator from a thread (``deferToThread``) when the
host under test runs on the test's reactor.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import select
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import VerifyKey

from litedesk.proto import message_pb2 as pb
from litedesk.proto import rendezvous_pb2 as rz

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_FRAME",
    "MAX_HANDSHAKE_FRAME",
    "ClientIdentity",
    "EmulatorError",
    "FrameReader",
    "HandshakeError",
    "LoginResult",
    "PeerClosed",
    "RustDeskClient",
    "SecretChannel",
    "SessionKind",
    "WrongPeerId",
    "build_login_request",
    "build_public_key",
    "clipboard_message",
    "default_supported_decoding",
    "encode_frame",
    "frame_header",
    "key_event",
    "misc_message",
    "mouse_event",
    "nonce",
    "open_id_pk",
    "password_h1",
    "password_proof",
    "request_relay_frame",
]

# client.rs READ_TIMEOUT / CONNECT_TIMEOUT: 18 s for the host's first frame.
CONNECT_TIMEOUT = 18.0
# bytes_codec.rs: the largest payload a header can describe.
MAX_FRAME = 0x3FFFFFFF
# RustDesk's session decoder has no smaller limit; the emulator refuses anything beyond a
# sane bound so a broken host makes a test fail rather than allocate gigabytes.
PRACTICAL_MAX_FRAME = 64 * 1024 * 1024
# A SignedId is ~110 bytes; the handshake frame is read with a tight bound.
MAX_HANDSHAKE_FRAME = 64 * 1024
# client.rs: the version string a 1.4.9 client puts in LoginRequest.version.
CLIENT_VERSION = "1.4.9"


class EmulatorError(Exception):
    """The host broke the protocol, as a stock client would see it."""


class HandshakeError(EmulatorError):
    """The SignedId exchange did not give an encrypted session."""


class WrongPeerId(HandshakeError):
    """A valid signature over another id: a stock client answers with an empty Message."""


class PeerClosed(EmulatorError):
    """The host closed the connection (EOF or reset)."""


# --- BytesCodec framing (hbb_common bytes_codec.rs) -----------------------------------------


def frame_header(n: int) -> bytes:
    """The shortest 1-4 byte header for a payload of C{n} bytes.

    The low two bits of the first byte are the header length minus one; the little-endian
    value shifted right by two is the payload length.
    """
    if n < 0 or n > MAX_FRAME:
        raise ValueError(f"payload length {n} cannot be framed")
    if n <= 0x3F:
        return bytes([n << 2])
    if n <= 0x3FFF:
        return struct.pack("<H", (n << 2) | 1)
    if n <= 0x3FFFFF:
        h = (n << 2) | 2
        return struct.pack("<HB", h & 0xFFFF, h >> 16)
    return struct.pack("<I", (n << 2) | 3)


def encode_frame(payload: bytes) -> bytes:
    return frame_header(len(payload)) + payload


class FrameReader:
    """Incremental BytesCodec decoder: L{feed} bytes, L{next} whole payloads."""

    def __init__(self, max_payload: int = PRACTICAL_MAX_FRAME) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffered(self) -> bytes:
        """Everything not yet decoded, removed: what a codec switched to raw passes on."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def next(self) -> bytes | None:
        """The next payload, or None if more bytes are needed.

        @raise EmulatorError: the header announces more than C{max_payload}.
        """
        if not self._buf:
            return None
        head = (self._buf[0] & 3) + 1
        if len(self._buf) < head:
            return None
        n = int.from_bytes(self._buf[:head], "little") >> 2
        if n > self.max_payload:
            raise EmulatorError(f"frame of {n} bytes exceeds the limit of {self.max_payload}")
        if len(self._buf) < head + n:
            return None
        payload = bytes(self._buf[head : head + n])
        del self._buf[: head + n]
        return payload


# --- secretbox channel (hbb_common tcp.rs Encrypt) ------------------------------------------


def nonce(seq: int) -> bytes:
    """tcp.rs get_nonce: the u64 counter little-endian in the first 8 of 24 bytes."""
    return struct.pack("<Q", seq) + bytes(16)


class SecretChannel:
    """One session key, an independent counter per direction, both 0 at set_key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != SecretBox.KEY_SIZE:
            raise ValueError("a secretbox key is 32 bytes")
        self._box = SecretBox(key)
        self.send_seq = 0
        self.recv_seq = 0

    def seal(self, plaintext: bytes) -> bytes:
        # Counter first, then seal: the first frame in each direction uses nonce 1.
        self.send_seq += 1
        return self._box.encrypt(plaintext, nonce(self.send_seq)).ciphertext

    def open(self, payload: bytes) -> bytes:
        """Decrypt one received payload.

        @raise EmulatorError: the MAC does not verify under the next counter (a flipped
            byte, a replayed or reordered frame): tcp.rs "decryption error".
        """
        # tcp.rs Encrypt::dec: 0- and 1-byte payloads are not ciphertexts (rd >= 1.2.4);
        # they pass up as they are and the counter stays put.
        if len(payload) <= 1:
            return payload
        self.recv_seq += 1
        try:
            return self._box.decrypt(payload, nonce(self.recv_seq))
        except CryptoError as e:
            raise EmulatorError(f"decryption error at receive counter {self.recv_seq}") from e


# --- key exchange pieces (client.rs secure_connection, common.rs) ---------------------------


def open_id_pk(signed: bytes, verify_key: bytes, expected_id: str) -> bytes:
    """common.rs decode_id_pk plus the id check: the 32-byte key inside a signed IdPk.

    Used both for the host's SignedId (key = the host's Ed25519 identity) and for the
    rendezvous server's PunchHoleResponse.pk / RelayResponse.pk (key = the server key).

    @raise HandshakeError: bad signature, unparseable IdPk, wrong key length, other id.
    """
    try:
        body = VerifyKey(verify_key).verify(signed)
    except (BadSignatureError, ValueError) as e:
        raise HandshakeError("signature mismatch") from e
    idpk = pb.IdPk()
    try:
        idpk.ParseFromString(body)
    except DecodeError as e:
        raise HandshakeError("signed body is not an IdPk") from e
    if len(idpk.pk) != 32:
        raise HandshakeError(f"signed key has {len(idpk.pk)} bytes, not 32")
    if idpk.id != expected_id:
        raise WrongPeerId(f"signed id {idpk.id!r} is not the peer id {expected_id!r}")
    return bytes(idpk.pk)


def build_public_key(
    host_x25519_pk: bytes, client_sk: PrivateKey | None = None, key: bytes | None = None
) -> tuple[pb.Message, bytes]:
    """common.rs create_symmetric_key_msg: our X25519 pk and the sealed session key.

    Fresh keys by default; a test passes C{client_sk}/C{key} to reproduce a vector.
    """
    sk = client_sk if client_sk is not None else PrivateKey.generate()
    session_key = key if key is not None else os.urandom(SecretBox.KEY_SIZE)
    sealed = Box(sk, PublicKey(host_x25519_pk)).encrypt(session_key, bytes(24)).ciphertext
    msg = pb.Message(
        public_key=pb.PublicKey(asymmetric_value=bytes(sk.public_key), symmetric_value=sealed)
    )
    return msg, session_key


def request_relay_frame(
    uuid: str, licence_key: str = "", peer_id: str = "", conn_type: int = rz.DEFAULT_CONN
) -> bytes:
    """client.rs create_relay: the one plaintext frame a client sends to hbbr first.

    It carries the session's conn_type (FILE_TRANSFER 1, PORT_FORWARD 2).
    """
    rr = rz.RequestRelay(
        uuid=uuid,
        licence_key=licence_key,
        id=peer_id,
        conn_type=conn_type,  # type: ignore[arg-type]
    )
    return encode_frame(rz.RendezvousMessage(request_relay=rr).SerializeToString())


# --- login (client.rs handle_hash, create_login_msg) ----------------------------------------


def password_h1(password: str, salt: str) -> bytes:
    return hashlib.sha256(password.encode() + salt.encode()).digest()


def password_proof(password: str, salt: str, challenge: str) -> bytes:
    """LoginRequest.password: SHA256(SHA256(password || salt) || challenge)."""
    return hashlib.sha256(password_h1(password, salt) + challenge.encode()).digest()


def default_supported_decoding() -> pb.SupportedDecoding:
    """What a stock 64-bit desktop client without hardware decoders announces."""
    return pb.SupportedDecoding(
        ability_vp9=1,
        ability_vp8=1,
        ability_av1=1,
        i444=pb.CodecAbility(vp9=True, av1=True),
    )


@dataclass
class ClientIdentity:
    """Who the emulated client says it is in its LoginRequest."""

    my_id: str = "987654321"
    my_name: str = "Tester"
    my_platform: str = "Linux"
    version: str = CLIENT_VERSION
    session_id: int = field(default_factory=lambda: secrets.randbits(63) | 1)
    supported_decoding: pb.SupportedDecoding = field(default_factory=default_supported_decoding)


#: What a LoginRequest asks for besides a remote desktop (client.rs create_login_msg).
SessionKind = pb.FileTransfer | pb.PortForward | None


def build_login_request(
    peer_id: str, proof: bytes, who: ClientIdentity, kind: SessionKind = None
) -> pb.Message:
    """A LoginRequest as create_login_msg builds it.

    Without C{kind} a remote-desktop request (no conn-type union, the option with
    supported_decoding); with a C{FileTransfer} or C{PortForward} that union member and
    no option at all (client.rs get_option_message returns None for those kinds).
    """
    lr = pb.LoginRequest(
        username=peer_id,
        password=proof,
        my_id=who.my_id,
        my_name=who.my_name,
        session_id=who.session_id,
        version=who.version,
        my_platform=who.my_platform,
    )
    if isinstance(kind, pb.FileTransfer):
        lr.file_transfer.CopyFrom(kind)
    elif isinstance(kind, pb.PortForward):
        lr.port_forward.CopyFrom(kind)
    else:
        lr.option.CopyFrom(pb.OptionMessage(supported_decoding=who.supported_decoding))
    # os_login is always present in a stock client's request, usually empty.
    lr.os_login.SetInParent()
    return pb.Message(login_request=lr)


# --- message builders for the session phase -------------------------------------------------


def mouse_event(mask: int, x: int, y: int, modifiers: tuple[int, ...] = ()) -> pb.Message:
    """mask = buttons << 3 | type (common.rs); x, y absolute for move/down/up."""
    ev = pb.MouseEvent(mask=mask, x=x, y=y)
    ev.modifiers.extend(modifiers)  # type: ignore[arg-type]
    return pb.Message(mouse_event=ev)


def key_event(
    *,
    down: bool = False,
    press: bool = False,
    mode: int = pb.KeyboardMode.Legacy,
    control_key: int | None = None,
    chr: int | None = None,
    unicode: int | None = None,
    seq: str | None = None,
    modifiers: tuple[int, ...] = (),
) -> pb.Message:
    ev = pb.KeyEvent(down=down, press=press, mode=mode, modifiers=list(modifiers))  # type: ignore[arg-type]
    if control_key is not None:
        ev.control_key = control_key  # type: ignore[assignment]
    elif chr is not None:
        ev.chr = chr
    elif unicode is not None:
        ev.unicode = unicode
    elif seq is not None:
        ev.seq = seq
    return pb.Message(key_event=ev)


def clipboard_message(text: str, compress: Callable[[bytes], bytes] | None = None) -> pb.Message:
    """clipboard.rs: content is the zstd frame only when that is shorter.

    The emulator does not depend on zstd; pass C{compress} (level-3 zstd) to send what a
    stock client sends for long text.
    """
    raw = text.encode()
    packed = compress(raw) if compress is not None else raw
    if compress is not None and len(packed) < len(raw):
        return pb.Message(clipboard=pb.Clipboard(compress=True, content=packed))
    return pb.Message(clipboard=pb.Clipboard(compress=False, content=raw))


def misc_message(**fields: object) -> pb.Message:
    """Misc with one field set, e.g. misc_message(refresh_video=True), close_reason=""."""
    return pb.Message(misc=pb.Misc(**fields))  # type: ignore[arg-type]


# --- the client ----------------------------------------------------------------------------


@dataclass
class LoginResult:
    response: pb.LoginResponse
    hash: pb.Hash
    before: list[pb.Message]
    """Messages other than Hash/TestDelay that arrived before the LoginResponse."""


class RustDeskClient:
    """A connected emulated client; see the module docstring for the sequence."""

    def __init__(
        self,
        sock: socket.socket,
        peer_id: str,
        host_sign_pk: bytes | None,
        *,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.sock = sock
        self.peer_id = peer_id
        self.host_sign_pk = host_sign_pk
        self.timeout = timeout
        self.sock.settimeout(timeout)
        self.reader = FrameReader()
        self.channel: SecretChannel | None = None
        self.backlog: deque[pb.Message] = deque()
        self.unparseable = 0
        self.test_delays_echoed = 0
        self.hash: pb.Hash | None = None

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        peer_id: str,
        host_sign_pk: bytes | None,
        *,
        relay_uuid: str | None = None,
        licence_key: str = "",
        timeout: float = CONNECT_TIMEOUT,
        conn_type: int = rz.DEFAULT_CONN,
    ) -> RustDeskClient:
        """TCP connect (to the host, or to hbbr with C{relay_uuid}), nothing read yet."""
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if relay_uuid is not None:
            sock.sendall(request_relay_frame(relay_uuid, licence_key, peer_id, conn_type))
        return cls(sock, peer_id, host_sign_pk, timeout=timeout)

    # -- low level

    def _read_payload(self, max_payload: int = PRACTICAL_MAX_FRAME) -> bytes:
        self.reader.max_payload = max_payload
        while True:
            payload = self.reader.next()
            if payload is not None:
                return payload
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError as e:
                raise PeerClosed("connection reset by the host") from e
            except TimeoutError as e:
                raise EmulatorError(f"no frame from the host within {self.timeout} s") from e
            if not data:
                raise PeerClosed("the host closed the connection")
            self.reader.feed(data)

    def send_payload(self, payload: bytes) -> None:
        """Frame and send bytes as they are (no encryption, no counter)."""
        self.sock.sendall(encode_frame(payload))

    def send(self, msg: pb.Message) -> None:
        data = msg.SerializeToString()
        if self.channel is not None:
            data = self.channel.seal(data)
        self.send_payload(data)

    def send_tampered(self, msg: pb.Message, flip_at: int = -1, mask: int = 0x01) -> bytes:
        """Seal C{msg} like L{send} (the counter advances) but flip one bit of the payload.

        For the "one flipped byte closes the session" test; returns the sent payload.
        """
        if self.channel is None:
            raise EmulatorError("no session key: nothing to tamper with")
        sealed = bytearray(self.channel.seal(msg.SerializeToString()))
        sealed[flip_at] ^= mask
        self.send_payload(bytes(sealed))
        return bytes(sealed)

    def recv_raw(self) -> pb.Message | None:
        """The next message as received, None for an unparseable one (a stock client
        ignores those: io_loop.rs)."""
        payload = self._read_payload()
        if self.channel is not None:
            payload = self.channel.open(payload)
        msg = pb.Message()
        try:
            msg.ParseFromString(payload)
        except DecodeError:
            self.unparseable += 1
            return None
        return msg

    def recv(self) -> pb.Message:
        """The next message, host TestDelays echoed (and returned too) as a stock client."""
        if self.backlog:
            return self.backlog.popleft()
        while True:
            msg = self.recv_raw()
            if msg is None:
                continue
            self._echo_test_delay(msg)
            return msg

    def recv_pending(self) -> list[pb.Message]:
        """The messages that have already arrived, without waiting (TestDelays echoed).

        What the client's io_loop handles between two of its own timer ticks; the file
        transfer reads the host's errors this way while it uploads.
        """
        out = list(self.backlog)
        self.backlog.clear()
        while True:
            payload = self.reader.next()
            if payload is None:
                readable, _, _ = select.select([self.sock], [], [], 0)
                if not readable:
                    return out
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError as e:
                    raise PeerClosed("connection reset by the host") from e
                if not data:
                    raise PeerClosed("the host closed the connection")
                self.reader.feed(data)
                continue
            if self.channel is not None:
                payload = self.channel.open(payload)
            msg = pb.Message()
            try:
                msg.ParseFromString(payload)
            except DecodeError:
                self.unparseable += 1
                continue
            self._echo_test_delay(msg)
            out.append(msg)

    def set_raw(self) -> bytes:
        """tcp.rs set_raw: no framing, no encryption from here on, both ways.

        Returns the bytes already read but not decoded: with the codec switched to raw
        they are the first tunnelled bytes (port_forward.rs hands them on as they are).
        Afterwards use C{sock} directly.
        """
        self.channel = None
        return self.reader.take_buffered()

    def recv_until(self, kind: str, limit: int = 1000) -> pb.Message:
        """Drop messages until one whose union is C{kind} (TestDelays still echoed)."""
        for _ in range(limit):
            msg = self.recv()
            if msg.WhichOneof("union") == kind:
                return msg
        raise EmulatorError(f"no {kind} in {limit} messages")

    def _echo_test_delay(self, msg: pb.Message) -> None:
        # client.rs handle_test_delay: echo the host's TestDelay unchanged.
        if msg.WhichOneof("union") == "test_delay" and not msg.test_delay.from_client:
            self.send(pb.Message(test_delay=msg.test_delay))
            self.test_delays_echoed += 1

    def close(self) -> None:
        self.sock.close()

    # -- handshake

    def handshake(self, *, accept_insecure: bool = False) -> bool:
        """client.rs secure_connection; True when the session is encrypted.

        Without a host key a stock client sends one empty Message and reads nothing.
        """
        if self.host_sign_pk is None:
            self.send_payload(b"")
            return False
        first = self._read_payload(MAX_HANDSHAKE_FRAME)
        msg = pb.Message()
        reason = ""
        try:
            msg.ParseFromString(first)
        except DecodeError:
            reason = "invalid message format"
        if not reason and msg.WhichOneof("union") != "signed_id":
            reason = f"first message is {msg.WhichOneof('union')}, not signed_id"
        if reason:
            # Stock: empty Message, go on in plaintext; the frame it read is lost.
            self.send_payload(b"")
            return self._insecure(reason, accept_insecure)
        try:
            host_x25519 = open_id_pk(msg.signed_id.id, self.host_sign_pk, self.peer_id)
        except WrongPeerId as e:
            # Stock: "sign failure" sends an empty Message and goes on in plaintext.
            self.send(pb.Message())
            return self._insecure(e, accept_insecure)
        except HandshakeError as e:
            # Stock: "pk mismatch, fall back to non-secure" sends PublicKey{} (both empty).
            self.send(pb.Message(public_key=pb.PublicKey()))
            return self._insecure(e, accept_insecure)
        reply, key = build_public_key(host_x25519)
        self.send(reply)
        # Encryption applies from the next frame on, in both directions.
        self.channel = SecretChannel(key)
        return True

    @staticmethod
    def _insecure(reason: str | HandshakeError, accept_insecure: bool) -> bool:
        if not accept_insecure:
            raise reason if isinstance(reason, HandshakeError) else HandshakeError(reason)
        return False

    # -- login

    def login(
        self,
        password: str | None,
        who: ClientIdentity | None = None,
        *,
        kind: SessionKind = None,
        limit: int = 1000,
    ) -> LoginResult:
        """Wait for Hash, send the LoginRequest, return the LoginResponse.

        C{password=None} sends an empty proof, as a stock client without a saved password
        does (it then waits for the host's user to accept).  C{kind} asks for a file
        transfer or a port forward instead of the desktop (L{build_login_request}).
        """
        who = who or ClientIdentity()
        before: list[pb.Message] = []
        hash_msg = self.hash
        if hash_msg is None:
            hash_msg = self._wait_for("hash", before, limit).hash
            self.hash = hash_msg
        proof = (
            b"" if password is None else password_proof(password, hash_msg.salt, hash_msg.challenge)
        )
        self.send(build_login_request(self.peer_id, proof, who, kind))
        response = self._wait_for("login_response", before, limit).login_response
        return LoginResult(response=response, hash=hash_msg, before=before)

    def _wait_for(self, kind: str, before: list[pb.Message], limit: int) -> pb.Message:
        for _ in range(limit):
            msg = self.recv()
            which = msg.WhichOneof("union")
            if which == kind:
                return msg
            if which != "test_delay":
                before.append(msg)
        raise EmulatorError(f"no {kind} in {limit} messages")

    # -- session helpers

    def send_mouse(self, mask: int, x: int, y: int, modifiers: tuple[int, ...] = ()) -> None:
        self.send(mouse_event(mask, x, y, modifiers))

    def send_key(self, **kwargs: object) -> None:
        self.send(key_event(**kwargs))  # type: ignore[arg-type]

    def send_clipboard(self, text: str, compress: Callable[[bytes], bytes] | None = None) -> None:
        self.send(clipboard_message(text, compress))

    def send_test_delay(self, **fields: object) -> None:
        self.send(pb.Message(test_delay=pb.TestDelay(**fields)))  # type: ignore[arg-type]

    def send_misc(self, **fields: object) -> None:
        self.send(misc_message(**fields))

    def closed_by_peer(self, limit: int = 10000) -> bool:
        """Read until the host closes; True on EOF/reset, False if messages keep coming."""
        for _ in range(limit):
            try:
                self.recv_raw()
            except PeerClosed:
                return True
        return False
