"""A LiteDesk host and viewer that reach their server only over WebSocket (issue 12 item 7).

docs/websocket.rst §7.  From the rules to the whole pair:

- the sans-IO parts: RustDesk's C{check_ws} mapping and LiteDesk's URLs
  (L{litedesk.websocket.client.WebSocketServer}), the host's first message
  that is both a frame and a C{Message}, how a relay leg recognises its
  partner's leg (WebSocket shapers, L{litedesk.session.links.PartnerFraming}
  on TCP), the host's stream registration on a test clock, with hypothesis
  for each parser;
- hosts and viewers in-process against a real server on loopback: a
  WebSocket pair, and both mixed pairs (one leg WebSocket, one TCP), with
  pinned TLS through the relay; hostile relay partners and a hostile server;
- the real programs: C{twistd litedesk-host --websocket} on Xvfb and
  C{litedesk-viewer --websocket --headless} through Debian's nginx with TLS,
  the server's TCP and UDP listeners not even on TCP/UDP (Unix sockets and
  another loopback address), the relay leg recorded behind nginx carrying
  only ciphertext.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey
from PIL import Image
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols import portforward
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from litedesk.host.agent import build_host_agent
from litedesk.host.options import HostOptions
from litedesk.host.paths import HostPaths
from litedesk.host.registration import Registration, RegState, StreamRegistration
from litedesk.host.rendezvous_client import RendezvousClient, StreamRendezvousClient
from litedesk.proto import message_pb2
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rustdesk.channel import SecureChannelProtocol
from litedesk.rustdesk.detect import (
    ProtocolDetector,
    SessionStarterFactory,
    rustdesk_host_protocol,
)
from litedesk.rustdesk.secure import ClientHandshake, HostHandshake
from litedesk.rustdesk.viewer_detect import HostDetector
from litedesk.session.host_certificate import host_context_factory
from litedesk.session.links import (
    FRAMED,
    RAW,
    LinkError,
    PartnerFraming,
    RelayLeg,
    ServerLinks,
)
from litedesk.session.pinning import viewer_context_factory
from litedesk.session.tls import wrap_client, wrap_server
from litedesk.viewer.cli import build_parser
from litedesk.viewer.connection import UsageFailure, server_links
from litedesk.viewer.route import find_host
from litedesk.viewer.ws_route import find_host_ws
from litedesk.websocket.client import dial
from litedesk.websocket.shapers import (
    CHUNK,
    CHUNKS,
    FRAMED_LITEDESK,
    FRAMED_RUSTDESK,
    MAX_CHUNK,
    MAX_CLIENT_MESSAGE,
    MAX_FIRST_FRAME,
    MAX_RELAY_MESSAGE,
    MAX_RENDEZVOUS_MESSAGE,
    MESSAGES,
    UNKNOWN,
    FramedShaper,
    RelayLegShaper,
    ShapeError,
    classify_first_message,
    dual_first_message,
    frame_header,
)
from litedesk.websocket.urls import (
    WebSocketServer,
    WsUrl,
    check_ws,
    client_tls,
    load_ca_file,
    parse_ws_url,
)
from litedesk.wire.bytescodec import FrameDecoder, encode_frame, encode_header

from .rendezvous_harness import start_server
from .support.e2e_lab import NEEDS
from .support.images import mean_error, paint_test_screen
from .support.nginx import NGINX, Nginx, self_signed
from .support.polling import pause, until
from .support.ports import free_port_pair
from .support.processes import TWISTD, stop_all
from .support.skips import cannot_run, requires
from .support.ws_client import ws_connect
from .support.xvfb import set_root_image, shared_xvfb

reactor: Any = _reactor
HOST_ID = "123456789"


@implementer(IHandshakeListener)
class Marker(Protocol):
    """Each side sends a line after the TLS handshake and records what it gets.

    C{error} and C{rustdesk} let a viewer's L{HostDetector} carry it as its session.
    """

    error: Exception | None = None
    rustdesk = False

    def __init__(self, line: bytes) -> None:
        self.line = line
        self.received = b""
        self.got: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        self.transport.write(self.line)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\n" in self.received and not self.got.called:
            self.got.callback(self.received)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        if not self.lost.called:
            self.lost.callback(None)


class _FrameMarker(Marker):
    """A session inside RustDesk's channel: it writes and reads BytesCodec frames."""

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(self.line))


def fixed_server(data: Path) -> tuple[Any, int]:
    """A server on P-1..P+3 of 127.0.0.1, as RustDesk's layout (so check_ws applies)."""
    p = free_port_pair()
    svc = start_server(
        data,
        "--udp-endpoint",
        f"udp:{p}:interface=127.0.0.1",
        "--tcp-endpoint",
        f"tcp:{p}:interface=127.0.0.1",
        "--nat-endpoint",
        f"tcp:{p - 1}:interface=127.0.0.1",
        "--relay-endpoint",
        f"tcp:{p + 1}:interface=127.0.0.1",
        "--ws-endpoint",
        f"tcp:{p + 2}:interface=127.0.0.1",
        "--ws-relay-endpoint",
        f"tcp:{p + 3}:interface=127.0.0.1",
    )
    return svc, p


# -- where things are ----------------------------------------------------------------------


