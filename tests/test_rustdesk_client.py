"""The stock RustDesk client emulator (tests/support/rustdesk_client.py), checked twice:

* against the computed vectors of the session specification (§10 of the reference
  document), each re-derived here from its inputs through the emulator's own code, so a
  change in framing, nonces, key exchange or login encoding fails a test;
* against a minimal RustDesk host written in this file (independent of the emulator and
  of LiteDesk: its own framing, counters and checks, PyNaCl directly) over real loopback
  sockets: handshake, Hash, LoginRequest, TestDelay echo, input, a flipped byte.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.proto import message_pb2 as pb
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rustdesk import rustdesk_host_factory
from tests.support import rustdesk_client as rc
from tests.support.vectors import FRAME_HEADERS

HOST_ID = "123456789"
KEY = bytes(range(32))


def _hex(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


# --- §10 vectors ------------------------------------------------------------------------------


class VectorTests(SynchronousTestCase):
    def test_t1_frame_headers(self) -> None:
        cases = FRAME_HEADERS
        for n, want in cases.items():
            self.assertEqual(rc.frame_header(n).hex(), want, n)
        self.assertRaises(ValueError, rc.frame_header, 0x40000000)

    def test_t2_nonces(self) -> None:
        self.assertEqual(rc.nonce(1), b"\x01" + bytes(23))
        self.assertEqual(rc.nonce(2), b"\x02" + bytes(23))
        self.assertEqual(rc.nonce(256), b"\x00\x01" + bytes(22))

    def test_t3_password_proof(self) -> None:
        self.assertEqual(
            rc.password_h1("abc", "s").hex(),
            "938074ac65401e8c22ea06b5d9bdcc9c4450b311b080c929aee32e04763f6bf4",
        )
        self.assertEqual(
            rc.password_proof("abc", "s", "c").hex(),
            "3c6890a42f2d96c9be9f2c4fb76726a2746828a6c7623c0f51bf972940b8dd9a",
        )

    def test_t4_t6_hash_frame_sealed(self) -> None:
        hb = pb.Message(hash=pb.Hash(salt="s", challenge="c")).SerializeToString()
        self.assertEqual(rc.encode_frame(hb).hex(), "20" + "4a060a0173120163")
        ch = rc.SecretChannel(KEY)
        self.assertEqual(
            rc.encode_frame(ch.seal(hb)).hex(),
            "60ca47911cc834e970e1b1d49c83122ff5883d8021810df9ad",
        )
        self.assertEqual(ch.seal(hb).hex(), "1de36c73354f27423bdf9ca2d70efc946118c84e39369c44")
        self.assertEqual(ch.send_seq, 2)
        self.assertEqual(rc.SecretChannel(KEY).seal(b"").hex(), "15c58daf8a39a27eb97e2b88fc37c3f1")
        # The receiving side opens them with its own counter, in order.
        rx = rc.SecretChannel(KEY)
        self.assertEqual(rx.open(_hex("ca47911cc834e970e1b1d49c83122ff5883d8021810df9ad")), hb)
        self.assertEqual(rx.open(_hex("1de36c73354f27423bdf9ca2d70efc946118c84e39369c44")), hb)

    def test_t5_mouse(self) -> None:
        def ser(m: pb.Message) -> str:
            return m.SerializeToString().hex()

        self.assertEqual(ser(rc.mouse_event(0, 10, 20)), "520410141828")
        self.assertEqual(ser(rc.mouse_event(9, 10, 20)), "5206080910141828")
        self.assertEqual(ser(rc.mouse_event(10, 10, 20)), "5206080a10141828")
        self.assertEqual(ser(rc.mouse_event(3, 0, -1)), "520408031801")

    def test_t7_signed_id_opened(self) -> None:
        frame = _hex(
            "c5011a6f0a6de5f0553884b884c9e98f249a4e24b0e0daddb0b7670cdfcc2e9f0bed1c1ef40ca0798d"
            "da7fcab681995481c217e35d0996fa64d92d723fc52723ce5005fecd010a0931323334353637383912"
            "20ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59"
        )
        host_sign = SigningKey(bytes([1]) * 32)
        host_x = PrivateKey(bytes([2]) * 32)
        reader = rc.FrameReader()
        reader.feed(frame)
        payload = reader.next()
        assert payload is not None
        self.assertEqual(reader.buffered, 0)
        msg = pb.Message.FromString(payload)
        got = rc.open_id_pk(msg.signed_id.id, bytes(host_sign.verify_key), HOST_ID)
        self.assertEqual(got, bytes(host_x.public_key))
        self.assertTrue(bytes(host_sign.verify_key).hex().startswith("8a88e3dd"))
        self.assertRaises(
            rc.WrongPeerId, rc.open_id_pk, msg.signed_id.id, bytes(host_sign.verify_key), "1"
        )
        other = bytes(SigningKey(bytes([9]) * 32).verify_key)
        self.assertRaises(rc.HandshakeError, rc.open_id_pk, msg.signed_id.id, other, HOST_ID)

    def test_t8_public_key(self) -> None:
        host_x = PrivateKey(bytes([2]) * 32)
        msg, key = rc.build_public_key(bytes(host_x.public_key), PrivateKey(bytes([3]) * 32), KEY)
        self.assertEqual(key, KEY)
        self.assertEqual(
            rc.encode_frame(msg.SerializeToString()).hex(),
            "590122540a205dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef2212"
            "30c28d90ec2da3f7078f02c690e7a2ec57e4b7f6da3e5957f79eb585a0c54042bdbf1f99078792"
            "0b95e8786330f276bc3a",
        )
        pk = msg.public_key
        opened = Box(host_x, PublicKey(pk.asymmetric_value)).decrypt(pk.symmetric_value, bytes(24))
        self.assertEqual(opened, KEY)
        # Fresh keys by default: two calls never share a session key.
        a = rc.build_public_key(bytes(host_x.public_key))[1]
        self.assertNotEqual(a, rc.build_public_key(bytes(host_x.public_key))[1])

    def test_t9_server_signed_host_key(self) -> None:
        rs = SigningKey(bytes([4]) * 32)
        self.assertEqual(
            base64.b64encode(bytes(rs.verify_key)).decode(),
            "ypOsFwUYcHHWe4PH/w7+gQjo7EUwV113JoeTM9vavnw=",
        )
        signed = _hex(
            "282137edc983341d7c7b4f36be3046d49f5cffd15fa6a1dcb429b06fe615ee18bf6de321d7cc3e36"
            "3a5e5f49b04a13f11f869c995bbe0a8f0c39991566f7a50f0a0931323334353637383912208a88e3"
            "dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        )
        host_pk = rc.open_id_pk(signed, bytes(rs.verify_key), HOST_ID)
        self.assertEqual(host_pk, bytes(SigningKey(bytes([1]) * 32).verify_key))

    def test_t10_login_request(self) -> None:
        who = rc.ClientIdentity(my_id="987654321", my_name="Tester", session_id=42)
        msg = rc.build_login_request(HOST_ID, rc.password_proof("abc", "s", "c"), who)
        body = msg.SerializeToString()
        self.assertEqual(
            body.hex(),
            "3a620a0931323334353637383912203c6890a42f2d96c9be9f2c4fb76726a2746828a6c7623c0f51"
            "bf972940b8dd9a22093938373635343332312a06546573746572320e520c0801280130013a041001"
            "1801502a5a05312e342e3962006a054c696e7578",
        )
        sealed = rc.encode_frame(rc.SecretChannel(KEY).seal(body))
        self.assertTrue(sealed.hex().startswith("d101bb8ad38cfaf3850f"), sealed[:10].hex())

    def test_t11_clipboard(self) -> None:
        zc = zstandard.ZstdCompressor(level=3).compress
        short = rc.clipboard_message("hello", zc).clipboard
        self.assertEqual((short.compress, short.content), (False, b"hello"))
        long = rc.clipboard_message("a" * 1000, zc).clipboard
        self.assertTrue(long.compress)
        self.assertEqual(len(long.content), 19)
        self.assertEqual(zstandard.ZstdDecompressor().decompress(long.content), b"a" * 1000)

    def test_t13_t14_keys_and_misc(self) -> None:
        def ser(m: pb.Message) -> str:
            return m.SerializeToString().hex()

        mapped = pb.KeyboardMode.Map
        self.assertEqual(ser(rc.key_event(down=True, chr=38, mode=mapped)), "7a06080120264801")
        self.assertEqual(ser(rc.key_event(down=True, chr=0x1E, mode=mapped)), "7a060801201e4801")
        self.assertEqual(ser(rc.key_event(down=True, chr=ord("a"))), "7a0408012061")
        self.assertEqual(ser(rc.key_event(press=True, control_key=pb.Return)), "7a041001181b")
        self.assertEqual(ser(rc.misc_message(close_reason="")), "9a01024a00")
        self.assertEqual(ser(rc.misc_message(refresh_video=True)), "9a01025001")

    def test_t15_short_payload_bypasses_decryption(self) -> None:
        rx = rc.SecretChannel(KEY)
        self.assertEqual(rx.open(b""), b"")
        self.assertEqual(rx.open(b"\x07"), b"\x07")
        self.assertEqual(rx.recv_seq, 0)
        tx = rc.SecretChannel(KEY)
        self.assertEqual(rx.open(tx.seal(b"x")), b"x")
        self.assertEqual(rx.recv_seq, 1)

    def test_replayed_or_reordered_frame_refused(self) -> None:
        tx, rx = rc.SecretChannel(KEY), rc.SecretChannel(KEY)
        first, second = tx.seal(b"one"), tx.seal(b"two")
        self.assertRaises(rc.EmulatorError, rx.open, second)
        rx = rc.SecretChannel(KEY)
        rx.open(first)
        self.assertRaises(rc.EmulatorError, rx.open, first)

    def test_request_relay_frame(self) -> None:
        frame = rc.request_relay_frame("u-1", "lk", HOST_ID)
        reader = rc.FrameReader()
        reader.feed(frame)
        payload = reader.next()
        assert payload is not None
        rr = rz.RendezvousMessage.FromString(payload).request_relay
        self.assertEqual((rr.uuid, rr.licence_key, rr.id), ("u-1", "lk", HOST_ID))


# --- properties -------------------------------------------------------------------------------


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.binary(max_size=300), max_size=6),
        st.integers(min_value=1, max_value=17),
    )
    def test_frames_round_trip_in_any_chunking(self, payloads: list[bytes], step: int) -> None:
        wire = b"".join(rc.encode_frame(p) for p in payloads)
        reader = rc.FrameReader()
        out: list[bytes] = []
        for i in range(0, len(wire), step):
            reader.feed(wire[i : i + step])
            while (p := reader.next()) is not None:
                out.append(p)
        self.assertEqual(out, payloads)
        self.assertEqual(reader.buffered, 0)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=64))
    def test_reader_on_garbage_never_raises_unexpected(self, data: bytes) -> None:
        reader = rc.FrameReader(max_payload=32)
        reader.feed(data)
        try:
            while reader.next() is not None:
                pass
        except rc.EmulatorError:
            pass

    @settings(max_examples=100, deadline=None)
    @given(st.binary(min_size=0, max_size=200), st.data())
    def test_any_flipped_bit_is_refused(self, plain: bytes, data: st.DataObject) -> None:
        sealed = bytearray(rc.SecretChannel(KEY).seal(plain))
        pos = data.draw(st.integers(0, len(sealed) - 1))
        sealed[pos] ^= 1 << data.draw(st.integers(0, 7))
        self.assertRaises(rc.EmulatorError, rc.SecretChannel(KEY).open, bytes(sealed))

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200))
    def test_open_id_pk_refuses_garbage_with_handshake_error(self, blob: bytes) -> None:
        vk = bytes(SigningKey(bytes([1]) * 32).verify_key)
        self.assertRaises(rc.HandshakeError, rc.open_id_pk, blob, vk, HOST_ID)


# --- a minimal RustDesk host, independent of the emulator --------------------------------------


def _frame(payload: bytes) -> bytes:
    # Written differently from the emulator on purpose: pick the width, then shift.
    n = len(payload)
    width = 1 if n < 1 << 6 else 2 if n < 1 << 14 else 3 if n < 1 << 22 else 4
    return ((n << 2) | (width - 1)).to_bytes(width, "little") + payload


def _nonce(seq: int) -> bytes:
    return seq.to_bytes(8, "little").ljust(24, b"\0")


@dataclass
class HostRun:
    """What the minimal host saw on one connection."""

    first: bytes | None = None
    relay: rz.RequestRelay | None = None
    key: bytes | None = None
    messages: list[pb.Message] = field(default_factory=list)
    echo_payloads: list[bytes] = field(default_factory=list)
    closed_reason: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class MiniHost:
    """Accepts one connection and plays a RustDesk host (server.rs, connection.rs).

    SignedId first (unless C{send_signed_id} is False), PublicKey, then Hash and a TestDelay
    (encrypted), LoginResponse to the LoginRequest, then records everything until the
    client closes or a frame fails to decrypt (the host then closes, as tcp.rs does).
    """

    def __init__(
        self,
        password: str = "secret",
        *,
        sign_id: str = HOST_ID,
        sign_key: SigningKey | None = None,
        expect_relay: bool = False,
    ) -> None:
        self.identity = SigningKey.generate()
        self.sign_key = sign_key or self.identity
        self.sign_id = sign_id
        self.password = password
        self.salt = "abcdefghijkmnpqrstuvwxyz23456789"
        self.challenge = "x7y8z9"
        self.expect_relay = expect_relay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.run = HostRun()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def verify_key(self) -> bytes:
        return bytes(self.identity.verify_key)

    # framing helpers over a blocking socket
    def _read(self, conn: socket.socket) -> bytes:
        b0 = self._exact(conn, 1)
        width = (b0[0] & 3) + 1
        n = int.from_bytes(b0 + self._exact(conn, width - 1), "little") >> 2
        if n > 1 << 20:
            raise ValueError("oversized frame")
        return self._exact(conn, n)

    @staticmethod
    def _exact(conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError("client closed")
            buf += chunk
        return buf

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        try:
            self._session(conn)
        except EOFError as e:
            self.run.closed_reason = str(e)
        except (CryptoError, ValueError, OSError) as e:
            self.run.closed_reason = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
            self.listener.close()
            self.run.done.set()

    def _session(self, conn: socket.socket) -> None:
        if self.expect_relay:
            self.run.relay = rz.RendezvousMessage.FromString(self._read(conn)).request_relay
        eph = PrivateKey.generate()
        idpk = pb.IdPk(id=self.sign_id, pk=bytes(eph.public_key)).SerializeToString()
        signed = pb.Message(signed_id=pb.SignedId(id=self.sign_key.sign(idpk)))
        conn.sendall(_frame(signed.SerializeToString()))
        self.run.first = self._read(conn)
        reply = pb.Message.FromString(self.run.first)
        pk = reply.public_key
        if reply.WhichOneof("union") != "public_key" or len(pk.asymmetric_value) != 32:
            return
        key = Box(eph, PublicKey(pk.asymmetric_value)).decrypt(pk.symmetric_value, bytes(24))
        self.run.key = key
        box = SecretBox(key)
        sent = 0

        def send(m: pb.Message) -> None:
            nonlocal sent
            sent += 1
            conn.sendall(_frame(box.encrypt(m.SerializeToString(), _nonce(sent)).ciphertext))

        send(pb.Message(hash=pb.Hash(salt=self.salt, challenge=self.challenge)))
        send(pb.Message(test_delay=pb.TestDelay(last_delay=25, target_bitrate=2000)))
        received = 0
        while True:
            payload = self._read(conn)
            if len(payload) > 1:
                received += 1
                payload = box.decrypt(payload, _nonce(received))
            msg = pb.Message.FromString(payload)
            self.run.messages.append(msg)
            if msg.WhichOneof("union") == "test_delay":
                self.run.echo_payloads.append(payload)
            if msg.WhichOneof("union") == "login_request":
                send(self._answer(msg.login_request))

    def _answer(self, lr: pb.LoginRequest) -> pb.Message:
        h1 = hashlib.sha256(self.password.encode() + self.salt.encode()).digest()
        want = hashlib.sha256(h1 + self.challenge.encode()).digest()
        if lr.password != want:
            return pb.Message(login_response=pb.LoginResponse(error="Wrong Password"))
        info = pb.PeerInfo(username="u", hostname="h", platform="Linux", version="1.4.9")
        info.displays.add(width=640, height=480, name="0", online=True)
        return pb.Message(login_response=pb.LoginResponse(peer_info=info))

    def wait(self) -> HostRun:
        if not self.run.done.wait(10):
            raise AssertionError("mini host did not finish")
        return self.run


class LoopbackTests(SynchronousTestCase):
    def _client(self, host: MiniHost, **kw: Any) -> rc.RustDeskClient:
        client = rc.RustDeskClient.connect(
            "127.0.0.1", host.port, HOST_ID, kw.pop("sign_pk", host.verify_key), timeout=5, **kw
        )
        self.addCleanup(client.close)
        return client

    def test_login_and_input(self) -> None:
        host = MiniHost()
        client = self._client(host)
        self.assertTrue(client.handshake())
        result = client.login("secret", rc.ClientIdentity(session_id=7))
        self.assertEqual(result.response.WhichOneof("union"), "peer_info")
        self.assertEqual(result.response.peer_info.displays[0].width, 640)
        self.assertEqual(result.hash.salt, host.salt)
        client.send_mouse(9, 10, 20)
        client.send_key(down=True, chr=97)
        client.send_clipboard("hello")
        client.send_misc(close_reason="")
        client.close()
        run = host.wait()
        self.assertEqual(run.closed_reason, "client closed")
        kinds = [m.WhichOneof("union") for m in run.messages]
        self.assertEqual(
            [k for k in kinds if k != "test_delay"],
            ["login_request", "mouse_event", "key_event", "clipboard", "misc"],
        )
        lr = run.messages[kinds.index("login_request")].login_request
        self.assertEqual((lr.username, lr.my_id, lr.my_name), (HOST_ID, "987654321", "Tester"))
        self.assertEqual((lr.version, lr.my_platform, lr.session_id), ("1.4.9", "Linux", 7))
        self.assertTrue(lr.HasField("os_login"))
        self.assertEqual(lr.option.supported_decoding.ability_vp9, 1)
        # T12: the client's echo of the host's TestDelay is byte-identical.
        self.assertEqual([p.hex() for p in run.echo_payloads], ["2a05181920d00f"])
        self.assertEqual(client.test_delays_echoed, 1)
        # The first client frame was the PublicKey in plaintext, sealed to the host's key.
        assert run.first is not None
        self.assertEqual(pb.Message.FromString(run.first).WhichOneof("union"), "public_key")

    def test_wrong_password(self) -> None:
        host = MiniHost("right")
        client = self._client(host)
        client.handshake()
        result = client.login("wrong")
        self.assertEqual(result.response.error, "Wrong Password")
        # The session stays open: a second attempt with the same Hash logs in.
        self.assertEqual(client.login("right").response.WhichOneof("union"), "peer_info")

    def test_flipped_byte_closes_session(self) -> None:
        host = MiniHost()
        client = self._client(host)
        client.handshake()
        client.login("secret")
        client.send_tampered(rc.mouse_event(0, 1, 1), flip_at=5)
        self.assertTrue(client.closed_by_peer())
        run = host.wait()
        self.assertIn("CryptoError", run.closed_reason)

    def test_signed_by_another_key_is_refused_as_stock_does(self) -> None:
        host = MiniHost(sign_key=SigningKey.generate())
        client = self._client(host)
        self.assertRaises(rc.HandshakeError, client.handshake)
        client.close()
        run = host.wait()
        assert run.first is not None
        first = pb.Message.FromString(run.first)
        # Stock "pk mismatch": PublicKey with both fields empty, no key.
        self.assertEqual(first.WhichOneof("union"), "public_key")
        self.assertEqual(first.public_key.asymmetric_value, b"")
        self.assertIsNone(run.key)

    def test_signed_for_another_id(self) -> None:
        host = MiniHost(sign_id="111")
        client = self._client(host)
        self.assertRaises(rc.WrongPeerId, client.handshake)
        client.close()
        self.assertEqual(host.wait().first, b"")

    def test_insecure_accepted_only_when_asked(self) -> None:
        host = MiniHost(sign_key=SigningKey.generate())
        client = self._client(host)
        self.assertFalse(client.handshake(accept_insecure=True))
        self.assertIsNone(client.channel)

    def test_no_host_key_sends_empty_message(self) -> None:
        host = MiniHost()
        client = self._client(host, sign_pk=None)
        self.assertFalse(client.handshake())
        client.close()
        self.assertEqual(host.wait().first, b"")

    def test_relay_leg_sends_request_relay_first(self) -> None:
        host = MiniHost(expect_relay=True)
        client = self._client(host, relay_uuid="uuid-1", licence_key="LK")
        self.assertTrue(client.handshake())
        client.close()
        run = host.wait()
        assert run.relay is not None
        self.assertEqual((run.relay.uuid, run.relay.licence_key), ("uuid-1", "LK"))
        self.assertEqual(run.relay.id, HOST_ID)

    def test_host_closing_mid_handshake_is_reported(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)

        def serve() -> None:
            conn, _ = listener.accept()
            conn.sendall(struct.pack("<B", 40 << 2) + b"\x1a")  # a truncated frame
            conn.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        vk = bytes(SigningKey.generate().verify_key)
        client = rc.RustDeskClient.connect("127.0.0.1", listener.getsockname()[1], HOST_ID, vk)
        self.addCleanup(client.close)
        self.assertRaises(rc.PeerClosed, client.handshake)
        t.join(5)

    def test_oversized_handshake_frame_refused(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)

        def serve() -> None:
            conn, _ = listener.accept()
            conn.sendall(rc.frame_header(rc.MAX_HANDSHAKE_FRAME + 1))
            conn.recv(1)
            conn.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        vk = bytes(SigningKey.generate().verify_key)
        client = rc.RustDeskClient.connect("127.0.0.1", listener.getsockname()[1], HOST_ID, vk)
        self.assertRaises(rc.EmulatorError, client.handshake)
        client.close()
        t.join(5)


# --- the emulator against LiteDesk's own host side (litedesk.rustdesk) -------------------------


class EchoLogin(Protocol):
    """Inner test protocol behind LiteDesk's secure channel: plays the login phase.

    Sends Hash on connect; echoes each LoginRequest back unchanged followed by a
    LoginResponse whose PeerInfo names the request's my_name and username; records
    everything else.
    """

    def __init__(self, seen: list[pb.Message], lost: Deferred[None]) -> None:
        self.reader = rc.FrameReader()
        self.seen = seen
        self.lost = lost

    def connectionMade(self) -> None:
        self._send(pb.Message(hash=pb.Hash(salt="s" * 32, challenge="c" * 6)))

    def _send(self, msg: pb.Message) -> None:
        assert self.transport is not None
        self.transport.write(rc.encode_frame(msg.SerializeToString()))

    def dataReceived(self, data: bytes) -> None:
        self.reader.feed(data)
        while (payload := self.reader.next()) is not None:
            msg = pb.Message.FromString(payload)
            self.seen.append(msg)
            if msg.WhichOneof("union") == "login_request":
                lr = msg.login_request
                self._send(msg)
                info = pb.PeerInfo(username=lr.my_name, hostname=lr.username, version="1.4.9")
                self._send(pb.Message(login_response=pb.LoginResponse(peer_info=info)))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class LiteDeskHostTests(TestCase):
    """The emulator against litedesk.rustdesk.rustdesk_host_factory over real TCP."""

    timeout = 30

    def setUp(self) -> None:
        self.key = SigningKey.generate()
        self.seen: list[pb.Message] = []
        self.inner_lost: Deferred[None] = Deferred()
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        inner = Factory.forProtocol(lambda: EchoLogin(self.seen, self.inner_lost))
        factory = rustdesk_host_factory(self.key, HOST_ID, inner, reactor)
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def _connect(self) -> rc.RustDeskClient:
        port: int = self.port.getHost().port  # type: ignore[attr-defined]
        client = rc.RustDeskClient.connect(
            "127.0.0.1", port, HOST_ID, bytes(self.key.verify_key), timeout=10
        )
        self.addCleanup(client.close)
        return client

    def _login(self) -> tuple[rc.RustDeskClient, rc.LoginResult]:
        client = self._connect()
        if not client.handshake():
            raise AssertionError("session not encrypted")
        who = rc.ClientIdentity(my_name="Emulated", session_id=99)
        return client, client.login("pw", who)

    async def test_handshake_hash_and_login_echo(self) -> None:
        client, result = await deferToThread(self._login)
        self.assertEqual(result.hash.challenge, "c" * 6)
        self.assertEqual(result.response.peer_info.username, "Emulated")
        self.assertEqual(result.response.peer_info.hostname, HOST_ID)
        # The LoginRequest came back through the encrypted channel unchanged.
        echoed = [m for m in result.before if m.WhichOneof("union") == "login_request"]
        self.assertEqual(len(echoed), 1)
        self.assertEqual(
            echoed[0].login_request.password, rc.password_proof("pw", "s" * 32, "c" * 6)
        )
        self.assertEqual(echoed[0].login_request.session_id, 99)
        self.assertEqual([m.WhichOneof("union") for m in self.seen], ["login_request"])
        assert client.channel is not None
        self.assertEqual((client.channel.send_seq, client.channel.recv_seq), (1, 3))
        client.close()
        await self.inner_lost

    async def test_flipped_byte_closes_session(self) -> None:
        client, _ = await deferToThread(self._login)
        client.send_tampered(rc.mouse_event(0, 5, 5), flip_at=3)
        self.assertTrue(await deferToThread(client.closed_by_peer))
        await self.inner_lost
        # Nothing after the bad frame reached the inner protocol, and the reason is logged.
        self.assertEqual([m.WhichOneof("union") for m in self.seen], ["login_request"])
        reasons = [
            e.get("reason")
            for e in self.events
            if "RustDesk channel closed" in str(e.get("log_format"))
        ]
        self.assertEqual(len(reasons), 1, self.events)
        self.assertIn("decrypt", str(reasons[0]).lower())

    async def test_replayed_frame_closes_session(self) -> None:
        client, _ = await deferToThread(self._login)
        assert client.channel is not None
        sealed = client.channel.seal(rc.mouse_event(0, 5, 5).SerializeToString())
        client.send_payload(sealed)
        client.send_payload(sealed)
        self.assertTrue(await deferToThread(client.closed_by_peer))
        await self.inner_lost
        kinds = [m.WhichOneof("union") for m in self.seen]
        self.assertEqual(kinds, ["login_request", "mouse_event"])


class IndependenceTests(SynchronousTestCase):
    def test_emulator_imports_nothing_of_litedesks_protocol_code(self) -> None:
        # The emulator checks LiteDesk's implementation; sharing code would hide bugs.
        tree = ast.parse(Path(rc.__file__).read_text())
        modules = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        ours = {m for m in modules if m.startswith("litedesk")}
        self.assertEqual(ours, {"litedesk.proto"})
