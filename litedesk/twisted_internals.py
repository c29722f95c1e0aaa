"""Every use LiteDesk makes of Twisted's private or undocumented attributes.

They live here, and nowhere else, so that a Twisted upgrade that renames one
breaks one module with its tests instead of the relay's hot path in silence.
Each accessor checks that the internal it needs is there (the write-buffer
ones once, on Twisted's own class) and otherwise falls back to public API that
gives the same result or a correct, slower one (tests force each fallback):

- a transport's write buffer (C{dataBuffer}, C{offset}, C{_tempDataLen}):
  whether anything is queued and how much; fallback: "maybe queued" (the
  relay then always writes through the transport, which keeps byte order) and
  "unknown" (0) for the byte count;
- transport attributes set up front so instance dicts keep CPython's compact
  shared-key form (C{_LATE_ATTRS} in the relay); fallback: names a transport
  does not have are skipped;
- the connection class a C{tcp.Port} builds (C{port.transport}); fallback:
  the port keeps its class (the relay then patches each paired leg's C{doRead});
- a transport's log prefix (C{_getLogPrefix}) and a port's number
  (C{_realPortNumber}); fallback: L{ILoggingContext} and C{getHost()};
- C{StreamServerEndpointService._raiseSynchronously} (a listen failure stops
  twistd at start); fallback: an endpoint wrapper that raises a listen
  failure known at once out of C{listen()};
- the TCP transport under a TLS transport (C{TLSMemoryBIOProtocol.transport}),
  to close TCP without waiting for the peer's close_notify; fallback: none is
  closed and the caller's own abort timer ends the connection;
- bytes queued in each layer of a transport stack (TLS aggregator and
  handshake buffer, the socket's write buffer) for the video backpressure;
  fallback: 0 for a layer without them (streaming goes on without drops).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import abstract, tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, ILoggingContext, IStreamServerEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "WRITE_BUFFER_INTERNALS",
    "buffered_bytes",
    "close_tcp_under_tls",
    "inner_transport",
    "install_connection_class",
    "log_prefix",
    "output_idle",
    "port_number",
    "queued_in_layer",
    "raise_listen_failures",
    "settle_attributes",
]


class _NoReactor:
    """A stand-in reactor: C{FileDescriptor.__init__} only stores it."""

    def __bool__(self) -> bool:
        return True


def has_write_buffer_internals(fd_class: type[Any] = abstract.FileDescriptor) -> bool:
    """Whether C{fd_class} instances keep Twisted's write buffer as the relay reads it."""
    try:
        probe = fd_class(reactor=_NoReactor())
    except Exception:
        return False
    return all(hasattr(probe, n) for n in ("dataBuffer", "offset", "_tempDataLen"))


WRITE_BUFFER_INTERNALS = has_write_buffer_internals()


def _output_idle_internal(t: Any) -> bool:
    return not t._tempDataLen and t.offset == len(t.dataBuffer)


def _output_idle_public(t: Any) -> bool:
    # Unknown: say "queued", so that callers write through the transport,
    # which is slower but never reorders bytes.
    return False


def _buffered_internal(t: Any) -> int:
    return int(len(t.dataBuffer) - t.offset + t._tempDataLen)


def _buffered_public(t: Any) -> int:
    return 0  # unknown


output_idle: Callable[[Any], bool] = (
    _output_idle_internal if WRITE_BUFFER_INTERNALS else _output_idle_public
)
"""C{output_idle(transport)}: nothing waits in the transport's write buffer."""

buffered_bytes: Callable[[Any], int] = (
    _buffered_internal if WRITE_BUFFER_INTERNALS else _buffered_public
)
"""C{buffered_bytes(transport)}: bytes waiting in its write buffer (0 if unknown)."""


_MISSING = object()


def settle_attributes(obj: object, names: Iterable[str]) -> None:
    """Set each of C{names} on C{obj} to its current value, skipping absent ones.

    Twisted sets some transport attributes only when they are first used;
    setting them all up front in one order keeps every instance dict in
    CPython's compact shared-key form.
    """
    for name in names:
        value = getattr(obj, name, _MISSING)
        if value is not _MISSING:
            setattr(obj, name, value)