class UrlRuleTests(SynchronousTestCase):
    def test_check_ws_as_hbb_common(self) -> None:
        """hbb_common websocket.rs test_check_ws's vectors (api-server https for names,
        which is what LiteDesk always assumes)."""
        cases = [
            (("127.0.0.1", 21116, False), "ws://127.0.0.1:21118/"),
            (("127.0.0.1", 21117, True), "ws://127.0.0.1:21119/"),
            (("0:0:0:0:0:0:0:1", 21116, False), "ws://[0:0:0:0:0:0:0:1]:21118/"),
            (("0:0:0:0:0:0:0:1", 21117, True), "ws://[0:0:0:0:0:0:0:1]:21119/"),
            (("rustdesk.com", 21116, False), "wss://rustdesk.com/ws/id"),
            (("rustdesk.com", 21117, True), "wss://rustdesk.com/ws/relay"),
            (("rustdesk.com", 34567, True), "wss://rustdesk.com/ws/relay"),
            (("127.0.0.1", 23456, False), "ws://127.0.0.1:23458/"),
            (("127.0.0.1", 23457, True), "ws://127.0.0.1:23459/"),
            (("127.0.0.1", 34567, True), "ws://127.0.0.1:34569/"),
        ]
        for (host, port, relay), want in cases:
            self.assertEqual(str(check_ws(host, port, relay=relay)), want)

    def test_server_from_option(self) -> None:
        """A HOST[:PORT] maps by check_ws; a URL with path / is a proxy's front with
        /ws/id and /ws/relay; another path is the rendezvous URL, its sibling the relay."""
        ip = WebSocketServer.from_option("127.0.0.1")
        self.assertEqual(
            (str(ip.rendezvous), str(ip.relay), ip.relay_name()),
            ("ws://127.0.0.1:21118/", "ws://127.0.0.1:21119/", "127.0.0.1:21117"),
        )
        named = WebSocketServer.from_option("Desk.Example.net:21200")
        self.assertEqual(
            (str(named.rendezvous), str(named.relay), named.relay_name()),
            (
                "wss://desk.example.net/ws/id",
                "wss://desk.example.net/ws/relay",
                "Desk.Example.net:21201",
            ),
        )
        front = WebSocketServer.from_option("wss://Desk.Example.net:8443/")
        self.assertEqual(
            (str(front.rendezvous), str(front.relay), front.relay_name()),
            (
                "wss://desk.example.net:8443/ws/id",
                "wss://desk.example.net:8443/ws/relay",
                "wss://desk.example.net:8443/ws/relay",
            ),
        )
        path = WebSocketServer.from_option("ws://[2001:db8::1]:21118/litedesk/id")
        self.assertEqual(str(path.rendezvous), "ws://[2001:db8::1]:21118/litedesk/id")
        self.assertEqual(str(path.relay), "ws://[2001:db8::1]:21118/litedesk/relay")
        v6 = WebSocketServer.from_option("[2001:db8::1]:21116")
        self.assertEqual(v6.relay_name(), "[2001:db8::1]:21117")
        for bad in ("", "ws://", "http://x/", "ws://u@x/", "ws://x:0/", "ws://x/?a", "[::1"):
            self.assertRaises(ValueError, WebSocketServer.from_option, bad)

    def test_relay_names(self) -> None:
        """Which URL a relay name leads to: empty the default, a URL itself, HOST[:PORT]
        by check_ws, and behind a URL front a relay on the front's own host."""
        front = WebSocketServer.from_option("wss://desk.example.net/")
        self.assertEqual(front.relay_for(""), front.relay)
        self.assertEqual(front.relay_for("desk.example.net:21117"), front.relay)
        self.assertEqual(str(front.relay_for("wss://r.example.net:9/x")), "wss://r.example.net:9/x")
        self.assertEqual(str(front.relay_for("10.0.0.7")), "ws://10.0.0.7:21119/")
        self.assertEqual(str(front.relay_for("r.example.net:3000")), "wss://r.example.net/ws/relay")
        plain = WebSocketServer.from_option("10.0.0.1:21116")
        self.assertEqual(str(plain.relay_for("10.0.0.1:21117")), "ws://10.0.0.1:21119/")
        self.assertRaises(ValueError, plain.relay_for, "[::1")

    @given(
        st.booleans(),
        st.one_of(
            st.from_regex(
                r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True
            ),
            st.ip_addresses().map(str),
        ),
        st.integers(1, 65535),
        st.from_regex(r"(/[A-Za-z0-9._~-]{0,12}){1,4}", fullmatch=True),
    )
    @settings(max_examples=300, deadline=None)
    def test_url_round_trip(self, secure: bool, host: str, port: int, path: str) -> None:
        """A URL prints and parses back to itself (IPv6 in brackets, default ports left out)."""
        url = WsUrl(secure, host.lower(), port, path)
        self.assertEqual(parse_ws_url(str(url)), url)

    @given(
        st.text(max_size=80) | st.binary(max_size=80).map(lambda b: "ws://" + b.decode("latin-1"))
    )
    @settings(max_examples=500, deadline=None)
    def test_url_parser_refuses_cleanly(self, text: str) -> None:
        """Any text parses or raises ValueError, never anything else."""
        try:
            url = parse_ws_url(text)
        except ValueError:
            return
        self.assertTrue(url.host and 0 < url.port < 65536 and url.path.startswith("/"))

    def test_ca_file(self) -> None:
        """--ws-ca: PEM certificates, else a clear reason."""
        d = Path(self.mktemp())
        d.mkdir()
        cert, _, pem = self_signed(d)
        self.assertEqual(len(load_ca_file(str(cert))), 1)
        (d / "two.pem").write_bytes(pem + b"\n" + pem)
        self.assertEqual(len(load_ca_file(str(d / "two.pem"))), 2)
        (d / "none.pem").write_text("no certificate here")
        with self.assertRaises(ValueError) as e:
            load_ca_file(str(d / "none.pem"))
        self.assertIn("no PEM certificate", str(e.exception))
        self.assertRaises(ValueError, load_ca_file, str(d / "missing.pem"))
        self.assertIsNone(client_tls(parse_ws_url("ws://127.0.0.1:1/")))
        self.assertIsNotNone(client_tls(parse_ws_url("wss://localhost/"), str(cert)))


# -- the host's first message and a leg's partner ---------------------------------------------


def signed_id_message(peer_id: str, pk: bytes, mark: bool, signature: bytes) -> bytes:
    idpk = message_pb2.IdPk(id=peer_id, pk=pk, litedesk_tls=mark).SerializeToString()
    msg = message_pb2.Message()
    msg.signed_id.id = signature + idpk
    return msg.SerializeToString()


signed_ids = st.builds(
    signed_id_message,
    st.text(min_size=0, max_size=40),
    st.binary(min_size=0, max_size=64),
    st.booleans(),
    st.binary(min_size=64, max_size=64),
)


def parsed(data: bytes) -> message_pb2.Message:
    msg = message_pb2.Message()
    msg.ParseFromString(data)
    return msg


class FirstMessageTests(SynchronousTestCase):
    @given(signed_ids)
    @settings(max_examples=400, deadline=None)
    def test_dual_first_message(self, payload: bytes) -> None:
        """The host's SignedId message is a BytesCodec frame of it (padded) and parses as
        it whole, as a RustDesk client reads it; classified as a chunk."""
        m = dual_first_message(payload)
        head = frame_header(m)
        assert head is not None
        self.assertEqual(head[0] + head[1], len(m))
        want = parsed(payload).signed_id
        self.assertEqual(parsed(m[head[0] :]).signed_id, want)
        self.assertEqual(parsed(m).signed_id, want)
        self.assertEqual(classify_first_message(m), CHUNK)
        self.assertIn(classify_first_message(payload), (FRAMED_LITEDESK, FRAMED_RUSTDESK))

    def test_dual_first_message_edges(self) -> None:
        """Every frame length (mod 64): a header byte that would name field 0 gets more
        padding; a payload too long for a two-byte header is a plain frame."""
        for k in range(130):
            payload = signed_id_message("x" * k, b"", False, bytes(64))
            m = dual_first_message(payload)
            self.assertNotEqual(m[0] >> 3, 0)
            self.assertEqual(parsed(m).signed_id, parsed(payload).signed_id)
        big = signed_id_message("x" * 20000, b"", False, bytes(64))
        self.assertEqual(dual_first_message(big), encode_frame(big))

    def test_classify(self) -> None:
        marked = signed_id_message(HOST_ID, bytes(32), True, bytes(64))
        plain = signed_id_message(HOST_ID, bytes(32), False, bytes(64))
        self.assertEqual(classify_first_message(encode_frame(marked)), CHUNK)
        self.assertEqual(classify_first_message(marked), FRAMED_LITEDESK)
        self.assertEqual(classify_first_message(plain), FRAMED_RUSTDESK)
        self.assertEqual(classify_first_message(b"\x16\x03\x01\x00\x10"), UNKNOWN)

    @given(st.binary(max_size=300))
    @settings(max_examples=1000, deadline=None)
    def test_classify_any_bytes(self, data: bytes) -> None:
        """Whatever a relay sends first is classified, never an exception."""
        self.assertIn(
            classify_first_message(data), (CHUNK, FRAMED_LITEDESK, FRAMED_RUSTDESK, UNKNOWN)
        )


PREAMBLE = encode_frame(
    rz.RendezvousMessage(
        request_relay=rz.RequestRelay(uuid="u-1", licence_key="k")
    ).SerializeToString()
)
REQUEST = PREAMBLE[1:]  # the RequestRelay message: under 64 bytes, a one-byte header
SIGNED = signed_id_message(HOST_ID, bytes(32), True, bytes(64))
CLIENT_HELLO = b"\x16\x03\x01\x00\x05hello"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


