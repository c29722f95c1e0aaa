"""A stock RustDesk client reaches a LiteDesk host by id, through the real server (and relay).

End to end under Xvfb (tests/support/e2e_lab.py): a real C{twistd litedesk-relay}, a real
C{twistd litedesk-host} on the lab's display, and the stock-client emulator
(tests/support/rustdesk_rendezvous.py for the way from id to stream,
tests/support/rustdesk_client.py for the session), neither of which imports LiteDesk's
session or rendezvous code.  What a person using the RustDesk app would notice is checked
on both paths a client behind the host's public IP can take (the LAN address the server
offers, and the relay when the client forces it): the VP9 picture is the host's screen, a
click and typing reach a Tk window, the clipboard goes both ways, a wrong password gets
RustDesk's own text, a tampered frame ends the session while the host keeps serving.  On
the relay path the lab's recording proxy sees none of the typed text, the password or its
hash, the clipboard or the text on the screen.

The unit tests at the top check the rendezvous emulator itself (address mangling, the
server-signed key, RustDesk's failure texts, re-sent requests) against hbb_common's and
client.rs's rules, on loopback sockets where a server is needed.
"""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import av
import zstandard
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from PIL import Image
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as pb
from litedesk.proto import rendezvous_pb2 as rz

from .support import rustdesk_client as rc
from .support import rustdesk_rendezvous as rr
from .support.e2e_lab import NEEDS, Lab, lab
from .support.images import mean_error, paint_test_screen
from .support.imports import module_imports
from .support.polling import wait_until
from .support.recorder import Recorder
from .support.skips import requires
from .support.xvfb import set_root_image

if TYPE_CHECKING:
    _Case = SynchronousTestCase
else:
    _Case = object

HOST = "rustdesk"
PASSWORD = "rd-e2e-Pw-7731"
PEER_ID = "123456789"
SCREEN_MARKER = "RD-SCREEN-MARKER-J4"
TYPED_MAP = "Hello RustDesk 123"
TYPED_MARKER = "Rd5-typed-marker-Qw"
CLIP_TO_HOST = "RustDesk to host é€ Cb8 " * 16
CLIP_FROM_HOST = "host to RustDesk ✓ Hx2"


# --- unit tests of the rendezvous emulator ---------------------------------------------------


def _signed_id_pk(server: SigningKey, peer_id: str, pk: bytes) -> bytes:
    """What hbbs puts in PunchHoleResponse.pk: IdPk signed in combined mode."""
    return bytes(server.sign(pb.IdPk(id=peer_id, pk=pk).SerializeToString()))


def _b64(key: SigningKey) -> str:
    return base64.b64encode(bytes(key.verify_key)).decode()


