"""Tests for litedesk.session.tls: host-as-TLS-server, key pinning, known hosts.

Most tests run real TLS 1.3 over real loopback TCP connections (trial's
reactor), because what matters is what OpenSSL actually negotiates and what
an observer of the stream can see.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.signing import SigningKey
from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IListeningPort
from twisted.internet.protocol import ClientFactory, Factory, Protocol, ServerFactory
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from litedesk.proto import message_pb2 as m
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.framing import MessageProtocol, kind
from litedesk.session.host_certificate import host_certificate, host_context_factory
from litedesk.session.host_key import HostKeyMismatch, UnverifiedHostKey, host_key_from_signed_id_pk
from litedesk.session.known_hosts import KnownHosts
from litedesk.session.login import LoginVerifier
from litedesk.session.password import StoredPassword, login_password
from litedesk.session.pinning import viewer_context_factory
from litedesk.session.switching import SwitchingProtocol
from litedesk.session.tls import (
    peer_host_key,
    tls_client_factory,
    tls_server_factory,
    tls_version,
    wrap_client,
    wrap_server,
)
from litedesk.wire.bytescodec import encode_frame
from litedesk.wire.keys import sign_id_pk

HOST_ID = "123456789"
HOST_MARKER = b"HOST-PLAINTEXT-MARKER-5f1e"
VIEWER_MARKER = b"VIEWER-PLAINTEXT-MARKER-9c3a"


@implementer(IHandshakeListener)
class Recorder(Protocol):
    """An application protocol that says something and records what it sees.

    It writes C{greeting} as soon as it is connected (before the TLS
    handshake, so the TLS layer must hold it back) and C{after} once the
    handshake is done.
    """

    transport: Any

    def __init__(self, greeting: bytes = b"", after: bytes = b"") -> None:
        self.greeting = greeting
        self.after = after
        self.received = b""
        self.handshake_done = False
        self.reason: Failure | None = None
        self.lost: Deferred[None] = Deferred()
        self.shook: Deferred[None] = Deferred()
        self._waiting: list[tuple[int, Deferred[bytes]]] = []

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        if self.after:
            self.transport.write(self.after)
        self.shook.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        still = []
        for size, d in self._waiting:
            if len(self.received) >= size:
                d.callback(self.received)
            else:
                still.append((size, d))
        self._waiting = still

    def wait_for(self, size: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self._waiting.append((size, d))
        self.dataReceived(b"")
        return d

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason
        for _, d in self._waiting:
            d.errback(reason)
        self._waiting = []
        self.lost.callback(None)


class OneShot(ServerFactory, ClientFactory):
    """Hands out one prepared protocol (and records connection failures)."""

    def __init__(self, protocol: Protocol) -> None:
        self.prepared = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self.prepared


def _observe(case: SynchronousTestCase) -> EventLoggingObserver:
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


def _key() -> SigningKey:
    return SigningKey.generate()


class _Loopback(TestCase):
    """Real-socket helpers: listen on 127.0.0.1:0 and tidy up afterwards."""

    def listen(self, factory: Any) -> int:
        port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[no-any-return, attr-defined]

    def connect(self, port: int, factory: Any) -> None:
        connector = reactor.connectTCP("127.0.0.1", port, factory)
        self.addCleanup(connector.disconnect)

    @defer.inlineCallbacks
    def both_lost(self, *protocols: Recorder):
        """Wait until every protocol saw connectionLost (no dirty reactor)."""
        yield defer.gatherResults([p.lost for p in protocols])
        # Let the reactor finish closing sockets before trial checks it.
        yield deferLater(reactor, 0, lambda: None)


class HostIsServerTests(_Loopback):
    @defer.inlineCallbacks
    def _exchange(self, host_listens: bool):
        key = _key()
        pk = bytes(key.verify_key)
        host = Recorder(greeting=HOST_MARKER)
        viewer = Recorder(greeting=VIEWER_MARKER)
        host_factory = tls_server_factory(OneShot(host), host_context_factory(key, HOST_ID))
        viewer_factory = tls_client_factory(OneShot(viewer), viewer_context_factory(pk))
        if host_listens:
            self.connect(self.listen(host_factory), viewer_factory)
        else:
            self.connect(self.listen(viewer_factory), host_factory)
        got_by_viewer = yield viewer.wait_for(len(HOST_MARKER))
        got_by_host = yield host.wait_for(len(VIEWER_MARKER))
        self.assertEqual(got_by_viewer, HOST_MARKER)
        self.assertEqual(got_by_host, VIEWER_MARKER)
        self.assertTrue(host.handshake_done and viewer.handshake_done)
        self.assertEqual(tls_version(viewer.transport), "TLSv1.3")
        self.assertEqual(tls_version(host.transport), "TLSv1.3")
        # The viewer saw the host's identity key; the host asked for no
        # client certificate.
        self.assertEqual(peer_host_key(viewer.transport), pk)
        self.assertIsNone(peer_host_key(host.transport))
        viewer.transport.loseConnection()
        yield self.both_lost(host, viewer)

    def test_viewer_dials_host(self):
        """
        A viewer connecting to a listening host gets a TLS 1.3 session whose
        certificate carries the host's Ed25519 identity key, and data written
        by either side before the handshake arrives intact after it.
        """
        return self._exchange(host_listens=True)

    def test_host_dials_viewer(self):
        """
        When the host opens the TCP connection itself (relay leg, hole
        punch), it is still the TLS server and the viewer still pins its key.
        """
        return self._exchange(host_listens=False)

    @defer.inlineCallbacks
    def test_wrong_key(self):
        """
        A host whose certificate carries another key than the pinned one is
        refused during the handshake: the viewer's protocol is told "host key
        mismatch" (as a HostKeyMismatch), neither side's application receives
        a single byte although both wrote before the handshake, and the
        refusal is logged.
        """
        events = _observe(self)
        impostor = _key()
        expected = bytes(_key().verify_key)
        host = Recorder(greeting=HOST_MARKER, after=HOST_MARKER)
        viewer = Recorder(greeting=VIEWER_MARKER, after=VIEWER_MARKER)
        port = self.listen(
            tls_server_factory(OneShot(host), host_context_factory(impostor, HOST_ID))
        )
        self.connect(port, tls_client_factory(OneShot(viewer), viewer_context_factory(expected)))
        yield self.both_lost(host, viewer)
        assert viewer.reason is not None
        viewer.reason.trap(HostKeyMismatch)
        error = viewer.reason.value
        assert isinstance(error, HostKeyMismatch)
        self.assertIn("host key mismatch", str(error))
        self.assertEqual(error.expected, expected)
        self.assertEqual(error.presented, bytes(impostor.verify_key))
        self.assertEqual((host.received, viewer.received), (b"", b""))
        self.assertFalse(viewer.handshake_done)
        self.assertFalse(host.handshake_done)
        self.assertTrue(
            any("host key mismatch" in e.get("error", "") for e in events),
            "the refusal was not logged",
        )

    @defer.inlineCallbacks
    def test_not_ed25519(self):
        """
        A TLS server with an ordinary (ECDSA) certificate is refused as a
        host key mismatch too, with no key to show.
        """
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        ec_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ec_key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(ec_key, hashes.SHA256())
        )
        options = CertificateOptions(
            privateKey=ec_key,  # type: ignore[arg-type]
            certificate=cert,  # type: ignore[arg-type]
            raiseMinimumTo=TLSVersion.TLSv1_3,
        )
        host = Recorder(greeting=HOST_MARKER)
        viewer = Recorder(greeting=VIEWER_MARKER)
        port = self.listen(tls_server_factory(OneShot(host), options))
        expected = bytes(_key().verify_key)
        self.connect(port, tls_client_factory(OneShot(viewer), viewer_context_factory(expected)))
        yield self.both_lost(host, viewer)
        assert viewer.reason is not None
        viewer.reason.trap(HostKeyMismatch)
        assert isinstance(viewer.reason.value, HostKeyMismatch)
        self.assertIsNone(viewer.reason.value.presented)
        self.assertEqual((host.received, viewer.received), (b"", b""))

    @defer.inlineCallbacks
    def test_tls12_client_refused(self):
        """
        A client that offers at most TLS 1.2 cannot talk to a host: the
        handshake fails with an OpenSSL error on both ends and no data moves.
        """
        host = Recorder(greeting=HOST_MARKER)
        old = Recorder(greeting=VIEWER_MARKER)
        port = self.listen(tls_server_factory(OneShot(host), host_context_factory(_key(), "1")))
        client_options = CertificateOptions(lowerMaximumSecurityTo=TLSVersion.TLSv1_2)
        self.connect(port, tls_client_factory(OneShot(old), client_options))
        yield self.both_lost(host, old)
        assert old.reason is not None and host.reason is not None
        old.reason.trap(SSL.Error)
        host.reason.trap(SSL.Error)
        self.assertIn("unsupported protocol", str(host.reason.value).lower())
        self.assertFalse(old.handshake_done or host.handshake_done)
        self.assertEqual((host.received, old.received), (b"", b""))


class OldHostTests(_Loopback):
    @defer.inlineCallbacks
    def test_tls12_host_refused(self):
        """
        The viewer insists on TLS 1.3 too: a server that offers at most TLS
        1.2, even with the right key, gets no session and no data.
        """
        key = _key()
        cert = host_certificate(key, HOST_ID)
        options = CertificateOptions(
            privateKey=cert.private_key,  # type: ignore[arg-type]
            certificate=cert.certificate,  # type: ignore[arg-type]
            lowerMaximumSecurityTo=TLSVersion.TLSv1_2,
        )
        host = Recorder(greeting=HOST_MARKER)
        viewer = Recorder(greeting=VIEWER_MARKER)
        port = self.listen(tls_server_factory(OneShot(host), options))
        creator = viewer_context_factory(bytes(key.verify_key))
        self.connect(port, tls_client_factory(OneShot(viewer), creator))
        yield self.both_lost(host, viewer)
        assert viewer.reason is not None
        viewer.reason.trap(SSL.Error)
        self.assertFalse(viewer.handshake_done or host.handshake_done)
        self.assertEqual((host.received, viewer.received), (b"", b""))


class Relay(Protocol):
    """One leg of a dumb hbbr-like relay that records every byte it forwards.

    The first BytesCodec frame must be C{RendezvousMessage{request_relay}};
    legs with equal uuids are paired and then bytes are copied both ways.
    """

    transport: Any

    def __init__(self, hub: RelayHub) -> None:
        self.hub = hub
        self.head = b""
        self.partner: Relay | None = None
        self.asked = False
        self.pending = b""

    def dataReceived(self, data: bytes) -> None:
        self.hub.captured.append(data)
        if self.partner is not None:
            self.partner.transport.write(data)
        elif self.asked:
            self.pending += data
        else:
            # Only the first frame is a frame; what follows is the session.
            self.head += data
            header_len = (self.head[0] & 3) + 1
            if len(self.head) < header_len:
                return
            end = header_len + (int.from_bytes(self.head[:header_len], "little") >> 2)
            if len(self.head) < end:
                return
            msg = rz.RendezvousMessage()
            msg.ParseFromString(self.head[header_len:end])
            self.asked = True
            self.pending = self.head[end:]
            self.hub.arrive(msg.request_relay.uuid, self)

    def pair(self, other: Relay) -> None:
        self.partner = other
        if self.pending:
            other.transport.write(self.pending)
            self.pending = b""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.partner is not None:
            self.partner.transport.loseConnection()


class RelayHub(Factory):
    def __init__(self) -> None:
        self.captured: list[bytes] = []
        self.waiting: dict[str, Relay] = {}

    def buildProtocol(self, addr: object) -> Relay:
        return Relay(self)

    def arrive(self, uuid: str, leg: Relay) -> None:
        other = self.waiting.pop(uuid, None)
        if other is None:
            self.waiting[uuid] = leg
        else:
            leg.pair(other)
            other.pair(leg)


class RelayLeg(SwitchingProtocol):
    """What a host or viewer does on a relay connection: ask, then TLS."""

    transport: Any

    def __init__(self, uuid: str, then: Callable[[], Protocol]) -> None:
        self.uuid = uuid
        self.then = then

    def connectionMade(self) -> None:
        ask = rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid=self.uuid))
        self.transport.write(encode_frame(ask.SerializeToString()))
        # hbbr pairs and then pipes bytes without an answer, so TLS starts
        # right away; the relay holds our bytes until the partner arrives.
        self.switch_protocol(self.then())


class RelayTests(_Loopback):
    @defer.inlineCallbacks
    def test_relay_sees_only_ciphertext(self):
        """
        Through a relay that pairs two legs and copies bytes, host and viewer
        (each having dialled the relay, the host as TLS server) exchange
        markers in both directions, and none of the markers, nor the host's
        key, appears in the bytes the relay saw; the plaintext RequestRelay
        preamble does (which proves the capture works).
        """
        key = _key()
        pk = bytes(key.verify_key)
        hub = RelayHub()
        port = self.listen(hub)
        uuid = "0f5c3a1e-1111-4222-8333-444455556666"
        big = HOST_MARKER * 4000  # more than one TLS record
        host = Recorder(greeting=HOST_MARKER, after=big)
        viewer = Recorder(greeting=VIEWER_MARKER, after=VIEWER_MARKER)
        host_leg = RelayLeg(uuid, lambda: wrap_server(host, host_context_factory(key, HOST_ID)))
        viewer_leg = RelayLeg(uuid, lambda: wrap_client(viewer, viewer_context_factory(pk)))
        self.connect(port, OneShot(host_leg))
        self.connect(port, OneShot(viewer_leg))
        got = yield viewer.wait_for(len(HOST_MARKER) + len(big))
        self.assertEqual(got, HOST_MARKER + big)
        got = yield host.wait_for(2 * len(VIEWER_MARKER))
        self.assertEqual(got, 2 * VIEWER_MARKER)
        self.assertEqual(tls_version(viewer.transport), "TLSv1.3")
        self.assertEqual(peer_host_key(viewer.transport), pk)
        viewer.transport.loseConnection()
        yield self.both_lost(host, viewer)
        wire = b"".join(hub.captured)
        self.assertIn(uuid.encode(), wire)
        for secret in (HOST_MARKER, VIEWER_MARKER, pk, HOST_ID.encode()):
            self.assertNotIn(secret, wire)
        self.assertGreater(len(wire), len(big))


class KnownHostsSessionTests(_Loopback):
    def _session_or_lost(self, key: SigningKey, known: KnownHosts, label: str) -> Deferred[Any]:
        host = Recorder(after=HOST_MARKER)
        viewer = Recorder()
        port = self.listen(tls_server_factory(OneShot(host), host_context_factory(key, HOST_ID)))
        self.connect(port, tls_client_factory(OneShot(viewer), known.context_factory(label)))

        def settled(_: object) -> Deferred[Any]:
            if viewer.handshake_done:
                viewer.transport.loseConnection()
            return self.both_lost(host, viewer)

        first: Deferred[Any] = defer.DeferredList(
            [viewer.wait_for(len(HOST_MARKER)), viewer.lost],
            fireOnOneCallback=True,
            consumeErrors=True,
        )
        return first.addCallback(settled).addCallback(lambda _: viewer)

    @defer.inlineCallbacks
    def test_trust_on_first_use_then_mismatch(self):
        """
        The first direct session to an address records the host's key in a
        0600 known-hosts file; the next session to the same host is accepted
        without changing the file; a different key at that address is refused
        with "host key mismatch" and the path and line to remove, and the file
        keeps the original key.
        """
        path = Path(self.mktemp()) / "viewer" / "known_hosts"
        known = KnownHosts(path)
        key = _key()
        label = "192.0.2.10:21118"

        first = yield self._session_or_lost(key, known, label)
        self.assertTrue(first.handshake_done)
        self.assertEqual(first.received, HOST_MARKER)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(path.parent.stat().st_mode), 0o700)
        self.assertEqual(known.lookup(label), (bytes(key.verify_key), 1))
        content = path.read_bytes()

        second = yield self._session_or_lost(key, known, label)
        self.assertTrue(second.handshake_done)
        self.assertEqual(path.read_bytes(), content)

        impostor = yield self._session_or_lost(_key(), known, label)
        self.assertFalse(impostor.handshake_done)
        self.assertEqual(impostor.received, b"")
        impostor.reason.trap(HostKeyMismatch)
        message = str(impostor.reason.value)
        self.assertIn("host key mismatch", message)
        self.assertIn(f"remove line 1 from {path}", message)
        self.assertEqual(path.read_bytes(), content)


class KnownHostsFileTests(SynchronousTestCase):
    def test_format_and_lookup(self) -> None:
        """
        Entries are "ADDRESS ed25519 BASE64" lines; lookups ignore case,
        comments, blank lines and malformed lines (reporting line numbers of
        the real file), and an entry appended to a file without a final
        newline starts on its own line.
        """
        path = Path(self.mktemp())
        k1, k2 = os.urandom(32), os.urandom(32)
        path.write_text(
            "# my hosts\n\n"
            "garbage line\n"
            f"other:1 ed25519 {base64.b64encode(k2).decode()}\n"
            "host.example:21118 ed25519 not-base64\n"
            f"Host.Example:21118 ed25519 {base64.b64encode(k1).decode()}  # office"
        )
        known = KnownHosts(path)
        self.assertEqual(known.lookup("host.example:21118"), (k1, 6))
        self.assertEqual(known.lookup("other:1"), (k2, 4))
        self.assertIsNone(known.lookup("nobody:1"))
        known.add("new:2", k2)
        self.assertEqual(known.lookup("new:2"), (k2, 7))
        self.assertEqual(
            path.read_text().splitlines()[-1], f"new:2 ed25519 {base64.b64encode(k2).decode()}"
        )

    def test_missing_file(self) -> None:
        """An absent known-hosts file simply knows no host."""
        self.assertIsNone(KnownHosts(Path(self.mktemp()) / "none").lookup("a:1"))

    def test_bad_addresses(self) -> None:
        """Addresses that would corrupt the file format are rejected."""
        known = KnownHosts(Path(self.mktemp()))
        for address in ("", "a b:1", "a#1", "\t"):
            with self.subTest(address=address):
                self.assertRaises(ValueError, known.add, address, os.urandom(32))
        self.assertRaises(ValueError, known.add, "a:1", b"short")

    def test_first_use_race(self) -> None:
        """
        If another session recorded a different key for the address while
        this one was handshaking, trust on first use refuses with "host key
        mismatch" instead of accepting a second key.
        """
        path = Path(self.mktemp())
        known = KnownHosts(path)
        creator = known.context_factory("a:1")
        known.add("a:1", os.urandom(32))
        assert creator.on_first_use is not None
        error = self.assertRaises(HostKeyMismatch, creator.on_first_use, os.urandom(32))
        self.assertIn("remove line 1", str(error))


class CertificateTests(SynchronousTestCase):
    def test_certificate_key_is_identity_key(self) -> None:
        """
        The host certificate's public key is exactly the host's Ed25519
        identity key (the one the rendezvous server signs), its signature
        verifies with that key, and its name is the host id.
        """
        key = _key()
        cert = host_certificate(key, HOST_ID)
        public = cert.certificate.public_key()
        assert isinstance(public, Ed25519PublicKey)
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.assertEqual(raw, bytes(key.verify_key))
        self.assertEqual(cert.public_key, bytes(key.verify_key))
        public.verify(cert.certificate.signature, cert.certificate.tbs_certificate_bytes)
        self.assertIn(HOST_ID, cert.certificate.subject.rfc4514_string())
        self.assertIn(b"BEGIN CERTIFICATE", cert.certificate_pem())
        self.assertIn(b"BEGIN PRIVATE KEY", cert.private_key_pem())
        self.assertEqual(cert.openssl_certificate().to_cryptography(), cert.certificate)
        self.assertEqual(cert.openssl_private_key().bits(), 256)

    def test_viewer_needs_a_key(self) -> None:
        """
        A viewer creator without a pinned key or a trust-on-first-use hook,
        or with a key that is not 32 bytes, cannot be built.
        """
        self.assertRaises(ValueError, viewer_context_factory, None)
        self.assertRaises(ValueError, viewer_context_factory, b"x" * 31)


class SignedIdPkTests(SynchronousTestCase):
    SERVER_SEED = bytes(range(32))
    HOST_PK = base64.b64decode("6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=")

    def test_vector(self) -> None:
        """
        The signed IdPk of docs/protocol.rst §9 item 17 yields the host key to pin when checked with
        the configured server key and the id the viewer asked for.
        """
        server = SigningKey(self.SERVER_SEED)
        signed = sign_id_pk(server, HOST_ID, self.HOST_PK)
        self.assertEqual(signed[:4].hex(), "8f6f294e")
        pk = host_key_from_signed_id_pk(bytes(server.verify_key), signed, HOST_ID)
        self.assertEqual(pk, self.HOST_PK)

    def test_refusals(self) -> None:
        """
        Another server's signature, an IdPk for another id, a tampered
        message or a key of the wrong size are all "key mismatch" errors.
        """
        server = SigningKey(self.SERVER_SEED)
        signed = sign_id_pk(server, HOST_ID, self.HOST_PK)
        cases = [
            (bytes(_key().verify_key), signed, HOST_ID),
            (bytes(server.verify_key), signed, "987654321"),
            (bytes(server.verify_key), signed[:-1] + bytes([signed[-1] ^ 1]), HOST_ID),
            (bytes(server.verify_key), sign_id_pk(server, HOST_ID, b"x" * 31), HOST_ID),
            (bytes(server.verify_key), b"", HOST_ID),
        ]
        for args in cases:
            with self.subTest(args=args):
                error = self.assertRaises(UnverifiedHostKey, host_key_from_signed_id_pk, *args)
                self.assertTrue(str(error).startswith("key mismatch"))


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.made = False
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason


class Preamble(SwitchingProtocol):
    def __init__(self) -> None:
        self.before = b""
        self.lost_early: Failure | None = None

    def preamble_received(self, data: bytes) -> None:
        self.before += data

    def preamble_lost(self, reason: Failure) -> None:
        self.lost_early = reason


class SwitchingProtocolTests(SynchronousTestCase):
    def test_handover(self) -> None:
        """
        Bytes before the switch go to the preamble handler; the next protocol
        gets the same transport, the leftover bytes first, then every later
        byte and the connection loss.
        """
        first = Preamble()
        transport = StringTransport()
        first.makeConnection(transport)
        first.dataReceived(b"hello")
        nxt = Collect()
        first.switch_protocol(nxt, b"left")
        first.dataReceived(b"over")
        first.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(first.before, b"hello")
        self.assertTrue(nxt.made)
        self.assertIs(nxt.transport, transport)
        self.assertIs(first.switched_to, nxt)
        self.assertEqual(nxt.data, b"leftover")
        assert nxt.reason is not None
        nxt.reason.trap(ConnectionError)
        self.assertIsNone(first.lost_early)
        self.assertRaises(RuntimeError, first.switch_protocol, Collect())

    def test_lost_before_switch(self) -> None:
        """A connection lost during the preamble is reported to the preamble handler."""
        first = Preamble()
        first.makeConnection(StringTransport())
        first.connectionLost(Failure(ConnectionError("gone")))
        self.assertIsNotNone(first.lost_early)


@implementer(IHandshakeListener)
class LoginHost(MessageProtocol):
    """A minimal host session: challenge after the handshake, then verify."""

    def __init__(self, verifier: LoginVerifier) -> None:
        self.verifier = verifier
        self.challenge = verifier.new_challenge()
        self.results: list[str] = []
        self.lost: Deferred[None] = Deferred()

    def handshakeCompleted(self) -> None:
        self.send_message(self.challenge.to_message())

    def message_received(self, msg: m.Message) -> None:
        if kind(msg) != "login_request":
            return
        assert self.transport is not None
        source = self.transport.getPeer().host  # type: ignore[attr-defined]
        result = self.verifier.verify(source, self.challenge.challenge, msg.login_request.password)
        self.results.append(result.error or "ok")
        if result.ok:
            info = m.PeerInfo(hostname="host", displays=[m.DisplayInfo(width=1920, height=1080)])
            self.send_message(m.Message(login_response=m.LoginResponse(peer_info=info)))
        else:
            self.send_message(m.Message(login_response=m.LoginResponse(error=result.error)))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        self.lost.callback(None)


class LoginViewer(MessageProtocol):
    """A minimal viewer session: answer the challenge with a password."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.response: Deferred[m.LoginResponse] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def message_received(self, msg: m.Message) -> None:
        if kind(msg) == "hash":
            answer = login_password(self.password, msg.hash.salt, msg.hash.challenge)
            request = m.LoginRequest(username=HOST_ID, password=answer, my_id="viewer")
            self.send_message(m.Message(login_request=request))
        elif kind(msg) == "login_response":
            self.response.callback(msg.login_response)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        self.lost.callback(None)