class RelayLegShaperTests(SynchronousTestCase):
    def test_host_leg_with_litedesk_viewer(self) -> None:
        """Host: RequestRelay as one message, SignedId as the dual message, a viewer's
        TLS record chooses chunks both ways (at most 64 KiB each)."""
        s = RelayLegShaper("host")
        self.assertEqual(
            s.outgoing(PREAMBLE + encode_frame(SIGNED)), [REQUEST, dual_first_message(SIGNED)]
        )
        self.assertEqual(s.incoming(CLIENT_HELLO), CLIENT_HELLO)
        self.assertEqual((s.mode, s.partner, s.max_message), (CHUNKS, "tls", MAX_CHUNK))
        big = bytes(range(256)) * 600
        self.assertEqual(b"".join(s.outgoing(big)), big)
        self.assertEqual(
            [len(m) for m in s.outgoing(big)], [MAX_CHUNK, MAX_CHUNK, len(big) - 2 * MAX_CHUNK]
        )

    def test_host_leg_with_rustdesk_client(self) -> None:
        """Host: a bare Message answer (RustDesk's PublicKey) chooses one frame per message."""
        s = RelayLegShaper("host")
        s.outgoing(PREAMBLE)
        s.outgoing(encode_frame(SIGNED))
        public_key = b"\x2a\x04\x0a\x02ab"
        self.assertEqual(s.incoming(public_key), encode_frame(public_key))
        self.assertEqual(
            (s.mode, s.partner, s.max_message), (MESSAGES, "rustdesk", MAX_CLIENT_MESSAGE)
        )
        self.assertEqual(s.outgoing(encode_frame(b"one") + encode_frame(b"two")[:2]), [b"one"])
        self.assertEqual(s.outgoing(encode_frame(b"two")[2:]), [b"two"])
        self.assertEqual(s.incoming(b"sealed"), encode_frame(b"sealed"))

    def test_host_leg_partner_speaks_first(self) -> None:
        """Host whose session does not speak first: nothing is held back for a SignedId."""
        s = RelayLegShaper("host")
        s.outgoing(PREAMBLE)
        self.assertEqual(s.incoming(CLIENT_HELLO), CLIENT_HELLO)
        self.assertEqual(s.outgoing(b"\x16\x03\x03\x00\x02hi"), [b"\x16\x03\x03\x00\x02hi"])

    def test_viewer_leg(self) -> None:
        """Viewer: a host on WebSocket (dual message) or on TCP (bare SignedId, header put
        back) gives chunks; a RustDesk host one frame per message; empty messages are no
        first message."""
        dual = dual_first_message(SIGNED)
        for first, fed, partner, mode in (
            (dual, dual, CHUNK, CHUNKS),
            (SIGNED, encode_frame(SIGNED), FRAMED_LITEDESK, CHUNKS),
            (
                signed_id_message(HOST_ID, bytes(32), False, bytes(64)),
                encode_frame(signed_id_message(HOST_ID, bytes(32), False, bytes(64))),
                FRAMED_RUSTDESK,
                MESSAGES,
            ),
            (b"\x17junk", b"\x17junk", UNKNOWN, CHUNKS),
        ):
            s = RelayLegShaper("viewer")
            self.assertEqual(s.outgoing(PREAMBLE), [REQUEST])
            self.assertEqual(s.incoming(b""), b"")
            self.assertEqual(s.incoming(first), fed)
            self.assertEqual((s.partner, s.mode), (partner, mode))
        self.assertEqual(s.outgoing(CLIENT_HELLO), [CLIENT_HELLO])

    @given(st.lists(st.integers(0, 10_000), max_size=8), st.binary(max_size=3000))
    @settings(max_examples=300, deadline=None)
    def test_host_writes_split_anyhow(self, cuts: list[int], rest: bytes) -> None:
        """However the host's writes are cut, the relay gets the same messages: the
        preamble, the dual SignedId, then the same bytes."""
        stream = PREAMBLE + encode_frame(SIGNED) + rest
        s = RelayLegShaper("host")
        out = [m for piece in split(stream, cuts) for m in s.outgoing(piece)]
        self.assertEqual(out[:2], [REQUEST, dual_first_message(SIGNED)])
        self.assertEqual(b"".join(out[2:]), rest)

    def test_oversize_first_frame(self) -> None:
        s = RelayLegShaper("viewer")
        self.assertRaises(ShapeError, s.outgoing, encode_header(MAX_FIRST_FRAME + 1))


class _Session(Protocol):
    def __init__(self) -> None:
        self.got = bytearray()
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.got += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.lost = True


def framing(role: str) -> tuple[PartnerFraming, _Session, StringTransport]:
    session = _Session()
    adapter = PartnerFraming(session, role)
    transport = StringTransport()
    adapter.makeConnection(transport)
    return adapter, session, transport


class PartnerFramingTests(SynchronousTestCase):
    """A TCP relay leg: the partner's first bytes say whether it is on WebSocket."""

    def test_host_side(self) -> None:
        cases = [
            (CLIENT_HELLO, RAW, CLIENT_HELLO),  # a LiteDesk viewer on TCP
            (encode_frame(b"\x2a\x02ab"), RAW, encode_frame(b"\x2a\x02ab")),  # RustDesk client
            (b"\x00", RAW, b"\x00"),  # RustDesk's empty Message: decided at once
            (encode_frame(CLIENT_HELLO) + encode_frame(b"more"), FRAMED, CLIENT_HELLO + b"more"),
        ]
        for data, mode, fed in cases:
            adapter, session, transport = framing("host")
            adapter.dataReceived(data)
            self.assertEqual((adapter.mode, bytes(session.got)), (mode, fed))
            session.transport.write(b"x" * 70_000)  # type: ignore[union-attr]
            written = transport.value()
            if mode == FRAMED:
                self.assertEqual(FrameDecoder().feed(written), [b"x" * MAX_CHUNK, b"x" * 4464])
            else:
                self.assertEqual(written, b"x" * 70_000)

    def test_viewer_side(self) -> None:
        dual = dual_first_message(SIGNED)
        cases = [
            (encode_frame(SIGNED) + b"\x16rest", RAW, encode_frame(SIGNED) + b"\x16rest"),
            (encode_frame(dual) + encode_frame(b"\x16tls"), FRAMED, dual + b"\x16tls"),
            (b"\x16\x03\x03\x00\x7a" + b"s" * 30, RAW, b"\x16\x03\x03\x00\x7a" + b"s" * 30),
        ]
        for data, mode, fed in cases:
            adapter, session, _ = framing("viewer")
            for i in range(len(data)):  # byte by byte: decided as soon as it can be
                adapter.dataReceived(data[i : i + 1])
            self.assertEqual((adapter.mode, bytes(session.got)), (mode, fed))

    def test_raw_tls_never_waits(self) -> None:
        """A raw TLS stream is passed on from its first byte (it never waits for a frame
        its record header would seem to announce)."""
        for role in ("host", "viewer"):
            adapter, session, _ = framing(role)
            adapter.dataReceived(b"\x16")
            self.assertEqual((adapter.mode, bytes(session.got)), (RAW, b"\x16"))

    def test_hostile_partner_bounded(self) -> None:
        """A partner that announces a chunk over 64 KiB is dropped, holding nothing."""
        adapter, session, transport = framing("host")
        adapter.dataReceived(encode_frame(CLIENT_HELLO))
        self.assertEqual(adapter.mode, FRAMED)
        adapter.dataReceived(encode_header(MAX_CHUNK + 1) + b"z" * 1000)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(bytes(session.got), CLIENT_HELLO)

    def test_lost_while_undecided(self) -> None:
        adapter, session, _ = framing("viewer")
        adapter.dataReceived(encode_frame(SIGNED)[:3])
        adapter.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((bytes(session.got), session.lost), (encode_frame(SIGNED)[:3], True))

    @given(
        st.sampled_from(["host", "viewer"]),
        st.binary(max_size=600),
        st.lists(st.integers(0, 5000), max_size=6),
    )
    @settings(max_examples=500, deadline=None)
    def test_any_bytes_any_cuts(self, role: str, data: bytes, cuts: list[int]) -> None:
        """The decision and what the session gets do not depend on how reads are cut,
        and no input raises."""
        whole_adapter, whole, whole_transport = framing(role)
        whole_adapter.dataReceived(data)
        adapter, session, transport = framing(role)
        for piece in split(data, cuts):
            adapter.dataReceived(piece)
        self.assertEqual(adapter.mode, whole_adapter.mode)
        self.assertEqual(transport.disconnecting, whole_transport.disconnecting)
        if not transport.disconnecting:  # a dropped partner's last frames may be lost
            self.assertEqual(bytes(session.got), bytes(whole.got))