class AddressTests(SynchronousTestCase):
    def test_known_ipv4_bytes(self) -> None:
        # AddrMangle::encode(127.0.0.1:21116) at tm = 0: ip << 49 | port, trailing zeros cut.
        ip = int.from_bytes(bytes([127, 0, 0, 1]), "little")
        expected = ((ip << 49) | 21116).to_bytes(16, "little").rstrip(b"\x00")
        self.assertEqual(rr.mangle_encode("127.0.0.1", 21116, micros=0), expected)
        self.assertEqual(rr.mangle_decode(expected), ("127.0.0.1", 21116))

    def test_ipv6_is_plain(self) -> None:
        data = rr.mangle_encode("2001:db8::7", 443)
        self.assertEqual(data, socket.inet_pton(socket.AF_INET6, "2001:db8::7") + b"\xbb\x01")
        self.assertEqual(rr.mangle_decode(data), ("2001:db8::7", 443))

    def test_mapped_ipv4_is_encoded_as_ipv4(self) -> None:
        data = rr.mangle_encode("::ffff:10.0.0.2", 9, micros=5)
        self.assertLessEqual(len(data), 16)
        self.assertEqual(rr.mangle_decode(data), ("10.0.0.2", 9))

    def test_odd_lengths(self) -> None:
        self.assertEqual(rr.mangle_decode(b""), ("0.0.0.0", 0))
        self.assertEqual(rr.mangle_decode(bytes(17)), ("::", 0))

    @settings(max_examples=300, deadline=None)
    @given(
        st.ip_addresses(v=4).map(str),
        st.integers(0, 65535),
        st.integers(0, 2**64 - 1),
    )
    def test_ipv4_round_trip(self, ip: str, port: int, micros: int) -> None:
        self.assertEqual(rr.mangle_decode(rr.mangle_encode(ip, port, micros)), (ip, port))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=40))
    def test_decode_is_total(self, data: bytes) -> None:
        host, port = rr.mangle_decode(data)
        self.assertTrue(0 <= port <= 65535)
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)

    def test_check_port(self) -> None:
        self.assertEqual(rr.check_port("example.org", 21116), "example.org:21116")
        self.assertEqual(rr.check_port("example.org:1", 21116), "example.org:1")
        self.assertEqual(rr.check_port("::1", 21117), "[::1]:21117")
        self.assertEqual(rr.check_port("[::1]:5", 21117), "[::1]:5")
        self.assertEqual(rr.split_host_port("[::1]:5", 1), ("::1", 5))

    def test_server_key(self) -> None:
        key = SigningKey.generate()
        self.assertEqual(rr.server_key(_b64(key)), bytes(key.verify_key))
        self.assertEqual(rr.server_key(""), base64.b64decode(rr.RS_PUB_KEY))
        self.assertIsNone(rr.server_key("not base64!"))
        self.assertIsNone(rr.server_key(base64.b64encode(bytes(16)).decode()))


class IndependenceTests(SynchronousTestCase):
    def test_rendezvous_emulator_imports_nothing_of_litedesks_code(self) -> None:
        """Only the generated protobuf modules and the client emulator: a shared helper
        would let a bug in LiteDesk's rendezvous code hide behind itself."""
        absolute, relative = module_imports(rr.__file__)
        self.assertEqual({m for m in absolute if m.startswith("litedesk")}, {"litedesk.proto"})
        self.assertEqual(relative, {"rustdesk_client"})


class AnswerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = SigningKey.generate()
        self.host = SigningKey.generate()
        self.key = _b64(self.server)

    def _punch(self, **fields: object) -> rz.RendezvousMessage:
        return rz.RendezvousMessage(punch_hole_response=rz.PunchHoleResponse(**fields))  # type: ignore[arg-type]

    def test_failures_have_rustdesks_texts(self) -> None:
        cases = {
            rz.PunchHoleResponse.ID_NOT_EXIST: "ID does not exist",
            rz.PunchHoleResponse.OFFLINE: "Remote desktop is offline",
            rz.PunchHoleResponse.LICENSE_MISMATCH: "Key mismatch",
            rz.PunchHoleResponse.LICENSE_OVERUSE: "Key overuse",
        }
        for failure, text in cases.items():
            with self.assertRaises(rr.RendezvousFailure) as e:
                rr.parse_answer(self._punch(failure=failure), self.key, PEER_ID)
            self.assertEqual(str(e.exception), text)
        with self.assertRaises(rr.RendezvousFailure) as e:
            rr.parse_answer(self._punch(other_failure="Custom"), self.key, PEER_ID)
        self.assertEqual(str(e.exception), "Custom")

    def test_local_answer_with_verified_key(self) -> None:
        signed = _signed_id_pk(self.server, PEER_ID, bytes(self.host.verify_key))
        msg = self._punch(
            socket_addr=rr.mangle_encode("192.168.1.5", 40000),
            pk=signed,
            relay_server="relay.example:21117",
            is_local=True,
        )
        answer = rr.parse_answer(msg, self.key, PEER_ID)
        assert answer is not None
        self.assertEqual(answer.kind, "local")
        self.assertEqual(answer.peer_addr, ("192.168.1.5", 40000))
        self.assertEqual(answer.host_pk, bytes(self.host.verify_key))
        self.assertEqual(answer.relay_server, "relay.example:21117")
        self.assertEqual(rr.direct_connect_timeout(answer), rr.MIN_DIRECT_TIMEOUT)

    def test_punch_answer_keeps_the_nat_type(self) -> None:
        signed = _signed_id_pk(self.server, PEER_ID, bytes(self.host.verify_key))
        msg = self._punch(
            socket_addr=rr.mangle_encode("203.0.113.9", 5), pk=signed, nat_type=rz.ASYMMETRIC
        )
        answer = rr.parse_answer(msg, self.key, PEER_ID)
        assert answer is not None
        self.assertEqual((answer.kind, answer.nat_type), ("punch", rz.ASYMMETRIC))
        # No relay to fall back to: the client waits its full 18 s for the direct path.
        self.assertEqual(rr.direct_connect_timeout(answer), rc.CONNECT_TIMEOUT)

    def test_unverifiable_keys_give_no_host_key(self) -> None:
        other = SigningKey.generate()
        cases = {
            "signed by another server": _signed_id_pk(other, PEER_ID, bytes(32)),
            "for another id": _signed_id_pk(self.server, "999999999", bytes(32)),
            "short key": _signed_id_pk(self.server, PEER_ID, bytes(31)),
            "nothing": b"",
        }
        for what, signed in cases.items():
            msg = self._punch(socket_addr=rr.mangle_encode("10.0.0.1", 1), pk=signed)
            answer = rr.parse_answer(msg, self.key, PEER_ID)
            assert answer is not None
            self.assertIsNone(answer.host_pk, what)
            self.assertTrue(answer.pk_error, what)

    def test_relay_response(self) -> None:
        signed = _signed_id_pk(self.server, PEER_ID, bytes(self.host.verify_key))
        msg = rz.RendezvousMessage(
            relay_response=rz.RelayResponse(uuid="u-1", relay_server="r:1", pk=signed)
        )
        answer = rr.parse_answer(msg, self.key, PEER_ID)
        assert answer is not None
        self.assertEqual((answer.kind, answer.uuid, answer.relay_server), ("relay", "u-1", "r:1"))
        self.assertEqual(answer.host_pk, bytes(self.host.verify_key))
        # A RelayResponse naming the id instead of a key (client.rs reads rr.pk()): no key.
        by_id = rz.RendezvousMessage(relay_response=rz.RelayResponse(uuid="u", id=PEER_ID))
        answer = rr.parse_answer(by_id, self.key, PEER_ID)
        assert answer is not None
        self.assertIsNone(answer.host_pk)

    def test_other_messages_are_ignored(self) -> None:
        msg = rz.RendezvousMessage(test_nat_response=rz.TestNatResponse(port=1))
        self.assertIsNone(rr.parse_answer(msg, self.key, PEER_ID))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_message_parses_or_fails_in_rustdesks_words(self, data: bytes) -> None:
        msg = rz.RendezvousMessage()
        try:
            msg.ParseFromString(data)
        except DecodeError:
            return
        try:
            answer = rr.parse_answer(msg, self.key, PEER_ID)
        except rr.RendezvousFailure as e:
            self.assertTrue(str(e))
            return
        if answer is not None:
            self.assertIn(answer.kind, ("local", "punch", "relay"))


