# -*- test-case-name: tests.test_session_tls -*-
"""TLS 1.3 for host/viewer sessions, pinned to the host's Ed25519 identity key.

Roles
=====
The B{host is always the TLS server}, whatever side opened the TCP
connection: on a relay leg or a hole-punched connection the host dialled out
itself, and on a direct C{--listen} connection the viewer dialled in.  TLS
roles are independent of TCP roles, so both cases use the same factories:

- L{tls_server_factory} / L{tls_client_factory} wrap an application protocol
  factory; use them with C{listen} or C{connect} alike;
- L{wrap_server} / L{wrap_client} wrap one application protocol instance, and
  L{SwitchingProtocol.switch_protocol} hands an already connected stream (for
  example a relay leg after its plaintext C{RequestRelay} frame) to it.

Trust
=====
The host's certificate is self-signed with its Ed25519 identity key (the key
it registers with the rendezvous server).  The viewer accepts exactly one key:

- the C{pk} of the C{IdPk} that the rendezvous server signed
  (L{host_key_from_signed_id_pk} checks that signature), or
- for direct C{host:port} connections without a server, the entry in a
  L{KnownHosts} file, trusting the key on first use.

Certificate chains, names and dates are ignored; only the leaf certificate's
public key counts, and TLS 1.3's CertificateVerify proves the host holds the
matching private key.  A different key fails the handshake before any
application data moves, and the viewer's protocol gets a L{HostKeyMismatch}
in C{connectionLost}.  Nothing in the handshake is readable by a relay: TLS
1.3 encrypts the certificate, and no server name (SNI) is sent.

Application protocols should wait for
L{twisted.internet.interfaces.IHandshakeListener.handshakeCompleted} before
trusting the session; writes made earlier are held by the TLS layer until the
handshake is done and are dropped if it fails.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import NameOID
from nacl.signing import SigningKey
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.protocols.tls import (
    BufferingTLSTransport,
    TLSMemoryBIOFactory,
    TLSMemoryBIOProtocol,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.wire.keys import verify_id_pk

__all__ = [
    "HOST_KEY_LENGTH",
    "HostCertificate",
    "HostKeyMismatch",
    "KnownHosts",
    "PinnedHostCreator",
    "SwitchingProtocol",
    "UnverifiedHostKey",
    "host_certificate",
    "host_context_factory",
    "host_key_from_signed_id_pk",
    "peer_host_key",
    "tls_client_factory",
    "tls_server_factory",
    "tls_version",
    "viewer_context_factory",
    "wrap_client",
    "wrap_server",
]

HOST_KEY_LENGTH = 32

_log = Logger(namespace="litedesk.session.tls")

# RFC 5280 4.1.2.5: 99991231235959Z means "no well-defined expiration date".
# The viewer ignores dates anyway (it pins the key), and a certificate that
# never expires cannot make a session fail because a clock is wrong.
_NO_EXPIRY = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


def _b64(key: bytes | None) -> str:
    return base64.b64encode(key).decode("ascii") if key is not None else "(none)"


class HostKeyMismatch(Exception):
    """The TLS peer did not prove possession of the expected host key.

    Its message always starts with C{"host key mismatch"}, the reason the
    viewer prints.

    @ivar expected: the pinned 32-byte Ed25519 public key.
    @ivar presented: the key in the host's certificate (None if it had no
        usable Ed25519 key).
    """

    def __init__(self, expected: bytes | None, presented: bytes | None, detail: str = "") -> None:
        message = (
            f"host key mismatch: expected {_b64(expected)}, the host presented {_b64(presented)}"
        )
        if detail:
            message += f"; {detail}"
        super().__init__(message)
        self.expected = expected
        self.presented = presented
        self.detail = detail


class UnverifiedHostKey(Exception):
    """The rendezvous server's signed C{IdPk} does not vouch for this host.

    Its message starts with C{"key mismatch"}: the server that answered is not
    the one whose public key the viewer was configured with, or it answered
    for another id.
    """


def host_key_from_signed_id_pk(
    server_public_key: bytes, signed_id_pk: bytes, host_id: str
) -> bytes:
    """Return the host key that the rendezvous server vouches for.

    @param server_public_key: the 32-byte Ed25519 key the viewer was
        configured with (C{--key}).
    @param signed_id_pk: the C{pk} field of C{PunchHoleResponse} or
        C{RelayResponse} (64-byte signature followed by C{IdPk}).
    @param host_id: the id the viewer asked for.
    @raise UnverifiedHostKey: the signature does not verify, the signed id is
        another one, or the signed key is not a 32-byte key.
    """
    verified = verify_id_pk(server_public_key, signed_id_pk)
    if verified is None:
        raise UnverifiedHostKey(
            "key mismatch: the rendezvous server's signature on the host key does not "
            "verify with the configured server key"
        )
    signed_id, pk = verified
    if signed_id != host_id:
        raise UnverifiedHostKey(
            f"key mismatch: the rendezvous server signed a key for id {signed_id!r}, "
            f"not {host_id!r}"
        )
    if len(pk) != HOST_KEY_LENGTH:
        raise UnverifiedHostKey(
            f"key mismatch: the signed host key is {len(pk)} bytes, not {HOST_KEY_LENGTH}"
        )
    return pk


@dataclass(frozen=True)
class HostCertificate:
    """A host's self-signed certificate and the key it certifies."""

    certificate: x509.Certificate
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key (the host's identity key)."""
        return _raw_public(self.private_key.public_key())

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def openssl_certificate(self) -> crypto.X509:
        """For APIs that still want pyOpenSSL's type (C{SSL.Context} takes
        the cryptography object directly and deprecates this one)."""
        return crypto.X509.from_cryptography(self.certificate)

    def openssl_private_key(self) -> crypto.PKey:
        """For APIs that still want pyOpenSSL's type."""
        return crypto.PKey.from_cryptography_key(self.private_key)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def host_certificate(
    signing_key: SigningKey, host_id: str, now: datetime.datetime | None = None
) -> HostCertificate:
    """Self-sign a certificate for the host's Ed25519 identity key.

    @param signing_key: the host's identity key; its 32-byte seed is the
        Ed25519 private key, so the certificate's public key is exactly
        C{signing_key.verify_key}.
    @param host_id: the host's id, used as the certificate's common name (for
        people reading it; the viewer checks only the key).
    @param now: start of validity (an hour earlier, for clock skew); defaults
        to the current time.
    """
    private_key = Ed25519PrivateKey.from_private_bytes(bytes(signing_key))
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    # A common name is at most 64 characters (RFC 5280 ub-common-name).
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (host_id or "litedesk-host")[:64])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(_NO_EXPIRY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    )
    # Ed25519 signs the message itself: the hash algorithm must be None.
    certificate = builder.sign(private_key, None)
    return HostCertificate(certificate, private_key)


