"""The stock RustDesk host emulator (tests/support/rustdesk_host.py), checked on its own.

Both it and the client emulator (tests/support/rustdesk_client.py,
tests/support/rustdesk_rendezvous.py) were written from RustDesk's source and share no
code, with each other or with LiteDesk's session classes; so the emulator is proved here
against the session specification's vectors, against its own rules on a test clock, and
against the client emulator over loopback sockets and through a real
C{twistd litedesk-relay}.  Only then is it fit to test LiteDesk's viewer.
"""

from __future__ import annotations

import ast
import atexit
import base64
import socket
import threading
from pathlib import Path
from typing import Any

import av
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey
from PIL import Image
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as pb
from litedesk.proto import rendezvous_pb2 as rz
from tests.support import rustdesk_client as rc
from tests.support import rustdesk_host as rh
from tests.support import rustdesk_rendezvous as rr
from tests.support.ports import free_port_pair
from tests.support.processes import RelayProcess
from tests.support.skips import cannot_run
from tests.support.vectors import FRAME_HEADERS

HOST_ID = "123456789"
PASSWORD = "emulated host password"
KEY = bytes(range(32))
SIZE = (320, 240)


def _hex(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


# --- the specification's vectors ------------------------------------------------------------

T7 = (
    "c5011a6f0a6de5f0553884b884c9e98f249a4e24b0e0daddb0b7670cdfcc2e9f0bed1c1ef40ca0798dda7fca"
    "b681995481c217e35d0996fa64d92d723fc52723ce5005fecd010a0931323334353637383912"
    "20ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59"
)
T8 = (
    "590122540a205dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef221230c28d90"
    "ec2da3f7078f02c690e7a2ec57e4b7f6da3e5957f79eb585a0c54042bdbf1f990787920b95e8786330f276bc3a"
)


def _read_frame(sock: socket.socket) -> bytes:
    reader = rh.FrameReader()
    while (payload := reader.pop()) is None:
        data = sock.recv(65536)
        if not data:
            raise EOFError("closed")
        reader.feed(data)
    return payload


class VectorTests(SynchronousTestCase):
    def test_t1_frame_headers(self) -> None:
        cases = FRAME_HEADERS
        for n, want in cases.items():
            self.assertEqual(rh.frame_header(n).hex(), want, n)
        self.assertRaises(rh.FrameError, rh.frame_header, 0x40000000)

    def test_t6_t15_sealed_frames(self) -> None:
        hb = pb.Message(hash=pb.Hash(salt="s", challenge="c")).SerializeToString()
        tx = rh.Sealer(KEY)
        self.assertEqual(
            rh.encode_frame(tx.seal(hb)).hex(), "60ca47911cc834e970e1b1d49c83122ff5883d8021810df9ad"
        )
        self.assertEqual(tx.seal(hb).hex(), "1de36c73354f27423bdf9ca2d70efc946118c84e39369c44")
        self.assertEqual(rh.Sealer(KEY).seal(b"").hex(), "15c58daf8a39a27eb97e2b88fc37c3f1")
        rx = rh.Sealer(KEY)
        # T15: an empty or one-byte payload passes unopened and costs no counter.
        self.assertEqual(rx.open(b""), b"")
        self.assertEqual(rx.open(b"\x00"), b"\x00")
        self.assertEqual(rx.open(_hex("ca47911cc834e970e1b1d49c83122ff5883d8021810df9ad")), hb)
        self.assertEqual(rx.recv_seq, 1)

    def test_t7_t8_handshake_on_a_socket(self) -> None:
        """With the vectors' keys the host's first frame is T7 byte for byte, T8 gives it
        the session key 00..1f, and its next frame is Hash sealed with counter 1."""
        host = rh.RustDeskHost(
            HOST_ID,
            identity=SigningKey(bytes([1]) * 32),
            ephemeral=lambda: PrivateKey(bytes([2]) * 32),
        )
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        records: list[rh.SessionRecord] = []
        t = threading.Thread(target=lambda: records.append(host.serve(theirs, peer=("a", 1))))
        t.start()
        ours.settimeout(10)
        self.assertEqual(rh.encode_frame(_read_frame(ours)).hex(), T7)
        ours.sendall(_hex(T8))
        sealed = _read_frame(ours)
        plain = SecretBox(KEY).decrypt(sealed, rh._nonce(1))
        msg = pb.Message.FromString(plain)
        self.assertEqual(msg.hash.salt, host.salt)
        self.assertEqual(len(msg.hash.challenge), 6)
        self.assertTrue(set(msg.hash.challenge + host.salt) <= set(rh.PASSWORD_CHARS))
        ours.close()
        t.join(10)
        self.assertTrue(records[0].encrypted)
        self.assertEqual(records[0].handshake, "public key")

    def test_t16_vp9_key_frame(self) -> None:
        enc = rh.VideoEncoder("vp9", 64, 48)
        frames = enc.encode(rh.test_picture(64, 48), key=True, pts_ms=0)
        self.assertTrue(frames[0].key)
        self.assertEqual(frames[0].data[:4].hex(), "82498342")

    def test_mangle_agrees_with_the_client_emulators(self) -> None:
        # Two implementations written apart from hbb_common's AddrMangle.
        for host, port, micros in (
            ("127.0.0.1", 21116, 0),
            ("192.168.1.20", 5, 1_700_000_000_123_456),
            ("10.0.0.1", 65535, 0xFFFFFFFF),
        ):
            ours = rh.mangle_encode(host, port, micros)
            self.assertEqual(ours, rr.mangle_encode(host, port, micros))
            self.assertEqual(rh.mangle_decode(ours), (host, port))
        v6 = rh.mangle_encode("2001:db8::1", 443)
        self.assertEqual(len(v6), 18)
        self.assertEqual(rh.mangle_decode(v6), ("2001:db8::1", 443))
        self.assertEqual(rh.mangle_decode(bytes(17)), ("::", 0))


# --- codec negotiation (codec.rs Encoder::update) --------------------------------------------


def _decoding(prefer: int = pb.SupportedDecoding.Auto, **abilities: int) -> pb.SupportedDecoding:
    d = rc.default_supported_decoding()
    d.prefer = prefer  # type: ignore[assignment]
    for name, value in abilities.items():
        setattr(d, name, value)
    return d


class NegotiationTests(SynchronousTestCase):
    def test_choices(self) -> None:
        SD = pb.SupportedDecoding
        plain, av1, small = (
            rh.HostCodecs(),
            rh.HostCodecs(av1_test=True),
            rh.HostCodecs(low_memory=True),
        )
        h264, h265 = rh.HostCodecs(h264=True), rh.HostCodecs(h264=True, h265=True)
        cases: list[tuple[pb.SupportedDecoding | None, rh.HostCodecs, str]] = [
            (None, av1, "vp9"),  # no supported_decoding: VP9 only
            (_decoding(), plain, "vp9"),  # a stock client, AV1 test failed
            (_decoding(), av1, "av1"),  # a stock client, AV1 test passed
            (_decoding(), small, "vp8"),  # <= 4 GB: VP8 for Auto
            (_decoding(ability_vp8=0), small, "vp9"),
            (_decoding(SD.VP8), plain, "vp8"),
            (_decoding(SD.VP8, ability_vp8=0), plain, "vp9"),
            (_decoding(SD.AV1), plain, "av1"),  # a usable preference needs no test
            (_decoding(SD.VP9), av1, "vp9"),
            (_decoding(SD.H264, ability_h264=1), plain, "vp9"),  # no hardware encoder
            (_decoding(SD.H264, ability_h264=0), h264, "vp9"),  # the client cannot decode it
            (_decoding(SD.H264, ability_h264=1), h265, "h264"),
            (_decoding(ability_h264=1), h264, "h264"),
            (_decoding(ability_h264=1, ability_h265=1), h265, "h265"),
            (_decoding(SD.H265, ability_h265=1), h264, "vp9"),
        ]
        for decoding, host, want in cases:
            self.assertEqual(rh.choose_codec(decoding, host), want, (decoding, host))

    def test_supported_encoding(self) -> None:
        enc = rh.supported_encoding(rh.HostCodecs(h264=True))
        self.assertEqual((enc.vp8, enc.av1, enc.h264, enc.h265), (True, True, True, False))
        self.assertTrue(enc.i444.vp9 and enc.i444.av1)


# --- what a host types (connection.rs, input_service.rs) ------------------------------------


class TypedTextTests(SynchronousTestCase):
    def test_presses_and_downs_are_typed(self) -> None:
        KM = pb.KeyboardMode
        record = rh.SessionRecord(path="direct", peer=("a", 1), secure=True)
        events = [
            rc.key_event(press=True, seq="ab"),  # the viewer's --type
            rc.key_event(down=True, chr=ord("c")),  # Legacy down: a click on Linux
            rc.key_event(down=False, chr=ord("c")),  # its up types nothing
            rc.key_event(down=True, unicode=0x20AC),
            rc.key_event(down=True, mode=KM.Translate, seq="d"),
            rc.key_event(down=True, mode=KM.Map, chr=38),  # a key code, not text
            rc.key_event(press=True, control_key=pb.ControlKey.Return),
            rc.key_event(seq="not pressed"),
        ]
        record.keys.extend(m.key_event for m in events)
        self.assertEqual(record.typed_text(), "abc\u20acd")


# --- login failures (connection.rs check_failure) --------------------------------------------


class LoginFailureTests(SynchronousTestCase):
    def test_seven_in_a_minute_then_wait(self) -> None:
        f = rh.LoginFailures()
        t = 1_000 * 60_000  # ms, the start of a minute
        for _ in range(7):
            self.assertIsNone(f.refusal("1.2.3.4", t))
            f.failed("1.2.3.4", t)
        self.assertEqual(f.refusal("1.2.3.4", t + 59_999), rh.LOGIN_TRY_LATER)
        self.assertIsNone(f.refusal("5.6.7.8", t))
        self.assertIsNone(f.refusal("1.2.3.4", t + 60_000))

    def test_thirty_in_all(self) -> None:
        f = rh.LoginFailures()
        for i in range(31):
            f.failed("1.2.3.4", i * 60_000)
        self.assertEqual(f.refusal("1.2.3.4", 3_600_000_000), rh.LOGIN_TOO_MANY)
        f.succeeded("1.2.3.4")
        self.assertIsNone(f.refusal("1.2.3.4", 3_600_000_000))


# --- registration (rendezvous_mediator.rs) on a test clock -----------------------------------


class RegistrarTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reg = rh.Registrar(HOST_ID, b"u" * 32, b"k" * 32, new_id=lambda: "1234567890")

    def answer(self, now: float, **kw: Any) -> list[rz.RendezvousMessage]:
        msg = rz.RendezvousMessage(**kw)
        replies, push = self.reg.on_datagram(msg.SerializeToString(), now)
        self.assertIsNone(push)
        return replies

    def test_fresh_host_sends_register_pk_and_retries(self) -> None:
        (first,) = self.reg.tick(0.0)
        pk = first.register_pk
        self.assertEqual((pk.id, pk.uuid, pk.pk, pk.old_id), (HOST_ID, b"u" * 32, b"k" * 32, ""))
        self.assertEqual(self.reg.tick(2.9), [])
        self.assertEqual(self.reg.tick(3.0)[0].WhichOneof("union"), "register_pk")
        self.assertEqual(self.reg.fails, 1)

    def test_confirmed_key_heartbeats_every_15_s(self) -> None:
        self.reg.tick(0.0)
        ok = rz.RegisterPkResponse(result=rz.RegisterPkResponse.OK, keep_alive=30)
        self.assertEqual(self.answer(0.1, register_pk_response=ok), [])
        self.assertTrue(self.reg.key_confirmed)
        self.assertEqual(self.reg.keep_alive_ms, 30_000)
        self.assertEqual(self.reg.tick(15.0), [])
        (beat,) = self.reg.tick(15.1)
        self.assertEqual(beat.register_peer, rz.RegisterPeer(id=HOST_ID, serial=0))
        # request_pk: RegisterPk again at once.
        replies = self.answer(15.2, register_peer_response=rz.RegisterPeerResponse(request_pk=True))
        self.assertEqual(replies[0].WhichOneof("union"), "register_pk")
        self.assertEqual(self.answer(15.3, configure_update=rz.ConfigUpdate(serial=7)), [])
        self.assertEqual(self.reg.tick(30.3)[0].register_peer.serial, 7)

    def test_uuid_mismatch_takes_a_new_id(self) -> None:
        self.reg.tick(0.0)
        bad = rz.RegisterPkResponse(result=rz.RegisterPkResponse.UUID_MISMATCH)
        (again,) = self.answer(0.1, register_pk_response=bad)
        self.assertEqual(again.register_pk.id, "1234567890")
        self.assertEqual(self.reg.old_ids, [HOST_ID])
        self.assertFalse(self.reg.key_confirmed)

    def test_pushes_and_duplicates(self) -> None:
        addr = rh.mangle_encode("10.0.0.9", 4000)
        push = rz.RendezvousMessage(punch_hole=rz.PunchHole(socket_addr=addr))
        data = push.SerializeToString()
        self.assertEqual(self.reg.on_datagram(data, 1.0), ([], push))
        # The same requester again within 100 ms is a duplicate; later it is not.
        self.assertEqual(self.reg.on_datagram(data, 1.05), ([], None))
        self.assertEqual(self.reg.on_datagram(data, 1.2), ([], push))
        fla = rz.RendezvousMessage(fetch_local_addr=rz.FetchLocalAddr(socket_addr=addr))
        self.assertEqual(self.reg.on_datagram(fla.SerializeToString(), 1.21), ([], None))
        relay = rz.RendezvousMessage(request_relay=rz.RequestRelay(socket_addr=addr))
        self.assertEqual(self.reg.on_datagram(relay.SerializeToString(), 1.22), ([], relay))


# --- parsers, fuzzed ---------------------------------------------------------------------------


class PropertyTests(SynchronousTestCase):
    @given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 50))
    @settings(max_examples=80, deadline=None)
    def test_frames_round_trip_in_any_chunking(self, payloads: list[bytes], step: int) -> None:
        wire = b"".join(rh.encode_frame(p) for p in payloads)
        reader = rh.FrameReader()
        got = []
        for i in range(0, len(wire), step):
            reader.feed(wire[i : i + step])
            while (p := reader.pop()) is not None:
                got.append(p)
        self.assertEqual(got, payloads)

    @given(st.binary(max_size=64), st.integers(0, 1 << 16))
    @settings(max_examples=200, deadline=None)
    def test_reader_on_garbage(self, data: bytes, limit: int) -> None:
        reader = rh.FrameReader(limit)
        reader.feed(data)
        try:
            while (p := reader.pop()) is not None:
                self.assertLessEqual(len(p), limit)
        except rh.FrameError:
            pass

    @given(st.binary(max_size=40))
    @settings(max_examples=300, deadline=None)
    def test_mangle_decode_is_total(self, data: bytes) -> None:
        host, port = rh.mangle_decode(data)
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        self.assertTrue(0 <= port <= 0xFFFF)

    @given(st.ip_addresses(v=4), st.integers(0, 0xFFFF), st.integers(0, (1 << 64) - 1))
    @settings(max_examples=300, deadline=None)
    def test_mangle_round_trip(self, ip: Any, port: int, micros: int) -> None:
        self.assertEqual(rh.mangle_decode(rh.mangle_encode(str(ip), port, micros)), (str(ip), port))

    @given(st.binary(max_size=200))
    @settings(max_examples=300, deadline=None)
    def test_registrar_takes_any_datagram(self, data: bytes) -> None:
        reg = rh.Registrar(HOST_ID, b"u" * 32, b"k" * 32)
        replies, push = reg.on_datagram(data, 0.0)
        for m in replies:
            self.assertEqual(m.WhichOneof("union"), "register_pk")
        if push is not None:
            self.assertIn(push.WhichOneof("union"), rh._PUSHES)