class SessionTests(_Loopback):
    @defer.inlineCallbacks
    def _login(self, password: str, verifier: LoginVerifier, hub: RelayHub):
        key = _key()
        port = self.listen(hub)
        uuid = os.urandom(8).hex()
        host = LoginHost(verifier)
        viewer = LoginViewer(password)
        host_leg = RelayLeg(uuid, lambda: wrap_server(host, host_context_factory(key, HOST_ID)))
        pinned = viewer_context_factory(bytes(key.verify_key))
        viewer_leg = RelayLeg(uuid, lambda: wrap_client(viewer, pinned))
        self.connect(port, OneShot(host_leg))
        self.connect(port, OneShot(viewer_leg))
        response = yield viewer.response
        assert viewer.transport is not None
        viewer.transport.loseConnection()
        yield defer.gatherResults([host.lost, viewer.lost])
        yield deferLater(reactor, 0, lambda: None)
        return response, host

    @defer.inlineCallbacks
    def test_login_through_relay(self):
        """
        The pieces together: over a relay, the host (TLS server, pinned by
        the viewer) sends Hash, the viewer answers with the salted challenge
        hash, and the host's verifier accepts the right password and answers
        PeerInfo, refuses a wrong one with "Wrong Password"; the relay sees
        neither password nor hash.
        """
        clock = Clock()
        verifier = LoginVerifier(clock, StoredPassword.create("s3cret-pass"))
        hub = RelayHub()
        response, host = yield self._login("s3cret-pass", verifier, hub)
        self.assertEqual(response.WhichOneof("union"), "peer_info")
        self.assertEqual(response.peer_info.displays[0].width, 1920)
        self.assertEqual(host.results, ["ok"])
        response, host = yield self._login("wrong-pass", verifier, hub)
        self.assertEqual(response.error, "Wrong Password")
        self.assertEqual(host.results, ["Wrong Password"])
        wire = b"".join(hub.captured)
        self.assertNotIn(b"s3cret-pass", wire)
        self.assertNotIn(verifier.salt.encode(), wire)
        self.assertNotIn(host.challenge.challenge.encode(), wire)