def host_context_factory(signing_key: SigningKey, host_id: str) -> CertificateOptions:
    """The host's TLS server options: its self-signed certificate, TLS 1.3 only.

    No client certificate is asked for: the viewer proves itself with the
    login password, inside the encrypted session.
    """
    cert = host_certificate(signing_key, host_id)
    # CertificateOptions only hands these to Context.use_privatekey and
    # use_certificate, which take cryptography objects and deprecate
    # pyOpenSSL's PKey/X509 (Twisted's annotations predate that).
    return CertificateOptions(
        privateKey=cert.private_key,  # type: ignore[arg-type]
        certificate=cert.certificate,  # type: ignore[arg-type]
        raiseMinimumTo=TLSVersion.TLSv1_3,
    )


def _certificate_key(cert: x509.Certificate | None) -> bytes | None:
    """The raw Ed25519 public key of C{cert}, or None for anything else."""
    if cert is None:
        return None
    try:
        key = cert.public_key()
    except Exception:
        return None
    if not isinstance(key, Ed25519PublicKey):
        return None
    return _raw_public(key)


class _PinCheck:
    """Per-connection verification state of a L{PinnedHostCreator}."""

    def __init__(self, creator: PinnedHostCreator) -> None:
        self.creator = creator
        self.failed = False
        self.done = False

    def _fail(
        self,
        connection: SSL.Connection,
        presented: bytes | None,
        error: HostKeyMismatch | None = None,
    ) -> None:
        if self.failed:
            return
        self.failed = True
        if error is None:
            error = HostKeyMismatch(self.creator.expected_host_pk, presented, self.creator.detail)
        _log.warn(
            "Refusing TLS session: {error}",
            error=str(error),
            expected=_b64(error.expected),
            presented=_b64(presented),
        )
        tls_protocol = connection.get_app_data()
        if isinstance(tls_protocol, TLSMemoryBIOProtocol):
            # The documented way to make the application's connectionLost
            # see our reason instead of a generic OpenSSL error.
            tls_protocol.failVerification(Failure(error))  # type: ignore[no-untyped-call]

    def verify(
        self, connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        """OpenSSL's verify callback: the leaf's key decides, nothing else.

        Errors about the chain (a self-signed leaf, an unknown issuer, dates)
        are ignored because there is no chain to trust, only a key.  Any
        certificate above the leaf is irrelevant: the leaf's key is the one
        CertificateVerify is checked against.
        """
        if self.failed:
            return False
        if depth != 0:
            return True
        try:
            presented = _certificate_key(cert.to_cryptography())
        except Exception:
            presented = None
        expected = self.creator.expected_host_pk
        if presented is None or (expected is not None and presented != expected):
            self._fail(connection, presented)
            return False
        return True

    def info(self, connection: SSL.Connection, where: int, ret: int) -> None:
        """Re-check the key once the handshake is done, then do TOFU.

        The check repeats the verify callback's on the certificate OpenSSL
        actually used, so no corner of chain processing can let another key
        through.  TLS 1.3 signals C{HANDSHAKE_DONE} again for post-handshake
        messages (session tickets); only the first one counts.
        """
        if not where & SSL.SSL_CB_HANDSHAKE_DONE or self.done or self.failed:
            return
        self.done = True
        try:
            presented = _certificate_key(connection.get_peer_certificate(as_cryptography=True))
        except Exception:
            presented = None
        expected = self.creator.expected_host_pk
        if presented is None or (expected is not None and presented != expected):
            self._fail(connection, presented)
            return
        if expected is None and self.creator.on_first_use is not None:
            try:
                self.creator.on_first_use(presented)
            except HostKeyMismatch as e:
                # Another session recorded a different key meanwhile.
                self._fail(connection, presented, e)
            except Exception:
                # Saving a known-hosts entry failed; the session itself is
                # fine (the key is proven), so log and go on.
                _log.failure("Could not record the host key {key}", key=_b64(presented))


@implementer(IOpenSSLClientConnectionCreator)
class PinnedHostCreator:
    """Viewer-side TLS 1.3 client connections that accept one host key.

    @ivar expected_host_pk: the only acceptable 32-byte Ed25519 key, or None
        to accept any key and report it to C{on_first_use} (trust on first
        use).
    @ivar on_first_use: called with the host key after a handshake succeeds
        when C{expected_host_pk} is None.
    @ivar detail: appended to L{HostKeyMismatch} messages (for example which
        known-hosts line to remove).

    A wrong key is refused by OpenSSL's verify callback, inside the
    handshake: the application protocol gets no C{handshakeCompleted}, no
    data, and C{connectionLost} with L{HostKeyMismatch}.  Two refusals can
    only happen once OpenSSL has finished the handshake (the repeated key
    check, which should never fire, and a known-hosts entry for the address
    written by a concurrent session during this handshake); then
    C{handshakeCompleted} has already been called, but the connection is
    aborted at once, no data is delivered, and C{connectionLost} gets the
    L{HostKeyMismatch} all the same.
    """

    def __init__(
        self,
        expected_host_pk: bytes | None,
        on_first_use: Callable[[bytes], object] | None = None,
        detail: str = "",
    ) -> None:
        if expected_host_pk is not None and len(expected_host_pk) != HOST_KEY_LENGTH:
            raise ValueError(f"a host key is {HOST_KEY_LENGTH} bytes, not {len(expected_host_pk)}")
        if expected_host_pk is None and on_first_use is None:
            # An unpinned session would let any relay or network attacker in
            # the middle read everything; refuse to build one by accident.
            raise ValueError("need an expected host key or an on_first_use callback")
        self.expected_host_pk = expected_host_pk
        self.on_first_use = on_first_use
        self.detail = detail

    def _context(self, check: _PinCheck) -> SSL.Context:
        # A context per connection keeps the callbacks' state per connection;
        # without certificates to load, building one is cheap.
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.set_verify(SSL.VERIFY_PEER, check.verify)
        ctx.set_info_callback(check.info)
        return ctx

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """Build the OpenSSL connection for one session (no SNI: nothing to name)."""
        return SSL.Connection(self._context(_PinCheck(self)), None)


def viewer_context_factory(
    expected_host_pk: bytes | None,
    on_first_use: Callable[[bytes], object] | None = None,
    *,
    detail: str = "",
) -> PinnedHostCreator:
    """The viewer's TLS client connection creator.

    @param expected_host_pk: the host key from the server-signed C{IdPk}
        (see L{host_key_from_signed_id_pk}) or from known hosts; None only
        together with C{on_first_use}.
    @param on_first_use: for trust on first use: called with the proven host
        key after the handshake when no key was expected.
    @param detail: added to the L{HostKeyMismatch} message.
    @raise ValueError: the key is not 32 bytes, or neither a key nor
        C{on_first_use} was given.
    """
    return PinnedHostCreator(expected_host_pk, on_first_use, detail)


def tls_server_factory(
    wrapped_factory: IProtocolFactory,
    creator: IOpenSSLServerConnectionCreator,
    clock: IReactorTime | None = None,
) -> TLSMemoryBIOFactory:
    """Wrap C{wrapped_factory} so its protocols run as the TLS server.

    Use it to listen or to connect: the host is the TLS server even on
    connections it opens itself.
    """
    return TLSMemoryBIOFactory(creator, False, wrapped_factory, clock)


def tls_client_factory(
    wrapped_factory: IProtocolFactory,
    creator: IOpenSSLClientConnectionCreator,
    clock: IReactorTime | None = None,
) -> TLSMemoryBIOFactory:
    """Wrap C{wrapped_factory} so its protocols run as the TLS client.

    Use it to connect or to listen: the viewer is the TLS client even on
    connections the host opened to it.
    """
    return TLSMemoryBIOFactory(creator, True, wrapped_factory, clock)


def _wrap(
    is_client: bool,
    creator: IOpenSSLClientConnectionCreator | IOpenSSLServerConnectionCreator,
    protocol: IProtocol,
    clock: IReactorTime | None,
) -> TLSMemoryBIOProtocol:
    # What TLSMemoryBIOFactory.buildProtocol does, for a protocol that exists
    # already; the placeholder wrapped factory only names the log prefix.
    factory = TLSMemoryBIOFactory(creator, is_client, _Placeholder(), clock)
    return BufferingTLSTransport(factory, protocol)


class _Placeholder(Factory):
    """Stands in for the wrapped factory of a single wrapped protocol."""


def wrap_server(
    protocol: IProtocol,
    creator: IOpenSSLServerConnectionCreator,
    clock: IReactorTime | None = None,
) -> TLSMemoryBIOProtocol:
    """A TLS server protocol around C{protocol}, not yet connected.

    Connect it to an existing stream with
    L{SwitchingProtocol.switch_protocol} (or C{makeConnection}).

    @param clock: schedules the coalescing of small writes; the global
        reactor by default.
    """
    return _wrap(False, creator, protocol, clock)


def wrap_client(
    protocol: IProtocol,
    creator: IOpenSSLClientConnectionCreator,
    clock: IReactorTime | None = None,
) -> TLSMemoryBIOProtocol:
    """A TLS client protocol around C{protocol}, not yet connected."""
    return _wrap(True, creator, protocol, clock)


class SwitchingProtocol(Protocol):
    """A protocol that speaks a plaintext preamble, then hands its stream on.

    Subclasses handle the preamble in L{preamble_received} (for a relay leg:
    send the framed C{RequestRelay}); then L{switch_protocol} connects another
    protocol (typically from L{wrap_server} or L{wrap_client}) to the same
    transport, and every later byte and the connection loss go to it.
    """

    _next: IProtocol | None = None

    def switch_protocol(self, protocol: IProtocol, leftover: bytes = b"") -> None:
        """Hand the stream to C{protocol}, first feeding it C{leftover}.

        @param leftover: bytes already read past the end of the preamble.
        """
        if self._next is not None:
            raise RuntimeError("the stream was already handed over")
        transport = self.transport
        assert transport is not None, "switch_protocol before connectionMade"
        self._next = protocol
        protocol.makeConnection(transport)
        if leftover:
            protocol.dataReceived(leftover)

    @property
    def switched_to(self) -> IProtocol | None:
        return self._next

    def dataReceived(self, data: bytes) -> None:
        if self._next is not None:
            self._next.dataReceived(data)
        else:
            self.preamble_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._next is not None:
            self._next.connectionLost(reason)
        else:
            self.preamble_lost(reason)

    def preamble_received(self, data: bytes) -> None:
        """Bytes that arrived before L{switch_protocol}; override."""

    def preamble_lost(self, reason: Failure) -> None:
        """The connection was lost before L{switch_protocol}; override."""


def _tls_handle(transport: object) -> SSL.Connection | None:
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return None
    handle = get_handle()
    return handle if isinstance(handle, SSL.Connection) else None


def peer_host_key(transport: ITransport | Any) -> bytes | None:
    """The raw Ed25519 key of the TLS peer's certificate, if any.

    @param transport: the C{transport} of a protocol wrapped by one of the
        factories above.
    """
    handle = _tls_handle(transport)
    if handle is None:
        return None
    return _certificate_key(handle.get_peer_certificate(as_cryptography=True))


def tls_version(transport: ITransport | Any) -> str | None:
    """The negotiated TLS version, e.g. C{"TLSv1.3"}; None before a handshake."""
    handle = _tls_handle(transport)
    if handle is None:
        return None
    name = handle.get_protocol_version_name()
    return name if name and name != "Unknown" else None


class KnownHosts:
    """Trust-on-first-use host keys for direct C{host:port} sessions.

    The file holds one line per host, C{ADDRESS ed25519 BASE64KEY}; C{#}
    starts a comment.  It is created with mode 0600 (in a 0700 directory if
    that has to be created too), because it says which machines this user
    controls.

    @ivar path: the file.
    """

    KEY_TYPE = "ed25519"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @staticmethod
    def normalize(address: str) -> str:
        """Canonical form of an address: stripped, lower case.

        @raise ValueError: empty, or containing whitespace or C{#}.
        """
        address = address.strip().lower()
        if not address or any(c.isspace() for c in address) or "#" in address:
            raise ValueError(f"not a usable known-hosts address: {address!r}")
        return address

    def entries(self, address: str) -> list[tuple[bytes, int]]:
        """Every key recorded for C{address}, with its 1-based line number."""
        address = self.normalize(address)
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        found: list[tuple[bytes, int]] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) != 3 or fields[1] != self.KEY_TYPE:
                _log.warn(
                    "Ignoring malformed line {lineno} of {path}",
                    lineno=lineno,
                    path=str(self.path),
                )
                continue
            if fields[0].lower() != address:
                continue
            try:
                key = base64.b64decode(fields[2], validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != HOST_KEY_LENGTH:
                _log.warn(
                    "Ignoring malformed key on line {lineno} of {path}",
                    lineno=lineno,
                    path=str(self.path),
                )
                continue
            found.append((key, lineno))
        return found

    def lookup(self, address: str) -> tuple[bytes, int] | None:
        """The first key recorded for C{address} and its line, or None."""
        found = self.entries(address)
        return found[0] if found else None

    def add(self, address: str, key: bytes) -> None:
        """Append an entry for C{address} (mode 0600, fsynced)."""
        address = self.normalize(address)
        if len(key) != HOST_KEY_LENGTH:
            raise ValueError(f"a host key is {HOST_KEY_LENGTH} bytes, not {len(key)}")
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{address} {self.KEY_TYPE} {_b64(key)}\n".encode("ascii")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _mismatch_detail(self, address: str, lineno: int) -> str:
        return (
            f"{self.path} line {lineno} holds another key for {address}; if the "
            f"host's key really changed, remove line {lineno} from {self.path}"
        )

    def context_factory(self, address: str) -> PinnedHostCreator:
        """The viewer's TLS creator for a direct session with C{address}.

        A known address pins its recorded key; a changed key fails with
        L{HostKeyMismatch} naming the line to remove.  An unknown address
        accepts the host's key and records it once the handshake has proven
        the host holds it.
        """
        address = self.normalize(address)
        known = self.lookup(address)
        if known is not None:
            key, lineno = known
            return viewer_context_factory(key, detail=self._mismatch_detail(address, lineno))

        def remember(key: bytes) -> None:
            # Another session may have recorded a key meanwhile.
            recorded = self.entries(address)
            if recorded:
                if all(known_key != key for known_key, _ in recorded):
                    raise HostKeyMismatch(
                        recorded[0][0], key, self._mismatch_detail(address, recorded[0][1])
                    )
                return
            self.add(address, key)
            _log.info(
                "Trusting {address} on first use: host key {key} saved in {path}",
                address=address,
                key=_b64(key),
                path=str(self.path),
            )

        return viewer_context_factory(None, remember)