# --- sessions against the client emulator over loopback ------------------------------------


def _decode_video(frames: list[pb.VideoFrame], codec: str) -> list[Image.Image]:
    """Decode every frame with PyAV's decoder for C{codec}; the images."""
    names = {"vp9": "vp9", "vp8": "vp8", "av1": "libdav1d", "h264": "h264", "h265": "hevc"}
    dec = av.CodecContext.create(names[codec], "r")
    images: list[Image.Image] = []
    for vf in frames:
        for f in getattr(vf, rh._VIDEO_FIELD[codec]).frames:
            images.extend(fr.to_image() for fr in dec.decode(av.Packet(f.data)))  # type: ignore[attr-defined]
    return images


class SessionTests(SynchronousTestCase):
    def start(self, **kw: Any) -> rh.RustDeskHost:
        kw.setdefault("width", SIZE[0])
        kw.setdefault("height", SIZE[1])
        secure = kw.pop("secure", True)
        host = rh.RustDeskHost(HOST_ID, PASSWORD, **kw)
        self.addCleanup(host.stop)
        self.port = host.listen(secure=secure)
        return host

    def client(self, host: rh.RustDeskHost, *, no_key: bool = False) -> rc.RustDeskClient:
        key = None if no_key else host.verify_key
        c = rc.RustDeskClient.connect("127.0.0.1", self.port, HOST_ID, key, timeout=10)
        self.addCleanup(c.close)
        return c

    def logged_in(
        self, host: rh.RustDeskHost, who: rc.ClientIdentity | None = None
    ) -> tuple[rc.RustDeskClient, rc.LoginResult]:
        c = self.client(host)
        self.assertTrue(c.handshake())
        result = c.login(PASSWORD, who)
        self.assertEqual(result.response.WhichOneof("union"), "peer_info", result.response)
        return c, result

    @staticmethod
    def video(c: rc.RustDeskClient, n: int) -> list[pb.VideoFrame]:
        return [c.recv_until("video_frame").video_frame for _ in range(n)]

    def test_login_peer_info_and_vp9_picture(self) -> None:
        host = self.start()
        c = self.client(host)
        self.assertTrue(c.handshake())
        wrong = c.login("not it")
        self.assertEqual(wrong.response.error, rh.LOGIN_WRONG_PASSWORD)
        self.assertEqual(wrong.hash.salt, host.salt)
        # The session stays open: the same Hash, the right password.
        info = c.login(PASSWORD).response.peer_info
        self.assertEqual(
            (info.platform, info.version, info.hostname), ("Linux", "1.4.9", host.hostname)
        )
        self.assertEqual(info.username, host.username)
        self.assertEqual([(d.width, d.height) for d in info.displays], [SIZE])
        self.assertEqual(info.current_display, 0)
        self.assertTrue(info.encoding.vp8 and info.features.terminal)
        frames = self.video(c, 5)
        first = frames[0].vp9s.frames[0]
        self.assertTrue(first.key)
        self.assertEqual(first.data[:4].hex(), "82498342")
        self.assertEqual({vf.display for vf in frames}, {0})
        self.assertEqual({vf.WhichOneof("union") for vf in frames}, {"vp9s"})
        images = _decode_video(frames, "vp9")
        self.assertEqual(len(images), 5)
        for im in images:
            self.assertEqual(im.size, SIZE)
            self.assertLess(rh.picture_error(im, *SIZE), 6)
        # The picture check can fail: another picture is far off.
        self.assertGreater(rh.picture_error(rh.test_picture(*SIZE).rotate(180), *SIZE), 40)
        record = host.sessions[0]
        self.assertEqual(record.login_errors, [rh.LOGIN_WRONG_PASSWORD])
        self.assertEqual(record.codecs, ["vp9"])
        self.assertTrue(record.encrypted)

    def test_key_frame_on_refresh_video(self) -> None:
        host = self.start()
        c, _ = self.logged_in(host)
        self.video(c, 3)
        record = host.sessions[0]
        self.assertEqual(record.key_frames_sent, 1)
        c.send_misc(refresh_video=True)
        for _ in range(100):
            vf = c.recv_until("video_frame").video_frame
            if vf.vp9s.frames[0].key:
                break
        else:
            self.fail("no key frame after refresh_video")
        self.assertEqual(record.key_frames_sent, 2)

    def test_input_clipboard_and_test_delay(self) -> None:
        host = self.start()
        c, _ = self.logged_in(host)
        c.send_mouse(9, 10, 20)
        c.send_mouse(10, 10, 20)
        c.send_key(down=True, mode=pb.KeyboardMode.Map, chr=38)
        c.send_key(seq="héllo", down=True, mode=pb.KeyboardMode.Translate)
        c.send_clipboard("short")
        c.send_clipboard("long " * 300, compress=_zstd)
        multi = pb.MultiClipboards(clipboards=[pb.Clipboard(content=b"multi")])
        c.send(pb.Message(multi_clipboards=multi))
        c.send_test_delay(time=5, from_client=True)
        echoed = c.recv_until("test_delay")
        while not echoed.test_delay.from_client:
            echoed = c.recv_until("test_delay")
        self.assertEqual(echoed.test_delay.time, 5)
        record = host.sessions[0]
        self.assertEqual([(m.mask, m.x, m.y) for m in record.mouse], [(9, 10, 20), (10, 10, 20)])
        self.assertEqual([k.chr for k in record.keys[:1]], [38])
        self.assertEqual(record.keys[1].seq, "héllo")
        self.assertEqual(record.clipboards, ["short", "long " * 300, "multi"])
        self.assertEqual(record.test_delays_answered, 1)
        # The client echoes the host's TestDelays (the first went out at connection).
        self.assertGreaterEqual(c.test_delays_echoed, 1)
        # Host to client: a 1.4.9 client gets MultiClipboards, zstd when shorter.
        self.assertEqual(host.send_clipboard("from host " * 50), 1)
        got = c.recv_until("multi_clipboards").multi_clipboards.clipboards[0]
        self.assertTrue(got.compress)
        self.assertEqual(zstandard.ZstdDecompressor().decompress(got.content), b"from host " * 50)
        host.send_clipboard("tiny")
        got = c.recv_until("multi_clipboards").multi_clipboards.clipboards[0]
        self.assertEqual((got.compress, got.content), (False, b"tiny"))

    def test_old_client_gets_a_single_clipboard(self) -> None:
        host = self.start()
        c, _ = self.logged_in(host, rc.ClientIdentity(version="1.2.3"))
        host.send_clipboard("to an old client")
        self.assertEqual(c.recv_until("clipboard").clipboard.content, b"to an old client")

    def test_input_before_login_is_ignored(self) -> None:
        host = self.start()
        c = self.client(host)
        c.handshake()
        c.send_mouse(9, 1, 1)
        c.login(PASSWORD)
        c.send_mouse(10, 2, 2)
        host.wait_session(lambda r: r.mouse)
        self.assertEqual([m.mask for m in host.sessions[0].mouse], [10])

    def test_flipped_byte_closes_the_session(self) -> None:
        host = self.start()
        c, _ = self.logged_in(host)
        c.send_tampered(rc.mouse_event(0, 1, 1), flip_at=5)
        self.assertTrue(c.closed_by_peer())
        record = host.sessions[0]
        self.assertTrue(record.closed.wait(10))
        self.assertEqual(record.closed_reason, "decryption error")
        self.assertEqual(record.mouse, [])

    def test_repeated_wrong_passwords(self) -> None:
        now = [1_000_000.0]
        host = self.start(wall_clock=lambda: now[0])
        c = self.client(host)
        c.handshake()
        errors = [c.login("wrong").response.error for _ in range(8)]
        self.assertEqual(errors, [rh.LOGIN_WRONG_PASSWORD] * 7 + [rh.LOGIN_TRY_LATER])
        # Refused even with the right password, until the next minute.
        self.assertEqual(c.login(PASSWORD).response.error, rh.LOGIN_TRY_LATER)
        now[0] += 60
        self.assertEqual(c.login(PASSWORD).response.WhichOneof("union"), "peer_info")

    def test_another_id_is_offline_and_closed(self) -> None:
        host = self.start()
        c = self.client(host)
        c.handshake()
        c.peer_id = "999999999"
        self.assertEqual(c.login(PASSWORD).response.error, rh.LOGIN_OFFLINE)
        self.assertTrue(c.closed_by_peer())

    def test_close_reason_ends_the_session(self) -> None:
        host = self.start()
        c, _ = self.logged_in(host)
        c.send_misc(close_reason="")
        self.assertTrue(c.closed_by_peer())
        self.assertEqual(host.sessions[0].closed_reason, "Peer close: ''")

    def test_view_only_permissions(self) -> None:
        host = self.start(permissions_off={"keyboard", "clipboard"})
        c, result = self.logged_in(host)
        perms = [m.misc.permission_info for m in result.before if m.WhichOneof("union") == "misc"]
        self.assertEqual(
            sorted((p.permission, p.enabled) for p in perms),
            [(pb.PermissionInfo.Keyboard, False), (pb.PermissionInfo.Clipboard, False)],
        )
        c.send_mouse(9, 1, 1)
        c.send_clipboard("x")
        c.send_test_delay(from_client=True)
        host.wait_session(lambda r: r.test_delays_answered)
        self.assertEqual((host.sessions[0].mouse, host.sessions[0].clipboards), ([], []))
        self.assertEqual(host.send_clipboard("y"), 0)

    def codec_session(self, codec: str, decoding: pb.SupportedDecoding, **kw: Any) -> None:
        if not rh.encodable(codec):
            cannot_run(f"PyAV cannot encode {codec} on this machine")
        host = self.start(**kw)
        c, _ = self.logged_in(host, rc.ClientIdentity(supported_decoding=decoding))
        frames = self.video(c, 3)
        self.assertEqual({vf.WhichOneof("union") for vf in frames}, {rh._VIDEO_FIELD[codec]})
        self.assertTrue(getattr(frames[0], rh._VIDEO_FIELD[codec]).frames[0].key)
        images = _decode_video(frames, codec)
        self.assertTrue(images)
        self.assertLess(rh.picture_error(images[-1], *SIZE), 8)
        self.assertEqual(host.sessions[0].codecs, [codec])

    def test_vp8_preferred(self) -> None:
        self.codec_session("vp8", _decoding(pb.SupportedDecoding.VP8))

    def test_av1_when_the_test_passed(self) -> None:
        self.codec_session("av1", _decoding(), codecs=rh.HostCodecs(av1_test=True))

    def test_h264_with_a_hardware_encoder(self) -> None:
        self.codec_session("h264", _decoding(ability_h264=1), codecs=rh.HostCodecs(h264=True))

    def test_codec_reannounced_switches_with_a_key_frame(self) -> None:
        host = self.start()
        c, _ = self.logged_in(
            host, rc.ClientIdentity(supported_decoding=_decoding(pb.SupportedDecoding.VP8))
        )
        self.assertEqual(self.video(c, 2)[0].WhichOneof("union"), "vp8s")
        # client.rs: a codec that failed is announced again with ability 0.
        option = pb.OptionMessage(
            supported_decoding=_decoding(pb.SupportedDecoding.VP8, ability_vp8=0)
        )
        c.send_misc(option=option)
        for _ in range(100):
            vf = c.recv_until("video_frame").video_frame
            if vf.WhichOneof("union") == "vp9s":
                break
        self.assertEqual(vf.WhichOneof("union"), "vp9s")
        self.assertTrue(vf.vp9s.frames[0].key)
        self.assertEqual(host.sessions[0].codecs, ["vp8", "vp9"])

    # -- what a stock host does when the client declines encryption

    def test_client_without_host_key_gets_a_plaintext_session(self) -> None:
        host = self.start()
        c = self.client(host, no_key=True)
        self.assertFalse(c.handshake())
        # The SignedId is still in the socket; then Hash follows in plaintext.
        self.assertEqual(c.recv().WhichOneof("union"), "signed_id")
        self.assertEqual(c.recv_until("hash").hash.salt, host.salt)
        record = host.wait_session()
        self.assertFalse(record.encrypted)
        self.assertEqual(record.handshake, "invalid message type: None")

    def test_forged_signature_is_declined_by_the_client(self) -> None:
        host = self.start(sign_key=SigningKey.generate())
        c = self.client(host)
        self.assertRaises(rc.HandshakeError, c.handshake)
        # The client answered PublicKey{}: a stock host goes on in plaintext.
        self.assertEqual(c.recv_until("hash").hash.salt, host.salt)
        self.assertEqual(host.sessions[0].handshake, "empty public key: force to update pk")

    def test_signed_for_another_id(self) -> None:
        host = self.start(signed_id_for="111111111")
        c = self.client(host)
        self.assertRaises(rc.WrongPeerId, c.handshake)

    def test_direct_ip_listener_sends_no_signed_id(self) -> None:
        host = self.start(secure=False)
        c = self.client(host)
        first = c.recv()
        self.assertEqual(first.WhichOneof("union"), "hash")
        c.hash = first.hash
        self.assertEqual(c.login(PASSWORD).response.WhichOneof("union"), "peer_info")
        self.assertFalse(host.sessions[0].encrypted)