# -- the host's stream registration ------------------------------------------------------------


def ok(keep_alive: int = 30) -> rz.RendezvousMessage:
    return rz.RendezvousMessage(
        register_pk_response=rz.RegisterPkResponse(
            result=rz.RegisterPkResponse.OK, keep_alive=keep_alive
        )
    )


def refused(result: int) -> rz.RendezvousMessage:
    return rz.RendezvousMessage(
        register_pk_response=rz.RegisterPkResponse(result=result)  # type: ignore[arg-type]
    )


class StreamRegistrationTests(SynchronousTestCase):
    def reg(self) -> StreamRegistration:
        return StreamRegistration(HOST_ID, b"u" * 16, b"k" * 32)

    def test_register_and_keep_alive(self) -> None:
        """RegisterPk at once and every 15 s until OK; keep-alives answered; a stream silent
        for 1.5 x keep_alive is given up."""
        r = self.reg()
        out = r.opened(0.0)
        self.assertEqual([m.WhichOneof("union") for m in out.send], ["register_pk"])
        self.assertEqual(r.tick(14.0).send, [])
        self.assertEqual(len(r.tick(15.0).send), 1)
        out = r.received(ok(), 16.0)
        self.assertEqual(
            ([e.kind for e in out.events], r.state), (["registered"], RegState.REGISTERED)
        )
        self.assertEqual(r.tick(40.0).send, [])
        self.assertTrue(r.received(None, 50.0).heartbeat)
        self.assertEqual(r.tick(95.0).close, "")
        self.assertEqual(r.tick(95.1).close, "nothing from the server for 45 s")

    def test_retry_delays(self) -> None:
        """Streams that end without registering back off 1, 2, 4, 8, 15, 15 s; one that
        lived registered for 30 s starts over."""
        r = self.reg()
        delays = []
        for i in range(6):
            r.opened(i * 100.0)
            delay, _ = r.closed(i * 100.0 + 1)
            delays.append(delay)
        self.assertEqual(delays, [2.0, 4.0, 8.0, 15.0, 15.0, 15.0])
        r.opened(1000.0)
        r.received(ok(), 1000.5)
        delay, _events = r.closed(1031.0)
        self.assertEqual(delay, 1.0)

    def test_unreachable_and_back(self) -> None:
        r = self.reg()
        _, first = r.closed(0.0)
        _, second = r.closed(1.0)
        self.assertEqual(([e.kind for e in first], [e.kind for e in second]), ([], ["unreachable"]))
        self.assertEqual([e.kind for e in r.opened(2.0).events], ["reachable"])

    def test_refusals(self) -> None:
        """UUID_MISMATCH stops for good; TOO_FREQUENT waits 30 s for the next stream."""
        r = self.reg()
        r.opened(0.0)
        out = r.received(refused(rz.RegisterPkResponse.UUID_MISMATCH), 1.0)
        self.assertEqual(out.close, "registration refused")
        self.assertIn("registered to another machine", out.events[0].detail)
        self.assertEqual(r.closed(2.0), (None, []))
        self.assertEqual(r.tick(100.0).send, [])
        r = self.reg()
        r.opened(0.0)
        r.received(refused(rz.RegisterPkResponse.TOO_FREQUENT), 1.0)
        self.assertEqual(r.tick(20.0).send, [])
        delay, _ = r.closed(2.0)
        self.assertEqual(delay, 29.0)


