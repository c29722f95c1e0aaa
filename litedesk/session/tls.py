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
  L{litedesk.session.switching.SwitchingProtocol.switch_protocol} hands an
  already connected stream (for example a relay leg after its plaintext
  C{RequestRelay} frame) to it.

Which host key the viewer accepts is L{litedesk.session.pinning}'s business;
the host's certificate is built in L{litedesk.session.host_certificate}.

Application protocols should wait for
L{twisted.internet.interfaces.IHandshakeListener.handshakeCompleted} before
trusting the session; writes made earlier are held by the TLS layer until the
handshake is done and are dropped if it fails.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory
from twisted.protocols.tls import (
    BufferingTLSTransport,
    TLSMemoryBIOFactory,
    TLSMemoryBIOProtocol,
)

from litedesk.session.host_key import certificate_key

__all__ = [
    "peer_host_key",
    "tls_client_factory",
    "tls_server_factory",
    "tls_version",
    "wrap_client",
    "wrap_server",
]


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
    L{litedesk.session.switching.SwitchingProtocol.switch_protocol} (or
    C{makeConnection}).

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
    return certificate_key(handle.get_peer_certificate(as_cryptography=True))


def tls_version(transport: ITransport | Any) -> str | None:
    """The negotiated TLS version, e.g. C{"TLSv1.3"}; None before a handshake."""
    handle = _tls_handle(transport)
    if handle is None:
        return None
    name = handle.get_protocol_version_name()
    return name if name and name != "Unknown" else None
