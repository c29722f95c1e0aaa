# -*- test-case-name: tests.test_quic_session -*-
"""TLS 1.3 inside QUIC for host/viewer sessions, pinned exactly as over TCP.

The host is the QUIC server and presents the self-signed certificate of its
Ed25519 identity key that L{litedesk.session.host_certificate} builds for the
TCP session; the viewer is the QUIC client and accepts exactly the key a
L{litedesk.session.pinning.PinnedHostCreator} names (the key the rendezvous
server signed, or a known-hosts entry with trust on first use), nothing about
chains, names or dates (docs/protocol.rst §8.1).

aioquic does its own TLS 1.3 (not OpenSSL), so the OpenSSL verify callback
of the TCP path cannot run here.  The same decision is made by
L{check_host_key} when aioquic reports the handshake complete: aioquic has
then checked the host's C{CertificateVerify} signature against the
certificate's key (proof of possession) and its C{Finished}, and the viewer
has sent no application data.  A wrong key closes the connection at once with
the same L{HostKeyMismatch} (class and message) the TCP path gives, logged
under the same namespace and text.

No server name (SNI) is sent, no session tickets or 0-RTT are used: as on
TCP, nothing in the handshake names the host.
"""

from __future__ import annotations

import ssl

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from nacl.signing import SigningKey
from twisted.logger import Logger

from litedesk.quic import bbr
from litedesk.quic.aioquic_internals import peer_certificate
from litedesk.session.host_certificate import host_certificate
from litedesk.session.host_key import HostKeyMismatch, certificate_key, key_b64
from litedesk.session.pinning import PinnedHostCreator

__all__ = ["ALPN", "check_host_key", "host_configuration", "viewer_configuration"]

#: The one application protocol a LiteDesk QUIC session speaks: the session's
#: BytesCodec-framed C{hbb.Message} stream on a QUIC stream.
ALPN = "litedesk/1"

# Seconds without any packet after which QUIC drops the connection.  The host
# pings every second once logged in, and the session's own idle timeout (30 s)
# decides first; this only ends connections whose session is gone.
QUIC_IDLE_TIMEOUT = 60.0

# Both directions use the loss-tolerant controller (litedesk.quic.bbr): the
# host sends the video, the viewer input and file uploads.
CONGESTION_CONTROL = bbr.NAME

# Refusals stay under the TCP path's namespace and text, so that log filters
# written for TLS refusals keep matching.
_log = Logger(namespace="litedesk.session.tls")


def host_configuration(signing_key: SigningKey, host_id: str) -> QuicConfiguration:
    """The host's QUIC server configuration: its identity-key certificate.

    @param signing_key: the host's Ed25519 identity key (as for
        L{litedesk.session.host_certificate.host_context_factory}).
    @param host_id: the certificate's common name.
    """
    cert = host_certificate(signing_key, host_id)
    return QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        certificate=cert.certificate,
        private_key=cert.private_key,
        idle_timeout=QUIC_IDLE_TIMEOUT,
        congestion_control_algorithm=CONGESTION_CONTROL,
    )


def viewer_configuration() -> QuicConfiguration:
    """The viewer's QUIC client configuration.

    Chain verification is off because there is no chain to trust, only a key:
    L{check_host_key} decides on the key.  aioquic still checks the host's
    C{CertificateVerify} signature with the certificate's key.
    """
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        verify_mode=ssl.CERT_NONE,
        server_name=None,
        idle_timeout=QUIC_IDLE_TIMEOUT,
        congestion_control_algorithm=CONGESTION_CONTROL,
    )


def check_host_key(connection: QuicConnection, pin: PinnedHostCreator) -> None:
    """Accept the host's certificate key or raise, as the TCP path's pin check.

    Call it when aioquic reports C{HandshakeCompleted} on the viewer's
    connection, before any application data moves.

    @param pin: the expected key (or the trust-on-first-use callback) and
        the detail for the refusal's message, as the TCP session takes it.
    @raise HostKeyMismatch: the key is not the expected one, the certificate
        carries no Ed25519 key, or (trust on first use) another session
        recorded a different key meanwhile.
    """
    try:
        presented = certificate_key(peer_certificate(connection))
    except Exception:
        presented = None
    expected = pin.expected_host_pk
    error: HostKeyMismatch | None = None
    if presented is None or (expected is not None and presented != expected):
        error = HostKeyMismatch(expected, presented, pin.detail)
    elif expected is None and pin.on_first_use is not None:
        try:
            pin.on_first_use(presented)
        except HostKeyMismatch as e:
            error = e
        except Exception:
            # Saving a known-hosts entry failed; the key is proven, so the
            # session goes on (as on TCP).
            _log.failure("Could not record the host key {key}", key=key_b64(presented))
    if error is not None:
        _log.warn(
            "Refusing TLS session: {error}",
            error=str(error),
            expected=key_b64(error.expected),
            presented=key_b64(presented),
            transport="quic",
        )
        raise error