class PairTests(TestCase):
    """A host and a viewer in-process, each on WebSocket or TCP, through a real server."""

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        self.svc, self.port = fixed_server(Path(self.mktemp()))
        self.addCleanup(self.svc.stopService)
        self.key = self.svc.server.key.public_key
        self.server = ("127.0.0.1", self.port)
        self.ws_links = ServerLinks(
            self.server, ws=WebSocketServer.from_option(f"127.0.0.1:{self.port}")
        )
        self.tcp_links = ServerLinks(self.server)
        self.host_key = SigningKey.generate()
        self.host_sessions: list[Marker] = []
        self.host_detectors: list[ProtocolDetector] = []
        self.host_channel_sessions: list[Marker] = []
        return pause(0.05)

    def make_session(self, relayed: bool = False, path: str = "") -> Any:
        """What a host's relay leg carries: SignedId first, then TLS (docs/protocol.rst §11.5)."""
        m = Marker(b"hello from host\n")
        self.host_sessions.append(m)
        inside = _FrameMarker(b"hello from host\n")  # for a RustDesk-style client
        self.host_channel_sessions.append(inside)
        detector = ProtocolDetector(
            HostHandshake(self.host_key, HOST_ID, offer_tls=True),
            lambda: wrap_server(m, host_context_factory(self.host_key, HOST_ID)),
            lambda begun, release: rustdesk_host_protocol(begun, lambda: inside, reactor, release),
            reactor,
            shared=relayed,
        )
        self.host_detectors.append(detector)
        return detector

    async def ws_host(self) -> StreamRendezvousClient:
        self.paths = paths = HostPaths(
            reactor, HOST_ID, self.server, self.key, self.make_session, links=self.ws_links
        )
        self.addCleanup(paths.stop)
        reg = StreamRegistration(HOST_ID, b"uuid-1", bytes(self.host_key.verify_key))
        client = StreamRendezvousClient(
            reg,
            lambda proto: self.ws_links.open_stream(reactor, proto),
            paths,
            reactor,
            self.ws_links.describe(),
            tick=0.05,
        )
        client.startService()
        self.addCleanup(client.stopService)
        await until(lambda: reg.state is RegState.REGISTERED, 10, message="stream registration")
        return client

    async def tcp_host(self) -> None:
        paths = HostPaths(
            reactor, HOST_ID, self.server, self.key, self.make_session, force_relay=True
        )
        self.addCleanup(paths.stop)
        reg = Registration(HOST_ID, b"uuid-1", bytes(self.host_key.verify_key))
        client = RendezvousClient(reg, self.server, paths, reactor, tick=0.05)
        udp = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        await until(lambda: reg.state is RegState.REGISTERED, 10, message="UDP registration")

    async def viewer(self, websocket: bool) -> Marker:
        if websocket:
            route = await find_host_ws(reactor, self.ws_links, self.key, HOST_ID)
            links = self.ws_links
        else:
            route = await find_host(
                reactor, self.server, self.key, HOST_ID, force_relay=True, nat_test=False
            )
            links = self.tcp_links
        self.assertEqual(route.path, "relay")
        marker = Marker(b"hello from viewer\n")
        detector = HostDetector(
            marker,  # type: ignore[arg-type]
            lambda: wrap_client(marker, viewer_context_factory(route.host_pk)),
            VerifyKey(route.host_pk),
            HOST_ID,
            reactor,
        )
        self.viewer_leg = await links.connect_relay(
            reactor, route.relay_name, route.uuid, self.key, detector
        )
        return marker

    def viewer_leg_saw(self) -> str | None:
        """What the viewer's leg made of its partner: a TCP leg's PartnerFraming mode,
        or a WebSocket leg's classification of the host's first message."""
        leg = self.viewer_leg
        if isinstance(leg.switched_to, PartnerFraming):
            return leg.switched_to.mode
        transport: Any = leg.transport
        return str(transport._proto.shaper.partner)

    async def exchange(self, viewer: Marker) -> None:
        got = await viewer.got.addTimeout(10, reactor)
        self.assertEqual(got, b"hello from host\n")
        await until(lambda: self.host_sessions and self.host_sessions[-1].got.called, 10)
        self.assertEqual(self.host_sessions[-1].received, b"hello from viewer\n")
        assert viewer.transport is not None
        viewer.transport.loseConnection()
        await viewer.lost
        await self.host_sessions[-1].lost.addTimeout(10, reactor)
        await pause(0.05)  # the relay's and the legs' last close handshakes

    def test_websocket_pair(self) -> Deferred[None]:
        """Both legs WebSocket: chunks of the raw stream both ways, pinned TLS inside."""

        async def run() -> None:
            await self.ws_host()
            marker = await self.viewer(websocket=True)
            await self.exchange(marker)
            self.assertEqual(self.viewer_leg_saw(), CHUNK)

        return Deferred.fromCoroutine(run())

    def test_websocket_host_tcp_viewer(self) -> Deferred[None]:
        """The host's leg WebSocket, the viewer's TCP: the viewer frames its stream."""

        async def run() -> None:
            await self.ws_host()
            marker = await self.viewer(websocket=False)
            await self.exchange(marker)
            self.assertEqual(self.viewer_leg_saw(), FRAMED)

        return Deferred.fromCoroutine(run())

    def test_hostile_partner_on_the_relay(self) -> Deferred[None]:
        """Someone who makes a WebSocket host open a relay and answers its SignedId with a
        message over 64 KiB is dropped before the host holds it; the job slot is free
        again and a real viewer gets in."""

        async def run() -> None:
            await self.ws_host()
            asking = await ws_connect(self.port + 2)
            asking.send_msg(
                rz.RendezvousMessage(
                    punch_hole_request=rz.PunchHoleRequest(
                        id=HOST_ID, licence_key=self.key, version="1.4.9", force_relay=True
                    )
                )
            )
            rr = (await asking.recv_msg(10)).relay_response
            self.assertEqual(rr.relay_server, f"127.0.0.1:{self.port + 1}")
            leg = await ws_connect(self.port + 3)
            self.addCleanup(leg.abort)
            leg.send_msg(
                rz.RendezvousMessage(
                    request_relay=rz.RequestRelay(uuid=rr.uuid, licence_key=self.key)
                )
            )
            self.assertEqual(classify_first_message(await leg.recv(10)), CHUNK)
            self.assertEqual(self.paths.slots.total, 1)
            leg.send(b"\x16" + b"z" * MAX_CHUNK)
            await until(lambda: self.paths.slots.total == 0, 10, message="the slot freed")
            # Dropped by the leg's message limit: the session never saw a byte of it.
            self.assertEqual(len(self.host_detectors), 1)
            self.assertIsNone(self.host_detectors[0].chosen)
            await leg.closed
            await asking.close()
            await self.exchange(await self.viewer(websocket=True))

        return Deferred.fromCoroutine(run())

    def rustdesk_client(self, websocket: bool) -> Deferred[Any]:
        """A client that speaks as RustDesk's: one frame per message on WebSocket, plain
        frames on TCP, RustDesk's secure channel (the viewer's own client side of it)."""

        async def run() -> _FrameMarker:
            asking = await ws_connect(self.port + 2)
            asking.send_msg(
                rz.RendezvousMessage(
                    punch_hole_request=rz.PunchHoleRequest(
                        id=HOST_ID, licence_key=self.key, version="1.4.9", force_relay=True
                    )
                )
            )
            rr = (await asking.recv_msg(10)).relay_response
            await asking.close()
            marker = _FrameMarker(b"hello from client\n")
            channel = SecureChannelProtocol(
                ClientHandshake(self.host_key.verify_key, HOST_ID),
                SessionStarterFactory(lambda: marker),
                reactor,
                "client",
            )
            leg = RelayLeg(rr.uuid, self.key, channel, partner_framing=False)
            if websocket:
                url = WebSocketServer.from_option(f"127.0.0.1:{self.port}").relay
                await dial(reactor, url, leg, FramedShaper(MAX_RELAY_MESSAGE))
            else:
                ep = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port + 1)
                await connectProtocol(ep, leg)
            return marker

        return Deferred.fromCoroutine(run())

    def test_rustdesk_style_clients_with_websocket_host(self) -> Deferred[None]:
        """A client reading the relay as a RustDesk client does (one Message per message or
        per frame) takes the WebSocket host's first message as its SignedId, and gets
        RustDesk's secure channel, on a WebSocket leg and on a TCP leg."""

        async def run() -> None:
            await self.ws_host()
            for websocket in (True, False):
                marker = await self.rustdesk_client(websocket)
                got = await marker.got.addTimeout(10, reactor)
                self.assertIn(b"hello from host\n", got)
                assert marker.transport is not None
                marker.transport.loseConnection()
                await marker.lost.addTimeout(10, reactor)
                host = self.host_channel_sessions[-1]
                await host.lost.addTimeout(10, reactor)
                self.assertIn(b"hello from client\n", host.received)
                self.assertEqual(self.host_detectors[-1].chosen, "rustdesk")
            await pause(0.05)

        return Deferred.fromCoroutine(run())

    def test_rustdesk_style_websocket_client_with_tcp_host(self) -> Deferred[None]:
        """The other mix: such a client on WebSocket, the host's leg TCP; the host's
        PartnerFraming sees a RustDesk frame (not a TLS record) and stays out of the way."""

        async def run() -> None:
            await self.tcp_host()
            marker = await self.rustdesk_client(websocket=True)
            self.assertIn(b"hello from host\n", await marker.got.addTimeout(10, reactor))
            assert marker.transport is not None
            marker.transport.loseConnection()
            await marker.lost.addTimeout(10, reactor)
            host = self.host_channel_sessions[-1]
            await host.lost.addTimeout(10, reactor)
            self.assertIn(b"hello from client\n", host.received)
            await pause(0.05)

        return Deferred.fromCoroutine(run())

    def test_tcp_host_websocket_viewer(self) -> Deferred[None]:
        """The host's leg TCP (registered over UDP), the viewer's WebSocket: the viewer
        puts the SignedId's header back, the host frames its stream."""

        async def run() -> None:
            await self.tcp_host()
            marker = await self.viewer(websocket=True)
            await self.exchange(marker)
            self.assertEqual(self.viewer_leg_saw(), FRAMED_LITEDESK)

        return Deferred.fromCoroutine(run())


