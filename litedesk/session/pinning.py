"""Viewer-side TLS 1.3 that accepts exactly one host key.

The host's certificate is self-signed with its Ed25519 identity key (the key
it registers with the rendezvous server).  The viewer accepts exactly one key:

- the C{pk} of the C{IdPk} that the rendezvous server signed
  (L{litedesk.session.host_key.host_key_from_signed_id_pk} checks that
  signature), or
- for direct C{host:port} connections without a server, the entry in a
  L{litedesk.session.known_hosts.KnownHosts} file, trusting the key on first
  use.

Certificate chains, names and dates are ignored; only the leaf certificate's
public key counts, and TLS 1.3's CertificateVerify proves the host holds the
matching private key.  A different key fails the handshake before any
application data moves, and the viewer's protocol gets a
L{litedesk.session.host_key.HostKeyMismatch} in C{connectionLost}.  Nothing in
the handshake is readable by a relay: TLS 1.3 encrypts the certificate, and no
server name (SNI) is sent.
"""

from __future__ import annotations

from collections.abc import Callable

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.session.host_key import (
    HOST_KEY_LENGTH,
    HostKeyMismatch,
    certificate_key,
    key_b64,
)

__all__ = ["PinnedHostCreator", "viewer_context_factory"]

# Key refusals and trust-on-first-use stay under the namespace they always
# had, so that log filters written for TLS events keep matching.
_log = Logger(namespace="litedesk.session.tls")


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
            expected=key_b64(error.expected),
            presented=key_b64(presented),
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
            presented = certificate_key(cert.to_cryptography())
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
            presented = certificate_key(connection.get_peer_certificate(as_cryptography=True))
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
                _log.failure("Could not record the host key {key}", key=key_b64(presented))


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