class _FakeServer:
    """A one-connection rendezvous server on loopback that answers from a script."""

    def __init__(self, script: Callable[[socket.socket, list[bytes]], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, args=(script,), daemon=True)
        self._thread.start()

    def _serve(self, script: Callable[[socket.socket, list[bytes]], None]) -> None:
        conn, _ = self.listener.accept()
        with conn:
            script(conn, self.received)

    def close(self) -> None:
        # Join first: the script ends when the client is gone, and a listener closed
        # before the thread reached accept() would lose the connection waiting in it.
        self._thread.join(10)
        self.listener.close()


def _read_frames(conn: socket.socket, n: int, into: list[bytes]) -> None:
    reader = rc.FrameReader()
    while len(into) < n:
        payload = reader.next()
        if payload is None:
            data = conn.recv(65536)
            if not data:
                return
            reader.feed(data)
            continue
        into.append(payload)


class PunchHoleRequestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = SigningKey.generate()
        self.host = SigningKey.generate()
        self.key = _b64(self.server)
        signed = _signed_id_pk(self.server, PEER_ID, bytes(self.host.verify_key))
        self.answer = rz.RendezvousMessage(
            punch_hole_response=rz.PunchHoleResponse(
                socket_addr=rr.mangle_encode("127.0.0.1", 4242), pk=signed, is_local=True
            )
        )

    def _serve(self, script: Callable[[socket.socket, list[bytes]], None]) -> _FakeServer:
        fake = _FakeServer(script)
        self.addCleanup(fake.close)
        return fake

    def test_request_fields_and_resend(self) -> None:
        """An unanswered request is sent again on the same socket; a KeyExchange is skipped."""
        answer = self.answer

        def script(conn: socket.socket, received: list[bytes]) -> None:
            _read_frames(conn, 2, received)  # the first copy goes unanswered
            kx = rz.RendezvousMessage(key_exchange=rz.KeyExchange(keys=[b"x"]))
            conn.sendall(rc.encode_frame(kx.SerializeToString()))
            conn.sendall(rc.encode_frame(answer.SerializeToString()))

        fake = self._serve(script)
        got = rr.punch_hole_request(
            f"127.0.0.1:{fake.port}", self.key, PEER_ID, force_relay=True, waits=(0.2, 5.0)
        )
        self.assertEqual(got.kind, "local")
        self.assertEqual(got.peer_addr, ("127.0.0.1", 4242))
        self.assertEqual(got.host_pk, bytes(self.host.verify_key))
        assert got.local is not None
        self.assertEqual(got.local[0], "127.0.0.1")
        self.assertEqual(len(fake.received), 2)
        self.assertEqual(fake.received[0], fake.received[1])
        req = rz.RendezvousMessage()
        req.ParseFromString(fake.received[0])
        ph = req.punch_hole_request
        self.assertEqual((ph.id, ph.licence_key, ph.version), (PEER_ID, self.key, "1.4.9"))
        # Forcing the relay is announced twice, as client.rs does: the flag and SYMMETRIC.
        self.assertTrue(ph.force_relay)
        self.assertEqual(ph.nat_type, rz.SYMMETRIC)

    def test_unverified_key_is_refused_unless_asked(self) -> None:
        unsigned = rz.RendezvousMessage()
        unsigned.CopyFrom(self.answer)
        unsigned.punch_hole_response.pk = b""

        def script(conn: socket.socket, received: list[bytes]) -> None:
            _read_frames(conn, 1, received)
            conn.sendall(rc.encode_frame(unsigned.SerializeToString()))

        fake = self._serve(script)
        with self.assertRaises(rc.HandshakeError):
            rr.punch_hole_request(f"127.0.0.1:{fake.port}", self.key, PEER_ID)
        fake2 = self._serve(script)
        got = rr.punch_hole_request(
            f"127.0.0.1:{fake2.port}", self.key, PEER_ID, require_host_key=False
        )
        self.assertIsNone(got.host_pk)

    def test_silence_is_rustdesks_failure(self) -> None:
        def script(conn: socket.socket, received: list[bytes]) -> None:
            _read_frames(conn, 2, received)
            conn.recv(1)  # open until the client gives up

        fake = self._serve(script)
        with self.assertRaises(rr.RendezvousFailure) as e:
            rr.punch_hole_request(f"127.0.0.1:{fake.port}", self.key, PEER_ID, waits=(0.1, 0.1))
        self.assertEqual(str(e.exception), "Failed to connect via rendezvous server")
        self.assertEqual(len(fake.received), 2)

    def test_closed_by_the_server(self) -> None:
        fake = self._serve(lambda conn, received: _read_frames(conn, 1, received))
        with self.assertRaises(rr.RendezvousFailure) as e:
            rr.punch_hole_request(f"127.0.0.1:{fake.port}", self.key, PEER_ID)
        self.assertEqual(str(e.exception), "Failed to connect via rendezvous server")

    def test_relay_request_and_leg(self) -> None:
        """request_relay keeps its own uuid; the relay leg starts with RequestRelay."""

        def script(conn: socket.socket, received: list[bytes]) -> None:
            _read_frames(conn, 1, received)
            # A host answers without its uuid (rendezvous_mediator.rs create_relay,
            # initiate = false): the client must not need it.
            out = rz.RendezvousMessage(relay_response=rz.RelayResponse(version="1.4.9"))
            conn.sendall(rc.encode_frame(out.SerializeToString()))

        fake = self._serve(script)
        ticket = rr.request_relay(f"127.0.0.1:{fake.port}", self.key, PEER_ID, "127.0.0.1:7")
        self.assertEqual(ticket.relay, ("127.0.0.1", 7))
        req = rz.RendezvousMessage()
        req.ParseFromString(fake.received[0])
        self.assertEqual(req.request_relay.uuid, ticket.uuid)
        self.assertEqual(req.request_relay.relay_server, "127.0.0.1:7")
        self.assertTrue(req.request_relay.secure)
        self.assertEqual(req.request_relay.licence_key, "")

        relay = self._serve(lambda conn, received: _read_frames(conn, 1, received))
        leg = rr.connect_via_relay(f"127.0.0.1:{relay.port}", ticket.uuid, self.key, PEER_ID)
        leg.close()
        relay.close()
        first = rz.RendezvousMessage()
        first.ParseFromString(relay.received[0])
        self.assertEqual(
            (first.request_relay.uuid, first.request_relay.licence_key, first.request_relay.id),
            (ticket.uuid, self.key, PEER_ID),
        )

    def test_refused_relay(self) -> None:
        def script(conn: socket.socket, received: list[bytes]) -> None:
            _read_frames(conn, 1, received)
            out = rz.RendezvousMessage(relay_response=rz.RelayResponse(refuse_reason="No"))
            conn.sendall(rc.encode_frame(out.SerializeToString()))

        fake = self._serve(script)
        with self.assertRaises(rr.RendezvousFailure) as e:
            rr.request_relay(f"127.0.0.1:{fake.port}", self.key, PEER_ID, "r:1")
        self.assertEqual(str(e.exception), "No")


# --- what a stock client sends and reads in a session ---------------------------------------

# X11 keycodes (Linux input-event code + 8) on a US layout: what a stock Linux client's Map
# mode puts in KeyEvent.chr for a peer whose PeerInfo.platform is "Linux" (keyboard.rs
# _map_keyboard_mode sends rdev's position code unchanged).
_ROWS = {2: "1234567890", 16: "qwertyuiop", 30: "asdfghjkl", 44: "zxcvbnm"}
X11_KEYCODE = {c: first + 8 + i for first, row in _ROWS.items() for i, c in enumerate(row)}
X11_KEYCODE[" "] = 57 + 8
X11_SHIFT_L = 42 + 8


def map_mode_typing(text: str) -> list[pb.Message]:
    """The KeyEvents a stock client sends in Map mode while someone types C{text}."""

    def key(code: int, down: bool) -> pb.Message:
        return rc.key_event(down=down, mode=pb.KeyboardMode.Map, chr=code)

    out: list[pb.Message] = []
    for c in text:
        code = X11_KEYCODE[c.lower()]
        if c.isupper():
            out.append(key(X11_SHIFT_L, True))
        out += [key(code, True), key(code, False)]
        if c.isupper():
            out.append(key(X11_SHIFT_L, False))
    return out


def translate_mode_typing(text: str) -> list[pb.Message]:
    """Translate mode: each produced character as C{seq}, down only (try_fill_unicode)."""
    return [rc.key_event(down=True, mode=pb.KeyboardMode.Translate, seq=c) for c in text]


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) if x.isdigit() else 0 for x in v.split("-")[0].split("."))