# -- the programs, through nginx ---------------------------------------------------------


class _Leg:
    """What a recorded connection carried each way."""

    def __init__(self) -> None:
        self.up = bytearray()  # client -> server
        self.down = bytearray()
        self.closed = False


class _RecordingClient(portforward.ProxyClient):
    def dataReceived(self, data: bytes) -> None:
        peer: Any = self.peer
        peer.record.down += data
        super().dataReceived(data)


class _RecordingClientFactory(portforward.ProxyClientFactory):
    protocol = _RecordingClient


class _RecordingServer(portforward.ProxyServer):
    clientProtocolFactory = _RecordingClientFactory

    def connectionMade(self) -> None:
        self.record = _Leg()
        factory: Any = self.factory
        factory.records.append(self.record)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        self.record.up += data
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.record.closed = True
        super().connectionLost(reason)


class RecordingProxy(portforward.ProxyFactory):
    """A TCP forwarder that keeps both directions of every connection apart."""

    protocol = _RecordingServer
    noisy = False

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.records: list[_Leg] = []


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def ws_messages(stream: bytes) -> list[bytes]:
    """The binary messages of one direction of a WebSocket connection (after its HTTP
    upgrade), unmasked; an incomplete frame at the end is left out."""
    _, sep, rest = bytes(stream).partition(b"\r\n\r\n")
    assert sep, "no HTTP upgrade in the recording"
    out: list[bytes] = []
    current = bytearray()
    i = 0
    while i + 2 <= len(rest):
        b0, b1 = rest[i], rest[i + 1]
        n, j = b1 & 0x7F, i + 2
        if n == 126:
            n, j = int.from_bytes(rest[j : j + 2], "big"), j + 2
        elif n == 127:
            n, j = int.from_bytes(rest[j : j + 8], "big"), j + 8
        mask = b""
        if b1 & 0x80:
            mask, j = rest[j : j + 4], j + 4
        if j + n > len(rest):
            break
        payload = _unmask(rest[j : j + n], mask) if mask else rest[j : j + n]
        i = j + n
        opcode = b0 & 0x0F
        if opcode in (1, 2):
            current = bytearray(payload)
        elif opcode == 0:
            current += payload
        else:
            continue  # close, ping, pong
        if b0 & 0x80 and opcode != 1:
            out.append(bytes(current))
    return out


def tls_record_types(stream: bytes) -> list[int]:
    """The record types of a TLS byte stream, which it must consist of exactly."""
    types: list[int] = []
    i = 0
    while i < len(stream):
        assert stream[i + 1 : i + 3] == b"\x03\x03" or stream[i] == 0x16, stream[i : i + 5].hex()
        length = int.from_bytes(stream[i + 3 : i + 5], "big")
        types.append(stream[i])
        i += 5 + length
    assert i == len(stream), "the stream ends inside a TLS record"
    return types


VIEWER = [sys.executable, "-c", "from litedesk.viewer.cli import main; main()"]
PASSWORD = "wss-e2e-password-Jq8"
TYPED = "Typed-over-WSS-R4v"
SCREEN_TEXT = "WSS-SCREEN-MARKER-P2"
E2E_ID = "wss5551234"