# --- registration and every path through a real litedesk-relay ------------------------------


class _Server:
    """One C{twistd litedesk-relay} for the tests below, started on first use."""

    instance: _Server | None = None

    def __init__(self, root: Path) -> None:
        self.port = free_port_pair()
        self.proc = RelayProcess(root / "data", self.port, root / "relay.log")
        self.key = (root / "data" / "id_ed25519.pub").read_text().strip()
        self.address = f"127.0.0.1:{self.port}"

    @classmethod
    def get(cls, case: SynchronousTestCase) -> _Server:
        if cls.instance is None:
            root = Path(case.mktemp())
            root.mkdir(parents=True)
            cls.instance = cls(root)
            atexit.register(cls.instance.proc.stop)
        return cls.instance


class RendezvousTests(SynchronousTestCase):
    """The emulated host registered with a real server, reached by the client emulator."""

    def setUp(self) -> None:
        self.server = _Server.get(self)

    def host(self, peer_id: str, **kw: Any) -> rh.RustDeskHost:
        host = rh.RustDeskHost(peer_id, PASSWORD, width=SIZE[0], height=SIZE[1])
        self.addCleanup(host.stop)
        host.start_rendezvous(self.server.address, self.server.key, **kw)
        host.wait_registered()
        return host

    def session(self, host: rh.RustDeskHost, reached: rr.Reached) -> rh.SessionRecord:
        c = rc.RustDeskClient(reached.sock, host.peer_id, reached.answer.host_pk, timeout=10)
        self.addCleanup(c.close)
        self.assertTrue(c.handshake())
        self.assertEqual(c.login(PASSWORD).response.WhichOneof("union"), "peer_info")
        self.assertTrue(c.recv_until("video_frame").video_frame.vp9s.frames[0].key)
        return host.wait_session(lambda r: r.authorized)

    def sent(self, host: rh.RustDeskHost, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in host.rendezvous_sent if m.WhichOneof("union") == kind]

    def test_registration_gives_the_server_signed_key(self) -> None:
        host = self.host("710000001")
        assert host.registrar is not None
        self.assertTrue(host.registrar.key_confirmed)
        answer = rr.punch_hole_request(self.server.address, self.server.key, host.peer_id)
        # Verified with the server key by the client emulator, for this id.
        self.assertEqual(answer.host_pk, host.verify_key)
        bad = base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()
        self.assertRaises(
            rr.RendezvousFailure, rr.punch_hole_request, self.server.address, bad, host.peer_id
        )

    def test_lan_path(self) -> None:
        host = self.host("710000002")
        reached = rr.reach(self.server.address, self.server.key, host.peer_id)
        self.assertEqual((reached.path, reached.answer.kind), ("direct", "local"))
        record = self.session(host, reached)
        self.assertEqual((record.path, record.encrypted), ("lan", True))
        (la,) = self.sent(host, "local_addr")
        # As rendezvous_mediator.rs: the relay is filled in, the id and version set.
        self.assertEqual(la.relay_server, reached.answer.relay_server)
        self.assertTrue(la.relay_server)
        self.assertEqual((la.id, la.version), (host.peer_id, "1.4.9"))
        self.assertEqual(rh.mangle_decode(la.local_addr), reached.answer.peer_addr)

    def test_forced_relay(self) -> None:
        host = self.host("710000003")
        reached = rr.reach(self.server.address, self.server.key, host.peer_id, force_relay=True)
        self.assertEqual(reached.path, "relay")
        record = self.session(host, reached)
        self.assertEqual((record.path, record.encrypted), ("relay", True))
        (resp,) = self.sent(host, "relay_response")
        self.assertEqual((resp.uuid, resp.version), ("", "1.4.9"))  # the client's uuid
        (leg,) = self.sent(host, "request_relay")
        self.assertEqual((leg.uuid, leg.licence_key, leg.id), (reached.uuid, self.server.key, ""))

    def test_punch_path_from_another_address(self) -> None:
        host = self.host("710000004", local_ip="127.0.0.2")
        reached = rr.reach(self.server.address, self.server.key, host.peer_id)
        self.assertEqual((reached.path, reached.answer.kind), ("direct", "punch"))
        self.assertEqual(reached.answer.peer_addr[0], "127.0.0.2")  # type: ignore[index]
        record = self.session(host, reached)
        self.assertEqual(record.path, "punch")
        (sent,) = self.sent(host, "punch_hole_sent")
        self.assertEqual((sent.id, sent.version), (host.peer_id, "1.4.9"))

    def test_symmetric_host_opens_the_relay(self) -> None:
        host = self.host("710000005", local_ip="127.0.0.3", nat_type=rz.SYMMETRIC)
        reached = rr.reach(self.server.address, self.server.key, host.peer_id)
        self.assertEqual((reached.path, reached.answer.kind), ("relay", "relay"))
        # The server signed the key for the id the host put in its RelayResponse.
        self.assertEqual(reached.answer.host_pk, host.verify_key)
        record = self.session(host, reached)
        self.assertEqual(record.path, "relay")
        (resp,) = self.sent(host, "relay_response")
        self.assertEqual((resp.id, resp.uuid), (host.peer_id, reached.uuid))


# --- independence --------------------------------------------------------------------------


class IndependenceTests(SynchronousTestCase):
    def test_emulator_imports_nothing_of_litedesk_but_the_protobuf_modules(self) -> None:
        tree = ast.parse(Path(rh.__file__).read_text())
        modules = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        self.assertEqual({m for m in modules if m.startswith("litedesk")}, {"litedesk.proto"})
        # Nor the client emulator: both sides written apart.
        self.assertEqual({m for m in modules if m.startswith(("tests", "."))}, set())
        self.assertNotIn("", modules)
