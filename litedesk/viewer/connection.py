"""How the viewer opens a session: the password, the path to the host, timeouts.

Shared by the headless mode (L{litedesk.viewer.cli}), the window's
connection controller (L{litedesk.viewer.controller}) and the benchmarks,
so it depends on neither: no argument parsing, no Tk.  Failures are
L{ConnectError} (from the route), L{SessionError} (from the session) or
L{UsageFailure} (what the person asked for cannot work); each carries a
short phrase, and L{failure_reason} names it with a L{FailureReason} so
that callers decide by kind instead of by matching text.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nacl.signing import VerifyKey
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IProtocol
from twisted.logger import Logger

from litedesk.nat.nattype import resolve_ip
from litedesk.rustdesk.channel import ChannelTransport
from litedesk.rustdesk.viewer_detect import PROTOCOL_LITEDESK, PROTOCOL_RUSTDESK, HostDetector
from litedesk.session.known_hosts import KnownHosts
from litedesk.session.links import LinkError, ServerLinks
from litedesk.session.pinning import PinnedHostCreator, viewer_context_factory
from litedesk.session.tls import wrap_client
from litedesk.session.viewer_session import SessionError, ViewerSession
from litedesk.viewer.nat_cache import DEFAULT_TTL, NatCache, default_cache_file
from litedesk.viewer.quic_connect import transport_kind
from litedesk.viewer.refusals import LoginRequired
from litedesk.viewer.route import (
    ConnectError,
    Route,
    connect_punched,
    find_host,
    relay_fallback,
)
from litedesk.viewer.sign_in import token_for
from litedesk.viewer.udp_route import connect_udp
from litedesk.viewer.ws_route import find_host_ws
from litedesk.websocket.urls import WebSocketServer, is_ws_url, load_ca_file
from litedesk.wire.address import DEFAULT_RENDEZVOUS_PORT, parse_host_port

LOGIN_TIMEOUT = 20.0
DIRECT_PORT = 21118  # what a host's --listen uses unless told otherwise

_log = Logger(namespace="litedesk.viewer")


class UsageFailure(Exception):
    """What was asked for cannot work (a missing password, server or key)."""


class FailureReason(enum.StrEnum):
    """Why a connection attempt or a session failed, by kind.

    The values are the leading phrases of the errors' messages (which the
    headless mode prints unchanged); L{failure_reason} maps an error to its
    member.
    """

    UNKNOWN_ID = "unknown id"
    HOST_OFFLINE = "host offline"
    KEY_MISMATCH = "key mismatch"
    KEY_OVERUSE = "key overuse"
    BAD_SERVER_KEY = "bad server key"
    HOST_KEY_MISMATCH = "host key mismatch"
    WRONG_PASSWORD = "wrong password"  # also "wrong password (too many attempts, …)"
    NO_PASSWORD_ACCESS = "the host accepts no password"
    LOGIN_REFUSED = "login refused"
    LOGIN_REQUIRED = "login required"  # the server wants an API sign-in (--require-login)
    SIGN_IN_FAILED = "sign-in failed"  # --login did not get a token
    CANNOT_SECURE = "cannot secure rendezvous connection"  # no token sent in the clear
    TOO_MANY_VIEWERS = "too many viewers"
    FILE_TRANSFER_DISABLED = "file transfer disabled"
    FORWARD_NOT_ALLOWED = "forward not allowed"
    FORWARD_UNREACHABLE = "forward target unreachable"
    VIEW_ONLY = "view only"
    # A file transfer's own failures (litedesk.files.client's FileTransferError).
    OUTSIDE_FILE_ROOT = "outside the file root"
    NOT_FOUND = "not found"
    RENDEZVOUS_UNREACHABLE = "cannot reach rendezvous server"
    RENDEZVOUS_CLOSED = "rendezvous server closed the connection"
    RENDEZVOUS_SILENT = "no answer from rendezvous server"
    PUNCH_FAILED = "punch hole failed"
    RELAY_REFUSED = "relay refused"
    RELAY_UNREACHABLE = "cannot reach relay"
    HOST_UNREACHABLE = "cannot reach host"  # also "cannot reach host on the LAN"
    TIMED_OUT = "timed out waiting for"
    LOST_BEFORE_LOGIN = "connection lost before login"
    CLOSED_BY_HOST = "closed by host"
    DISCONNECTED = "disconnected"
    CANNOT_CONNECT = "cannot connect"
    USAGE = "usage"
    OTHER = "other"

    @property
    def final(self) -> bool:
        """Trying again cannot help: ask the person instead of reconnecting."""
        return self in _FINAL


_FINAL = frozenset(
    {
        FailureReason.WRONG_PASSWORD,
        FailureReason.HOST_KEY_MISMATCH,
        FailureReason.KEY_MISMATCH,
        FailureReason.BAD_SERVER_KEY,
        FailureReason.UNKNOWN_ID,
        FailureReason.NO_PASSWORD_ACCESS,
        FailureReason.RELAY_REFUSED,
        FailureReason.FILE_TRANSFER_DISABLED,
        FailureReason.FORWARD_NOT_ALLOWED,
        FailureReason.LOGIN_REQUIRED,
        FailureReason.SIGN_IN_FAILED,
        FailureReason.CANNOT_SECURE,
    }
)
# Longest phrase first, so that a phrase that begins with a shorter one
# (none do today) still finds its own member.
_BY_PHRASE = sorted(
    (r for r in FailureReason if r not in (FailureReason.USAGE, FailureReason.OTHER)),
    key=lambda r: -len(r.value),
)


def reason_phrase(error: BaseException) -> str:
    """The short phrase an error carries (its C{reason}), else its message."""
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) and reason else str(error)


def failure_reason(error: BaseException) -> FailureReason:
    """The kind of failure C{error} reports."""
    if isinstance(error, UsageFailure):
        return FailureReason.USAGE
    phrase = reason_phrase(error)
    for r in _BY_PHRASE:
        if phrase.startswith(r.value):
            return r
    return FailureReason.OTHER


# -- the password ---------------------------------------------------------------

PASSWORD_ARGV_WARNING = (
    "litedesk-viewer: warning: a password given with --password is visible to other "
    "local users (ps, /proc/PID/cmdline); use --password-file FILE or the "
    "LITEDESK_PASSWORD environment variable instead"
)


def read_password(args: argparse.Namespace) -> str:
    """The password from --password, --password-file or LITEDESK_PASSWORD.

    Raises L{UsageFailure} when none is given and C{OSError} when the file
    cannot be read.
    """
    if args.password is not None:
        return str(args.password)
    if args.password_file:
        return Path(args.password_file).read_text().strip("\r\n")
    env = os.environ.get("LITEDESK_PASSWORD")
    if env is not None:
        return env
    raise UsageFailure("a password is needed: --password-file, LITEDESK_PASSWORD or --password")


def warn_password_in_argv(args: argparse.Namespace) -> None:
    # Only a warning: scripts that pass --password keep working.  The
    # command line of a process is world-readable on Linux, its environment
    # and a 0600 file are not.
    if args.password is not None:
        print(PASSWORD_ARGV_WARNING, file=sys.stderr)


# -- reaching the host ------------------------------------------------------------


def default_known_hosts() -> Path:
    return Path.home() / ".config" / "litedesk" / "known_hosts"


def is_direct(target: str) -> bool:
    """Whether C{target} is a HOST:PORT (or IP) to dial rather than a host id."""
    if target.startswith("["):
        return True
    return ":" in target or any(c == "." for c in target)


def rendezvous_entries(text: str) -> list[str]:
    """C{--rendezvous A,B,...}: the servers to try in turn (the nodes of a cluster).

    @raise UsageFailure: naming an empty entry.
    """
    entries = [e.strip() for e in text.split(",")]
    if not all(entries):
        raise UsageFailure(f"bad rendezvous server list {text.strip()!r}: empty entry")
    return entries


def server_links(args: argparse.Namespace, text: str | None = None) -> ServerLinks:
    """How to reach the server C{text} (default C{args.rendezvous}) names: TCP,
    or WebSocket with C{--websocket} or a C{ws://} / C{wss://} URL (then
    C{--ws-ca} applies).

    @raise UsageFailure: the address or the CA file cannot be used.
    """
    text = str(args.rendezvous) if text is None else text
    ws_ca = getattr(args, "ws_ca", None)
    if not (getattr(args, "websocket", False) or is_ws_url(text)):
        if ws_ca:
            raise UsageFailure("--ws-ca only applies with --websocket")
        try:
            return ServerLinks(parse_host_port(text, DEFAULT_RENDEZVOUS_PORT))
        except ValueError:
            raise UsageFailure(f"bad rendezvous server address {text!r}") from None
    try:
        ws = WebSocketServer.from_option(text)
        if ws_ca:
            load_ca_file(ws_ca)
    except ValueError as e:
        raise UsageFailure(f"--websocket: {e}") from None
    return ServerLinks((ws.host, ws.port), ws=ws, ws_ca=ws_ca)


def transport_name(session: ViewerSession) -> str:
    """The connected session's transport: C{"quic"} or C{"tcp"}."""
    return transport_kind(session)