@requires(*NEEDS)
class ThroughNginxTests(TestCase):
    """twistd litedesk-host --websocket and litedesk-viewer --websocket, wss:// through nginx.

    The pair is given nothing but nginx's URL and its certificate.  The
    server's TCP listeners (rendezvous, NAT test, relay) are Unix sockets
    and its UDP port an ephemeral one on 127.0.0.5: nothing of the pair can
    reach them, so the session below can only have used nginx's /ws/id and
    /ws/relay.  A recording proxy between nginx and the relay's WebSocket
    listener keeps what the relay sees.
    """

    timeout = 180

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        if NGINX is None:
            cannot_run("needs nginx (apt: nginx; tests/apt-packages.txt)")
        self.tmp = Path(self.mktemp()).resolve()
        self.tmp.mkdir(parents=True)
        t = self.tmp
        # Unix socket paths are at most 107 bytes: a short directory of their own.
        socks = Path(tempfile.mkdtemp(prefix="ldws-"))
        self.addCleanup(shutil.rmtree, socks, True)
        self.svc = start_server(
            t / "data",
            "--udp-endpoint",
            "udp:0:interface=127.0.0.5",
            "--tcp-endpoint",
            f"unix:{socks}/rendezvous",
            "--nat-endpoint",
            f"unix:{socks}/nat",
            "--relay-endpoint",
            f"unix:{socks}/relay",
            "--ws-endpoint",
            "tcp:0:interface=127.0.0.1",
            "--ws-relay-endpoint",
            "tcp:0:interface=127.0.0.1",
            "--trusted-proxy",
            "127.0.0.1/32",
        )
        self.addCleanup(self.svc.stopService)
        self.key = self.svc.server.key.public_key
        self.xvfb = shared_xvfb()
        self.procs: list[subprocess.Popen[bytes]] = []

        async def later() -> None:
            await pause(0.05)
            relay_ws = self.svc.relay_ws.listening.getHost().port
            self.proxy = RecordingProxy("127.0.0.1", relay_ws)
            port = reactor.listenTCP(0, self.proxy, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.nginx = Nginx(
                t / "nginx",
                self.svc.rendezvous_ws.listening.getHost().port,
                port.getHost().port,
            )
            self.addCleanup(self.nginx.stop)
            # Cleanups run last first: the host stops before nginx and the server.
            self.addCleanup(lambda: stop_all(self.procs))
            self.url = f"wss://localhost:{self.nginx.port}/"
            self.ca = str(t / "nginx" / "cert.pem")
            (t / "pw").write_text(PASSWORD)

        return Deferred.fromCoroutine(later())

    async def start_host(self) -> Path:
        log = self.tmp / "host.log"
        out = open(self.tmp / "host.out", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(
            subprocess.Popen(
                [
                    *TWISTD,
                    "-n",
                    "--pidfile=",
                    "--logfile",
                    str(log),
                    "litedesk-host",
                    "--config-dir",
                    str(self.tmp / "host"),
                    "--websocket",
                    "--rendezvous",
                    self.url,
                    "--ws-ca",
                    self.ca,
                    "--key",
                    self.key,
                    "--id",
                    E2E_ID,
                    "--password-file",
                    str(self.tmp / "pw"),
                    "--display",
                    str(self.xvfb.display),
                ],
                env=self.xvfb.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        )
        out.close()

        def registered() -> bool:
            return log.exists() and f"as id {E2E_ID}" in log.read_text()

        try:
            await until(registered, 60, 0.1, "the host to register over WSS")
        except Exception:
            self.fail(f"host did not register: {log.read_text()[-3000:] if log.exists() else ''}")
        return log

    async def run_viewer(self, *args: str) -> tuple[bytes, bytes, int]:
        out, err, code = await getProcessOutputAndValue(
            VIEWER[0],
            [
                *VIEWER[1:],
                E2E_ID,
                "--websocket",
                "--rendezvous",
                self.url,
                "--ws-ca",
                self.ca,
                "--key",
                self.key,
                "--password-file",
                str(self.tmp / "pw"),
                "--headless",
                *args,
            ],
            env=dict(os.environ),
            reactor=reactor,
        )
        return out, err, code

    def test_session_through_nginx(self) -> Deferred[None]:
        """The viewer's screenshot is the host's screen and its typing reaches the host's
        session, over wss:// only; the host is a stream host on WebSocket; the relay saw
        the SignedId, then TLS records, and none of the password, typed text or screen."""

        async def run() -> None:
            expected = paint_test_screen(self.tmp / "screen.png", SCREEN_TEXT)
            set_root_image(self.xvfb, str(self.tmp / "screen.png"))
            await self.start_host()
            channels = self.svc.registry.streams.channels()
            peers = [self.svc.registry.streams.peer_of(c) for c in channels]
            self.assertEqual([p.id for p in peers if p is not None], [E2E_ID])
            self.assertTrue(all(getattr(c, "websocket", False) for c in channels))
            shot = self.tmp / "shot.png"
            out, err, code = await self.run_viewer(
                "--screenshot", str(shot), "--type", TYPED, "--stats-json"
            )
            self.assertEqual(code, 0, err.decode(errors="replace"))
            stats = json.loads(out.decode().strip().splitlines()[-1])
            self.assertEqual((stats["path"], stats["protocol"]), ("relay", "litedesk-tls"))
            self.assertLess(mean_error(expected, Image.open(shot)), 6.0)
            await until(lambda: all(r.closed for r in self.proxy.records), 15, 0.05)
            self.check_relay_saw_ciphertext()

        return Deferred.fromCoroutine(run())

    def check_relay_saw_ciphertext(self) -> None:
        legs = [r for r in self.proxy.records if r.up]
        self.assertEqual(len(legs), 2)  # the host's leg and the viewer's, both through nginx
        streams: dict[str, bytes] = {}
        for leg in legs:
            sent = ws_messages(bytes(leg.up))
            first = rz.RendezvousMessage()
            first.ParseFromString(sent[0])
            self.assertTrue(first.HasField("request_relay"))
            chunks = sent[1:]
            kind = "host" if classify_first_message(chunks[0]) == CHUNK else "viewer"
            streams[kind] = b"".join(chunks)
            for secret in (PASSWORD, TYPED, SCREEN_TEXT):
                self.assertNotIn(secret.encode(), bytes(leg.up))
                self.assertNotIn(secret.encode(), bytes(leg.down))
                self.assertNotIn(secret.encode(), b"".join(sent))
        host = streams["host"]
        head = frame_header(host)
        assert head is not None
        signed_id_end = head[0] + head[1]
        host_types = tls_record_types(host[signed_id_end:])
        viewer_types = tls_record_types(streams["viewer"])
        # TLS 1.3: the hellos (and the compatibility ChangeCipherSpec) in clear,
        # every other record application data, the video among them.
        self.assertEqual(host_types[0], 0x16)
        self.assertEqual(viewer_types[0], 0x16)
        for types in (host_types[1:], viewer_types[1:]):
            self.assertTrue(set(types) <= {0x14, 0x17}, types)
        self.assertGreater(len(host), 20_000)


# -- TLS and hostile peers over real sockets -------------------------------------------------


class WssVerificationTests(TestCase):
    """wss:// is verified against the system's CAs or --ws-ca, never skipped."""

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        d = Path(self.mktemp())
        d.mkdir(parents=True)
        self.cert, key, _ = self_signed(d)
        ssl = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={self.cert}"
        self.svc = start_server(d / "data", "--ws-endpoint", ssl)
        self.addCleanup(self.svc.stopService)
        return pause(0.05)

    def links(self, ca: Path | None) -> ServerLinks:
        port = self.svc.rendezvous_ws.listening.getHost().port
        ws = WebSocketServer.from_option(f"wss://localhost:{port}/")
        return ServerLinks(("localhost", 21116), ws=ws, ws_ca=str(ca) if ca else None)

    def test_self_signed_needs_its_certificate(self) -> Deferred[None]:
        async def run() -> None:
            with self.assertRaises(LinkError) as e:
                await self.links(None).open_rendezvous(reactor)
            self.assertIn("certificate verify failed", str(e.exception))
            link = await self.links(self.cert).open_rendezvous(reactor)
            link.send(rz.RendezvousMessage(test_nat_request=rz.TestNatRequest()))
            answer = await link.next_message(reactor, 5)
            self.assertTrue(answer.HasField("test_nat_response"))
            link.close()
            await link.closed

        return Deferred.fromCoroutine(run())


class _HostileServer(WebSocketServerProtocol):
    """A rendezvous server that answers each connection with C{factory.send}."""

    def onOpen(self) -> None:
        factory: Any = self.factory
        factory.opened += 1
        for message in factory.send:
            self.sendMessage(message, isBinary=True)


class _Pushes:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.pushes: list[Any] = []

    def punch_hole(self, msg: Any) -> None:
        self.pushes.append(msg)

    def fetch_local_addr(self, msg: Any) -> None:
        self.pushes.append(msg)

    def request_relay(self, msg: Any) -> None:
        self.pushes.append(msg)

    def registration_event(self, event: Any) -> None:
        self.events.append(event)


class HostileServerTests(TestCase):
    """What a server (or anyone on a ws:// path) can make a host in WebSocket mode do."""

    def start(self, *send: bytes) -> tuple[StreamRendezvousClient, Any, _Pushes]:
        factory: Any = WebSocketServerFactory()
        factory.protocol = _HostileServer
        factory.send = list(send)
        factory.opened = 0
        factory.setProtocolOptions(autoPingInterval=0)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        ws = WebSocketServer.from_option(f"ws://127.0.0.1:{port.getHost().port}/")
        links = ServerLinks(("127.0.0.1", 21116), ws=ws)
        handler = _Pushes()
        reg = StreamRegistration(HOST_ID, b"u" * 16, b"k" * 32)
        client = StreamRendezvousClient(
            reg, lambda proto: links.open_stream(reactor, proto), handler, reactor, "hostile"
        )
        client.startService()
        self.addCleanup(client.stopService)
        return client, factory, handler

    def test_oversize_message_drops_the_stream(self) -> Deferred[None]:
        """A message over 64 KiB closes the stream (autobahn refuses it before it is
        held whole); the host tries again on a new stream later."""

        async def run() -> None:
            _, factory, handler = self.start(b"x" * (MAX_RENDEZVOUS_MESSAGE + 1))
            await until(lambda: factory.opened >= 2, 10, message="a second stream")
            self.assertEqual(handler.pushes, [])

        return Deferred.fromCoroutine(run())

    def test_garbage_and_push_flood(self) -> Deferred[None]:
        """Unparsable messages are ignored; the same push sent 200 times is handled once;
        OK registers the host."""
        punch = rz.RendezvousMessage(
            punch_hole=rz.PunchHole(socket_addr=b"\x01\x02\x03\x04\x05\x06", relay_server="r")
        ).SerializeToString()
        answer = rz.RendezvousMessage(
            register_pk_response=rz.RegisterPkResponse(
                result=rz.RegisterPkResponse.OK, keep_alive=30
            )
        ).SerializeToString()

        async def run() -> None:
            client, _, handler = self.start(b"\xff\xfe garbage", answer, *[punch] * 200)
            await until(lambda: client.registration.state is RegState.REGISTERED, 10)
            await until(lambda: handler.pushes, 10)
            await pause(0.1)
            self.assertEqual(len(handler.pushes), 1)

        return Deferred.fromCoroutine(run())


# -- the stream client's wiring, the options ---------------------------------------------------


class StreamClientTests(SynchronousTestCase):
    """L{StreamRendezvousClient} on a test clock, over in-memory transports."""

    def test_register_heartbeat_silence_reconnect(self) -> None:
        clock = Clock()
        transports: list[StringTransport] = []

        async def connect(protocol: Any) -> None:
            transport = StringTransport()
            transports.append(transport)
            protocol.makeConnection(transport)

        handler = _Pushes()
        reg = StreamRegistration(HOST_ID, b"u" * 16, b"k" * 32)
        client = StreamRendezvousClient(reg, connect, handler, clock, "test")
        client.startService()
        sent = FrameDecoder().feed(transports[0].value())
        self.assertEqual(parsed_rz(sent[0]).WhichOneof("union"), "register_pk")
        link = client.link
        assert link is not None
        transports[0].clear()
        link.dataReceived(encode_frame(ok().SerializeToString()) + b"\x00")
        self.assertEqual(reg.state, RegState.REGISTERED)
        self.assertEqual(transports[0].value(), b"\x00")  # the keep-alive answered
        clock.pump([1.0] * 45)
        self.assertFalse(transports[0].disconnecting)
        clock.pump([1.0] * 2)
        self.assertTrue(transports[0].disconnecting)  # 45 s without a frame
        link.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(client.link)
        clock.advance(0.9)
        self.assertEqual(len(transports), 1)
        clock.advance(0.1)  # it lived registered for 30 s: the shortest delay, 1 s
        self.assertEqual(len(transports), 2)
        self.assertEqual([e.kind for e in handler.events], ["registered", "stream_lost"])
        client.stopService()
        self.assertTrue(transports[1].disconnecting)

    def test_unreachable_server_retried(self) -> None:
        clock = Clock()
        attempts: list[float] = []

        async def connect(protocol: Any) -> None:
            attempts.append(clock.seconds())
            raise LinkError("cannot reach rendezvous server wss://x/ws/id: refused")

        handler = _Pushes()
        reg = StreamRegistration(HOST_ID, b"u" * 16, b"k" * 32)
        client = StreamRendezvousClient(reg, connect, handler, clock, "test")
        client.startService()
        clock.pump([1.0] * 40)
        self.assertEqual(attempts, [0.0, 2.0, 6.0, 14.0, 29.0])
        self.assertEqual([e.kind for e in handler.events], ["unreachable"])
        client.stopService()
        clock.pump([1.0] * 40)
        self.assertEqual(len(attempts), 5)


def parsed_rz(data: bytes) -> rz.RendezvousMessage:
    msg = rz.RendezvousMessage()
    msg.ParseFromString(data)
    return msg


class OptionTests(SynchronousTestCase):
    def host(self, *argv: str) -> HostOptions:
        opts = HostOptions()
        opts.parseOptions(["--config-dir", self.mktemp(), "--key", KEY, *argv])
        return opts

    def test_host_options(self) -> None:
        """A URL implies --websocket; HOST[:PORT] maps with it; --ws-ca must hold a
        certificate; --upnp and a missing server are refused."""
        url = self.host("--rendezvous", "wss://desk.example.net/")
        assert url.ws_server is not None
        self.assertTrue(url["websocket"])
        self.assertEqual(str(url.ws_server.rendezvous), "wss://desk.example.net/ws/id")
        self.assertEqual(url.server, ("desk.example.net", 21116))
        ip = self.host("--websocket", "--rendezvous", "10.1.2.3:30000")
        assert ip.ws_server is not None
        self.assertEqual(str(ip.ws_server.rendezvous), "ws://10.1.2.3:30002/")
        self.assertIsNone(self.host("--rendezvous", "10.1.2.3").ws_server)
        d = Path(self.mktemp())
        d.mkdir()
        cert, _, _ = self_signed(d)
        ok_ca = self.host("--websocket", "--rendezvous", "x.example", "--ws-ca", str(cert))
        self.assertEqual(ok_ca["ws-ca"], str(cert))
        for argv, why in (
            (["--websocket", "--rendezvous", "x.example", "--ws-ca", str(d / "no")], "--ws-ca"),
            (["--rendezvous", "x.example", "--ws-ca", str(cert)], "only applies"),
            (["--rendezvous", "wss://x.example/", "--upnp"], "--upnp"),
            (["--websocket", "--listen", "tcp:0"], "needs --rendezvous"),
            (["--rendezvous", "wss://x.example/?q"], "bad --rendezvous"),
        ):
            with self.assertRaises(usage.UsageError) as e:
                self.host(*argv)
            self.assertIn(why, str(e.exception))

    def test_viewer_options(self) -> None:
        args = build_parser().parse_args(
            [HOST_ID, "--rendezvous", "wss://desk.example.net:8443/", "--key", KEY]
        )
        links = server_links(args)
        assert links.ws is not None
        self.assertEqual(links.describe(), "wss://desk.example.net:8443/ws/id")
        args = build_parser().parse_args([HOST_ID, "--websocket", "-r", "10.0.0.1", "-k", KEY])
        self.assertEqual(server_links(args).describe(), "ws://10.0.0.1:21118/")
        args = build_parser().parse_args([HOST_ID, "-r", "10.0.0.1", "-k", KEY])
        self.assertFalse(server_links(args).websocket)
        for argv in (
            [HOST_ID, "-r", "10.0.0.1", "--ws-ca", "x.pem"],
            [HOST_ID, "--websocket", "-r", "10.0.0.1", "--ws-ca", "/nonexistent.pem"],
            [HOST_ID, "--websocket", "-r", "ws://"],
        ):
            self.assertRaises(UsageFailure, server_links, build_parser().parse_args(argv))


KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="


@requires("Xvfb")
class HostAgentTests(TestCase):
    def test_websocket_agent_registers_on_a_stream(self) -> Deferred[None]:
        """twistd litedesk-host's assembly with --websocket: a stream host on the
        server's WebSocket port, no UDP socket and no NAT test, and a warning that
        plain ws:// is not encrypted."""
        server = start_server(Path(self.mktemp()), "--no-relay")
        self.addCleanup(server.stopService)
        logged: list[str] = []
        observer = lambda e: logged.append(formatEvent(e))  # noqa: E731
        globalLogPublisher.addObserver(observer)  # type: ignore[arg-type]
        self.addCleanup(globalLogPublisher.removeObserver, observer)  # type: ignore[arg-type]

        async def run() -> None:
            await pause(0.05)
            port = server.rendezvous_ws.listening.getHost().port
            opts = HostOptions()
            opts.parseOptions(
                [
                    "--config-dir",
                    self.mktemp(),
                    "--display",
                    str(shared_xvfb().display),
                    "--view-only",
                    "--rendezvous",
                    f"ws://127.0.0.1:{port}/",
                    "--key",
                    server.key.public_key,
                ]
            )
            agent = build_host_agent(opts, reactor)
            agent.startService()
            self.addCleanup(agent.stopService)
            self.assertIsNone(agent.rendezvous_udp)
            self.assertIsNone(agent.nat_test)
            assert agent.rendezvous_stream is not None and agent.paths is not None
            self.assertTrue(agent.paths.links.websocket)
            peer_id = agent.identity.peer_id
            streams = server.registry.streams

            def registered() -> bool:
                return any(
                    (p := streams.peer_of(c)) is not None and p.id == peer_id
                    for c in streams.channels()
                )

            await until(registered, 10, message="the stream host")
            self.assertTrue(any("is plain ws://" in line for line in logged))

        return Deferred.fromCoroutine(run())