def install_connection_class(port: object, cls: type[tcp.Server]) -> bool:
    """Make a plain TCP C{port} build C{cls} for accepted connections.

    @return: whether it did; ports that do not build C{tcp.Server} (unix
        sockets, other reactors) are left alone.
    """
    if getattr(port, "transport", None) is tcp.Server:
        port.transport = cls  # type: ignore[attr-defined]
        return True
    return False


def _log_prefix_public(obj: object) -> str:
    if ILoggingContext.providedBy(obj):
        return str(obj.logPrefix())
    return obj.__class__.__name__


def log_prefix(transport: object, obj: object) -> str:
    """The log prefix Twisted's C{transport} uses for C{obj} (its protocol or factory)."""
    internal = getattr(transport, "_getLogPrefix", None)
    if internal is not None:
        return str(internal(obj))
    return _log_prefix_public(obj)


def port_number(port: object) -> int | str:
    """The port number a listening C{port} is bound to (C{"?"} once closed)."""
    if hasattr(port, "_realPortNumber"):
        n = port._realPortNumber
        return n if n is not None else "?"
    try:
        return int(port.getHost().port)  # type: ignore[attr-defined]
    except Exception:
        return "?"


@implementer(IStreamServerEndpoint)
class _ListenNow:
    """An endpoint whose C{listen} raises a failure it already knows."""

    def __init__(self, inner: IStreamServerEndpoint) -> None:
        self.inner = inner

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        d = self.inner.listen(factory)
        failed: list[Failure] = []
        now = True

        def record(f: Failure) -> Failure | None:
            if now:
                failed.append(f)
                return None
            return f  # a later failure goes on to the service's own errback

        d.addErrback(record)
        now = False
        if failed:
            failed[0].raiseException()
        return d


def raise_listen_failures(svc: StreamServerEndpointService) -> None:
    """A listen failure during C{svc}'s start raises there (twistd stops) instead of
    only being logged while the process runs on without its port."""
    if hasattr(type(svc), "_raiseSynchronously"):
        svc._raiseSynchronously = True
    else:
        _raise_via_endpoint(svc)


def _raise_via_endpoint(svc: StreamServerEndpointService) -> None:
    svc.endpoint = _ListenNow(svc.endpoint)


def queued_in_layer(t: object) -> tuple[int, bool]:
    """Bytes written to transport layer C{t} and still queued in it, and whether
    C{t} is the bottom layer (the one that writes to the socket).

    Reads C{BufferingTLSTransport}'s aggregator, C{TLSMemoryBIOProtocol}'s
    cleartext queued before the handshake ends, and a C{FileDescriptor}'s
    write buffer.  Fallback, for layers without them: (0, False): unknown,
    and the caller goes on to the layer below.
    """
    total = 0
    aggregator = getattr(t, "_aggregator", None)
    pending = getattr(aggregator, "_buffer", None)
    if isinstance(pending, list):
        total += sum(len(b) for b in pending)
    app = getattr(t, "_appSendBuffer", None)
    if isinstance(app, list):
        total += sum(len(b) for b in app)
    data = getattr(t, "dataBuffer", None)
    if isinstance(data, bytes | bytearray):
        offset = getattr(t, "offset", 0)
        temp = getattr(t, "_tempDataLen", 0)
        total += len(data) - (offset if isinstance(offset, int) else 0)
        total += temp if isinstance(temp, int) else 0
        return total, True
    return total, False


def inner_transport(wrapper: object) -> object | None:
    """The transport under a wrapping one (TLS over TCP); None at the bottom."""
    return getattr(wrapper, "transport", None)


def close_tcp_under_tls(tls: object) -> bool:
    """Close the TCP connection under a TLS transport now, without waiting for
    the peer's close_notify (call after C{tls.loseConnection()}).

    @return: whether there was one to close.
    """
    lose = getattr(inner_transport(tls), "loseConnection", None)
    if lose is None:
        return False
    lose()
    return True