def session_protocol(session: ViewerSession) -> str:
    """Which protocol a connected session runs: C{"litedesk-tls"} or C{"rustdesk"}."""
    if isinstance(session.transport, ChannelTransport):
        return PROTOCOL_RUSTDESK
    return PROTOCOL_LITEDESK


@contextlib.contextmanager
def _named(server: str) -> Iterator[None]:
    """A C{--require-login} refusal names the server as the person gave it
    (the route knows only its address, and a ws:// URL keys its own sign-in)."""
    try:
        yield
    except LoginRequired as e:
        raise LoginRequired(e.text, server) from None


async def connect(
    reactor: Any,
    args: argparse.Namespace,
    session: ViewerSession,
    progress: Callable[[str], None] | None = None,
    on_server: Callable[[str], None] | None = None,
) -> str:
    """Open the stream to the host and start its session; returns the path used.

    C{args.rendezvous} may list several servers (C{A,B,...}): each is asked
    in turn until one answers (L{find_route}); C{on_server} hears the one
    that did.

    Whatever the path, the host speaks first and its C{SignedId} names the
    protocol (docs/protocol.rst §11.5): LiteDesk's TLS session, pinned to
    the host key, or RustDesk's secure channel checked against the same key
    (L{session_protocol} tells which one ran).

    C{args} carries C{target}, C{rendezvous}, C{key}, C{force_relay},
    C{known_hosts}, C{websocket} and C{ws_ca} as the command line names them
    (the last two may be missing: TCP).  Requests to the server carry the
    API token signed in with for it (L{litedesk.viewer.sign_in.token_for}).  C{progress} hears what
    is being done ("rendezvous", "punch", "relay", "lan", "direct") for a
    status bar.
    """

    def step(what: str) -> None:
        if progress is not None:
            progress(what)

    if is_direct(args.target):
        step("direct")
        host, port = parse_host_port(args.target, DIRECT_PORT)
        kh = KnownHosts(args.known_hosts or default_known_hosts())
        creator = kh.context_factory(f"{host}:{port}")
        ep = HostnameEndpoint(reactor, host, port, timeout=5)
        # No server vouches for an address: TLS pinning (known_hosts)
        # authenticates a LiteDesk host; a RustDesk host is refused.
        direct = HostDetector(
            session, lambda: wrap_client(session, creator), None, args.target, reactor
        )
        try:
            await connectProtocol(ep, direct)
        except Exception as e:
            raise ConnectError("cannot reach host", f"{host}:{port} ({e})") from None
        return "direct"
    if not args.rendezvous or not args.key:
        raise UsageFailure("--rendezvous and --key are needed to connect by id")
    token = await token_for(reactor, args)
    step("rendezvous")
    links, route = await find_route(reactor, args, token)
    server = links.server
    if on_server is not None:
        on_server(links.describe())
    creator = viewer_context_factory(route.host_pk, detail=f"id {args.target}")
    tls = HostDetector(
        session,
        lambda: wrap_client(session, creator),
        VerifyKey(route.host_pk),
        args.target,
        reactor,
    )
    if route.path == "udp":  # UDP punch and QUIC, relay when it fails
        step("punch")
        return await _connect_udp(reactor, args, route, server, session, creator, tls, token, step)
    if route.path == "punch":  # hole punching, relay when it fails
        step("punch")
        with _named(args.rendezvous):
            return await connect_punched(
                reactor, route, server, args.key, args.target, tls, token=token
            )
    if route.path == "relay":
        step("relay")
        try:
            await links.connect_relay(reactor, route.relay_name, route.uuid, args.key, tls)
        except LinkError as e:
            raise ConnectError("cannot reach relay", str(e)) from None
        return "relay"
    assert route.addr is not None
    step("lan")
    ep = HostnameEndpoint(reactor, route.addr[0], route.addr[1], timeout=5)
    try:
        await connectProtocol(ep, tls)
    except Exception as e:
        raise ConnectError("cannot reach host on the LAN", str(e)) from None
    return "lan"