def clipboard_to_host(text: str, peer: pb.PeerInfo) -> pb.Message:
    """clipboard.rs: zstd (level 3) when shorter; multi_clipboards to 1.3.0+ peers that are
    not iOS (is_support_multi_clipboard), a lone Clipboard to older ones."""
    item = rc.clipboard_message(text, zstandard.ZstdCompressor(level=3).compress).clipboard
    item.format = pb.ClipboardFormat.Text
    if _version(peer.version) >= (1, 3, 0) and peer.platform not in ("", "iOS"):
        return pb.Message(multi_clipboards=pb.MultiClipboards(clipboards=[item]))
    return pb.Message(clipboard=item)


def clipboard_texts(msg: pb.Message) -> list[str]:
    """The text items of a received clipboard or multi_clipboards message."""
    which = msg.WhichOneof("union")
    if which == "clipboard":
        items = [msg.clipboard]
    elif which == "multi_clipboards":
        items = list(msg.multi_clipboards.clipboards)
    else:
        return []
    texts = []
    for item in items:
        if item.format != pb.ClipboardFormat.Text:
            continue
        content = item.content
        if item.compress:
            content = zstandard.ZstdDecompressor().decompressobj().decompress(content)
        texts.append(content.decode())
    return texts


def capture_screen(env: dict[str, str]) -> Image.Image:
    """The host display as X has it (ImageMagick's import, not LiteDesk's capture)."""
    png = subprocess.run(
        ["import", "-window", "root", "png:-"],
        env=env,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return Image.open(io.BytesIO(png)).convert("RGB")


def host_clipboard(env: dict[str, str]) -> str:
    return subprocess.run(
        ["xclip", "-o", "-selection", "clipboard"],
        env=env,
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout


def set_host_clipboard(env: dict[str, str], text: str) -> None:
    owner = subprocess.Popen(
        ["xclip", "-i", "-selection", "clipboard"], env=env, stdin=subprocess.PIPE
    )
    assert owner.stdin is not None
    owner.stdin.write(text.encode())
    owner.stdin.close()
    owner.wait(10)
    # xclip -i forks a child that owns the selection: wait until it serves it.
    wait_until(lambda: host_clipboard(env) == text, 10, 0.1, "xclip to own the clipboard")


class VP9Screen:
    """Decodes the host's video as a stock client does (libvpx VP9 through PyAV)."""

    def __init__(self) -> None:
        self.decoder = av.CodecContext.create("vp9", "r")
        self.frames = 0
        self.keys: list[bool] = []
        self.image: Image.Image | None = None

    def feed(self, msg: pb.Message) -> None:
        vf = msg.video_frame
        if vf.WhichOneof("union") != "vp9s":
            raise AssertionError(f"video is {vf.WhichOneof('union')}, not VP9")
        for encoded in vf.vp9s.frames:
            self.keys.append(encoded.key)
            for frame in self.decoder.decode(av.Packet(encoded.data)):
                self.frames += 1
                self.image = frame.to_image()


# --- end to end ------------------------------------------------------------------------------


class StockClientChecks(_Case):
    """The checks, run once per path; subclasses set C{force_relay} and C{path}."""

    force_relay = False
    path = "direct"
    lab: Lab
    peer: str
    tmp: Path

    def setUp(self) -> None:
        self.lab = lab()
        # No option: a host serves stock RustDesk clients by default, on every path.
        self.peer = self.lab.host(HOST, password=PASSWORD)
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir()

    @property
    def host_log(self) -> str:
        return (self.lab.dir / f"host-{HOST}.log").read_text()

    def reach(self) -> tuple[rc.RustDeskClient, rr.Reached]:
        """By id through the server, then the secure handshake; the session is encrypted."""
        reached = rr.reach(
            f"127.0.0.1:{self.lab.port}", self.lab.key, self.peer, force_relay=self.force_relay
        )
        self.assertEqual(reached.path, self.path)
        # The loopback host shares our public IP: the server offers its LAN address.
        self.assertEqual(reached.answer.kind, "local")
        client = rc.RustDeskClient(reached.sock, self.peer, reached.answer.host_pk)
        self.addCleanup(client.close)
        self.assertTrue(client.handshake())
        return client, reached

    def logged_in(self) -> tuple[rc.RustDeskClient, pb.PeerInfo]:
        client, _ = self.reach()
        result = client.login(PASSWORD)
        self.assertEqual(result.response.error, "")
        self.assertEqual(result.response.WhichOneof("union"), "peer_info")
        return client, result.response.peer_info

    def test_screen_is_the_hosts(self) -> None:
        """The first VP9 frame is a key frame that decodes to the host's screen; so does the
        key frame a refresh asks for."""
        expected = paint_test_screen(self.tmp / "screen.png", SCREEN_MARKER)
        set_root_image(self.lab.xvfb, str(self.tmp / "screen.png"))
        wait_until(
            lambda: mean_error(expected, capture_screen(self.lab.env)) < 1.0,
            10,
            0.2,
            "the test screen on the host display",
        )
        screen = capture_screen(self.lab.env)
        client, peer_info = self.logged_in()
        display = peer_info.displays[peer_info.current_display]
        self.assertEqual((display.width, display.height), screen.size)
        vp9 = VP9Screen()
        vp9.feed(client.recv_until("video_frame", limit=60))
        self.assertTrue(vp9.keys[0])
        assert vp9.image is not None
        self.assertEqual(vp9.image.size, screen.size)
        self.assertLess(mean_error(screen, vp9.image), 6.0)
        # A shifted picture is far off: the comparison can tell a geometry bug.
        shifted = Image.new("RGB", screen.size)
        shifted.paste(screen, (40, 0))
        self.assertGreater(mean_error(shifted, vp9.image), 12.0)

        client.send_misc(refresh_video=True)
        before = len(vp9.keys)
        vp9.feed(client.recv_until("video_frame", limit=60))
        self.assertTrue(vp9.keys[before])
        self.assertLess(mean_error(screen, vp9.image), 6.0)

    def test_click_and_typing_reach_a_window(self) -> None:
        """A left click lands where it was sent; Map-mode keys and Translate-mode text type
        into the focused Tk entry."""
        rec = Recorder(self.lab.env)
        self.addCleanup(rec.stop)
        client, _ = self.logged_in()
        rec.command("clear")
        start = rec.mark()
        cx, cy = rec.ready["canvas_x"] + 210, rec.ready["canvas_y"] + 140
        client.send_mouse(0, cx, cy)  # move
        client.send_mouse((1 << 3) | 1, cx, cy)  # left down
        client.send_mouse((1 << 3) | 2, cx, cy)  # left up
        press = rec.wait_for(lambda e: e["ev"] == "ButtonPress", start=start, timeout=10)
        self.assertEqual((press["num"], press["x_root"], press["y_root"]), (1, cx, cy))
        rec.wait_for(lambda e: e["ev"] == "ButtonRelease", start=start, timeout=10)

        def typed() -> str:
            return str(rec.command("state")["text"])

        rec.command("clear")  # the focus back on the entry (no window manager)
        for msg in map_mode_typing(TYPED_MAP):
            client.send(msg)
        wait_until(lambda: typed() == TYPED_MAP, 10, 0.1, lambda: f"typed {typed()!r}")
        rec.command("clear")
        for msg in translate_mode_typing(TYPED_MARKER):
            client.send(msg)
        wait_until(lambda: typed() == TYPED_MARKER, 10, 0.1, lambda: f"typed {typed()!r}")
        # The session is still up and answering.
        client.send_test_delay(time=7, from_client=True)
        echo = client.recv_until("test_delay", limit=200)
        self.assertIsNotNone(echo)

    def test_clipboard_both_ways(self) -> None:
        """The client's (zstd-compressed) text lands on the host clipboard; the host's comes
        back in the form a 1.4.9 client reads."""
        client, peer_info = self.logged_in()
        out = clipboard_to_host(CLIP_TO_HOST, peer_info)
        self.assertEqual(out.WhichOneof("union"), "multi_clipboards")
        self.assertTrue(out.multi_clipboards.clipboards[0].compress)
        client.send(out)
        wait_until(
            lambda: host_clipboard(self.lab.env) == CLIP_TO_HOST,
            10,
            0.2,
            lambda: f"the client's text on the host clipboard ({host_clipboard(self.lab.env)!r})",
        )
        set_host_clipboard(self.lab.env, CLIP_FROM_HOST)
        # The host sends a TestDelay every second: 60 messages are about a minute at most.
        for _ in range(60):
            if CLIP_FROM_HOST in clipboard_texts(client.recv()):
                break
        else:
            self.fail("the host's clipboard never reached the client")

    def test_wrong_password_is_rustdesks_text(self) -> None:
        client, _ = self.reach()
        result = client.login("not-the-password")
        self.assertEqual(result.response.error, "Wrong Password")

    def test_flipped_byte_closes_and_the_host_serves_on(self) -> None:
        client, _ = self.logged_in()
        client.recv_until("video_frame", limit=60)
        client.send_tampered(pb.Message(test_delay=pb.TestDelay(time=1, from_client=True)))
        self.assertTrue(client.closed_by_peer())
        wait_until(
            lambda: "tampered, replayed or reordered" in self.host_log,
            10,
            message="the host's reason in its log",
        )
        second, _ = self.logged_in()
        self.assertTrue(second.recv_until("video_frame", limit=60).HasField("video_frame"))


@requires(*NEEDS, "import", "tkinter")
class LanPathTests(StockClientChecks, SynchronousTestCase):
    """The path the server offers a client behind the host's public IP: FetchLocalAddr, the
    host's LocalAddr, and a direct TCP connection to it."""


def os_password_typing(text: str) -> list[pb.Message]:
    """client.rs _input_os_password: the whole text as one Legacy C{seq} click, then Return."""
    return [
        rc.key_event(press=True, mode=pb.KeyboardMode.Legacy, seq=text),
        rc.key_event(press=True, mode=pb.KeyboardMode.Legacy, control_key=pb.ControlKey.Return),
    ]


@requires(*NEEDS, "import", "tkinter")
class RelayPathTests(StockClientChecks, SynchronousTestCase):
    """The client forces the relay: it still gets the LAN answer, then asks the server for a
    relay with its own uuid (RequestRelay), and both legs meet on the relay behind the lab's
    recording proxy.  The host speaks first on its leg too."""

    force_relay = True
    path = "relay"

    def test_relay_carries_no_plaintext(self) -> None:
        """What the relay operator records holds no typed text, password, password hash,
        clipboard text or screen text, though all of them crossed it."""
        paint_test_screen(self.tmp / "screen.png", SCREEN_MARKER)
        set_root_image(self.lab.xvfb, str(self.tmp / "screen.png"))
        rec = Recorder(self.lab.env)
        self.addCleanup(rec.stop)
        before = len(self.lab.proxy.snapshot())
        client, reached = self.reach()
        result = client.login(PASSWORD)
        self.assertEqual(result.response.error, "")
        client.recv_until("video_frame", limit=60)

        rec.command("clear")
        start = rec.mark()
        for msg in os_password_typing(TYPED_MARKER):
            client.send(msg)
        submit = rec.wait_for(lambda e: e["ev"] == "submit", start=start, timeout=10)
        self.assertEqual(submit["text"], TYPED_MARKER)

        clip = f"plain clipboard {TYPED_MARKER[::-1]}"
        item = rc.clipboard_message(clip).clipboard  # uncompressed: the text itself is sent
        client.send(pb.Message(multi_clipboards=pb.MultiClipboards(clipboards=[item])))
        wait_until(
            lambda: host_clipboard(self.lab.env) == clip, 10, 0.2, "the clipboard on the host"
        )
        client.close()

        captured = self.lab.proxy.snapshot()[before:]
        # This session did cross the proxy: its relay request carries our uuid.
        self.assertIn(reached.uuid.encode(), captured)
        self.assertGreater(len(captured), 10_000)
        h1 = rc.password_h1(PASSWORD, result.hash.salt)
        proof = rc.password_proof(PASSWORD, result.hash.salt, result.hash.challenge)
        secrets = {
            "typed text": TYPED_MARKER.encode(),
            "password": PASSWORD.encode(),
            "password hash": h1,
            "password hash (hex)": h1.hex().encode(),
            "password proof": proof,
            "clipboard": clip.encode(),
            "screen text": SCREEN_MARKER.encode(),
        }
        for what, secret in secrets.items():
            self.assertNotIn(secret, captured, what)