def nat_cache_for(args: argparse.Namespace) -> NatCache:
    """The NAT type cache C{--nat-ttl} asks for (0: test on every connect)."""
    ttl = getattr(args, "nat_ttl", DEFAULT_TTL)
    return NatCache(default_cache_file(), DEFAULT_TTL if ttl is None else float(ttl), time.time)


async def _connect_udp(
    reactor: Any,
    args: argparse.Namespace,
    route: Route,
    server: tuple[str, int],
    session: ViewerSession,
    creator: PinnedHostCreator,
    tls: IProtocol,
    token: str,
    step: Callable[[str], None],
) -> str:
    """The host punches UDP: QUIC on the punched path or its mapped port; the relay
    (with the TCP session protocol C{tls}) when neither works."""
    assert route.udp is not None
    path = await connect_udp(reactor, route.udp, session, creator, tls)
    if path is not None:
        return path
    # The NAT type we punched with may be out of date: test it next time.
    with contextlib.suppress(OSError):
        nat_cache_for(args).forget((resolve_ip(*server), server[1]))
    step("relay")
    with _named(args.rendezvous):
        return await relay_fallback(reactor, route, server, args.key, args.target, tls, token=token)


#: Failures of one rendezvous server after which the next one in the list is asked.
_NEXT_SERVER = frozenset(
    {
        FailureReason.RENDEZVOUS_UNREACHABLE,
        FailureReason.RENDEZVOUS_CLOSED,
        FailureReason.RENDEZVOUS_SILENT,
    }
)


async def find_route(
    reactor: Any, args: argparse.Namespace, token: str
) -> tuple[ServerLinks, Route]:
    """Ask the servers of C{args.rendezvous} in turn for the host; the first that
    answers gives the route.

    A server that cannot be reached, closes or does not answer within the
    route's usual timeout is skipped; any other answer (an unknown id, an
    offline host, a bad key) is the answer.

    @raise ConnectError: the last server's failure, or the answer.
    """
    entries = rendezvous_entries(str(args.rendezvous))
    for i, entry in enumerate(entries):
        links = server_links(args, entry)
        try:
            with _named(args.rendezvous):
                if links.websocket:
                    route = await find_host_ws(reactor, links, args.key, args.target, token=token)
                else:
                    route = await find_host(
                        reactor,
                        links.server,
                        args.key,
                        args.target,
                        args.force_relay,
                        token=token,
                        udp=not getattr(args, "no_udp", False),
                        nat_cache=nat_cache_for(args),
                    )
        except ConnectError as e:
            if i + 1 == len(entries) or failure_reason(e) not in _NEXT_SERVER:
                raise
            _log.warn(
                "Rendezvous server {server} failed ({error}); trying {next}",
                server=links.describe(),
                error=str(e),
                next=entries[i + 1],
            )
            continue
        return links, route
    raise AssertionError("rendezvous_entries returns at least one entry")


async def with_timeout(reactor: Any, d: Deferred[Any], seconds: float, what: str) -> Any:
    """C{await d}, failing with C{SessionError("timed out waiting for WHAT")}."""
    d.addTimeout(seconds, reactor)
    try:
        return await d
    except SessionError:
        raise
    except (CancelledError, TimeoutError):
        raise SessionError(f"timed out waiting for {what}") from None
