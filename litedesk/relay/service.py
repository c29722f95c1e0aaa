"""The relay as a twistd service: options, settings, and the service tree.

For the plugin author::

    from litedesk.relay.service import (
        RELAY_OPT_PARAMETERS, RELAY_OPT_FLAGS, relay_settings_from_options, make_relay_service)

    class Options(usage.Options):
        optParameters = [...] + RELAY_OPT_PARAMETERS
        optFlags = [...] + RELAY_OPT_FLAGS

    settings = relay_settings_from_options(config, os.environ)   # raises UsageError
    svc = make_relay_service(reactor, "tcp:21117", settings, licence, data_dir)
    svc.setServiceParent(top)
    svc.stats()   # RelayStats(connections, handshaking, waiting, active_pairs, ...)

Option values may be strings (as C{usage.Options} leaves them) or numbers;
C{None} means "not given", and then hbbr's environment variable, then the
hbbr default, applies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.usage import UsageError
from zope.interface import implementer

from litedesk.relay.limiter import BandwidthSettings
from litedesk.relay.server import Relay, RelayFactory, RelayStats
from litedesk.relay.settings import RelaySettings
from litedesk.relay.table import ConnectionLimits, Deadlines
from litedesk.relay.transport import RelayServerTransport
from litedesk.twisted_internals import install_connection_class, raise_listen_failures
from litedesk.wire.addrmangle import normalize_host

__all__ = [
    "RELAY_OPT_FLAGS",
    "RELAY_OPT_PARAMETERS",
    "RelayService",
    "RelaySettings",
    "make_relay_service",
    "read_address_list",
    "relay_settings_from_options",
]

BLOCKLIST_FILE = "blocklist.txt"
BLACKLIST_FILE = "blacklist.txt"

# (option, env var, hbbr default, type, help)
_BANDWIDTH: list[tuple[str, str, float, str]] = [
    (
        "single-bandwidth",
        "SINGLE_BANDWIDTH",
        128.0,
        "per-pair bandwidth, Mb/s (Mb = 2**20 bits)",
    ),
    ("total-bandwidth", "TOTAL_BANDWIDTH", 1024.0, "bandwidth of all pairs together, Mb/s"),
    ("limit-speed", "LIMIT_SPEED", 32.0, "speed of throttled pairs (blacklist, downgrade), Mb/s"),
    (
        "downgrade-threshold",
        "DOWNGRADE_THRESHOLD",
        0.66,
        "throttle a pair whose average exceeds this fraction of single-bandwidth",
    ),
    (
        "downgrade-start-check",
        "DOWNGRADE_START_CHECK",
        1800.0,
        "seconds of pair lifetime before the downgrade check",
    ),
]

_OTHER: list[tuple[str, float, str]] = [
    ("max-connections-per-ip", 256, "relay connections per source address; 0 = unlimited"),
    ("max-unpaired", 10000, "connections still handshaking or waiting; 0 = unlimited"),
    ("relay-first-frame-timeout", 30.0, "seconds for the RequestRelay frame; 0 = none"),
    ("relay-partner-timeout", 30.0, "seconds a connection waits for its partner; 0 = none"),
    ("relay-idle-timeout", 30.0, "seconds a pair may move no data; 0 = none"),
    ("relay-drain-timeout", 30.0, "seconds to flush to one side after the other ended"),
    ("relay-read-size", 256 * 1024, "bytes per read and per-direction buffer before pausing"),
    ("relay-max-first-frame", 64 * 1024, "largest RequestRelay frame accepted, bytes"),
    (
        "relay-early-buffer",
        64 * 1024,
        "bytes kept from a connection before its partner arrives; then it stops reading",
    ),
    (
        "relay-early-budget",
        16 * 1024 * 1024,
        "bytes all waiting connections together may keep; beyond it they stop reading "
        "until it frees; 0 = unlimited",
    ),
]

RELAY_OPT_PARAMETERS: list[list[Any]] = [
    [name, None, None, f"{text} [default: {default:.10g}; env {env}]"]
    for name, env, default, text in _BANDWIDTH
] + [[name, None, None, f"{text} [default: {default:.10g}]"] for name, default, text in _OTHER]

READ_MODES = ("auto", "splice", "recv_into", "twisted")

RELAY_OPT_PARAMETERS.append(
    [
        "relay-read-mode",
        None,
        None,
        "how paired legs read: auto (recv_into for small reads, splice for bulk), splice, "
        "recv_into, twisted [default: auto]",
    ]
)

RELAY_OPT_FLAGS: list[list[Any]] = [
    ["relay-no-fast-write", None, "always queue writes for the next reactor turn"],
]


def _number(name: str, raw: object, integer: bool = False) -> float:
    try:
        value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
    except ValueError:
        raise UsageError(f"--{name}: not a number: {raw!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise UsageError(f"--{name}: must be a finite number >= 0, not {raw!r}")
    if integer and value != int(value):
        raise UsageError(f"--{name}: must be a whole number, not {raw!r}")
    return value


def relay_settings_from_options(
    config: Mapping[str, object], environ: Mapping[str, str]
) -> RelaySettings:
    """Build settings from parsed options, falling back to hbbr's environment variables.

    @raise UsageError: a value is not a non-negative number.
    """
    bw: dict[str, float] = {}
    for name, env, default, _ in _BANDWIDTH:
        raw = config.get(name)
        src = name
        if raw is None and environ.get(env, "").strip():
            raw, src = environ[env], env
        bw[name] = default if raw is None else _number(src, raw)
    if bw["downgrade-threshold"] > 1e6:
        raise UsageError("--downgrade-threshold: unreasonably large")
    other: dict[str, float] = {}
    for name, default, _ in _OTHER:
        raw = config.get(name)
        integer = name.startswith("max") or name in (
            "relay-read-size",
            "relay-early-buffer",
            "relay-early-budget",
        )
        other[name] = default if raw is None else _number(name, raw, integer)
    if other["relay-read-size"] < 4096:
        raise UsageError("--relay-read-size: at least 4096")
    if other["relay-early-buffer"] < 1024:
        raise UsageError("--relay-early-buffer: at least 1024")
    mode = str(config.get("relay-read-mode") or "auto")
    if mode not in READ_MODES:
        raise UsageError(f"--relay-read-mode: one of {', '.join(READ_MODES)}, not {mode!r}")
    return RelaySettings(
        deadlines=Deadlines(
            first_frame=other["relay-first-frame-timeout"],
            partner=other["relay-partner-timeout"],
            idle=other["relay-idle-timeout"],
            drain=other["relay-drain-timeout"],
        ),
        limits=ConnectionLimits(
            max_per_ip=int(other["max-connections-per-ip"]),
            max_unpaired=int(other["max-unpaired"]),
        ),
        bandwidth=BandwidthSettings(
            single_bandwidth=bw["single-bandwidth"],
            total_bandwidth=bw["total-bandwidth"],
            limit_speed=bw["limit-speed"],
            downgrade_threshold=bw["downgrade-threshold"],
            downgrade_start_check=bw["downgrade-start-check"],
        ),
        read_size=int(other["relay-read-size"]),
        early_buffer=int(other["relay-early-buffer"]),
        early_budget=int(other["relay-early-budget"]),
        max_first_frame=int(other["relay-max-first-frame"]),
        fast_write=not config.get("relay-no-fast-write"),
        read_mode=mode,
    )


def read_address_list(text: str) -> frozenset[str]:
    """hbbr's list format: one address per line, anything after the first space ignored."""
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            out.add(normalize_host(parts[0]))
    return frozenset(out)


class _ListFile:
    """A list file that is re-read when its size, mtime or inode changes."""

    _log = Logger()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None

    def poll(self) -> frozenset[str] | None:
        """The new contents if the file changed since the last call, else None."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        except OSError as e:
            self._log.warn("relay cannot read {path}: {error}", path=str(self.path), error=str(e))
            return None
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        if stamp is None:
            return frozenset()
        try:
            text = self.path.read_text(errors="replace")
        except OSError as e:
            self._log.warn("relay cannot read {path}: {error}", path=str(self.path), error=str(e))
            return None
        return read_address_list(text)


@implementer(IStreamServerEndpoint)
class _RecordingEndpoint:
    """Wraps an endpoint so the service can tell when (and where) it listens."""

    def __init__(self, inner: IStreamServerEndpoint) -> None:
        self.inner = inner
        self.port: IListeningPort | None = None
        self._waiters: list[Deferred[IListeningPort]] = []

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        d = self.inner.listen(factory)

        def got(port: IListeningPort) -> IListeningPort:
            self.port = port
            # Plain TCP ports build RelayServerTransport instead of tcp.Server
            # (unix ports, whose transport subclasses tcp.Server, keep theirs).
            install_connection_class(port, RelayServerTransport)
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w.callback(port)
            return port

        d.addCallback(got)
        return d

    def when_listening(self) -> Deferred[IListeningPort]:
        if self.port is not None:
            from twisted.internet.defer import succeed

            return succeed(self.port)
        d: Deferred[IListeningPort] = Deferred()
        self._waiters.append(d)
        return d


class RelayService(MultiService):
    """The relay's listener, deadline sweep and list reloader.

    @ivar relay: the L{Relay} (state, counters).
    """

    _log = Logger()

    def __init__(self, relay: Relay, endpoint: _RecordingEndpoint, data_dir: Path) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.relay = relay
        self._endpoint = endpoint
        self.factory = RelayFactory(relay)
        listener = StreamServerEndpointService(endpoint, self.factory)
        raise_listen_failures(listener)
        listener.setServiceParent(self)
        d = relay.settings.deadlines
        shortest = min([x for x in (d.first_frame, d.partner, d.idle, d.drain) if x] or [10.0])
        sweep = TimerService(max(0.01, min(1.0, shortest / 10)), relay.sweep)
        sweep.clock = relay.clock
        sweep.setServiceParent(self)
        self._blocklist = _ListFile(data_dir / BLOCKLIST_FILE)
        self._blacklist = _ListFile(data_dir / BLACKLIST_FILE)
        lists = TimerService(1.0, self.reload_lists)
        lists.clock = relay.clock
        lists.setServiceParent(self)

    def startService(self) -> None:
        raise_nofile_limit()
        super().startService()  # type: ignore[no-untyped-call]

    def reload_lists(self) -> None:
        """Re-read blocklist.txt and blacklist.txt if they changed."""
        try:
            block = self._blocklist.poll()
            if block is not None:
                self._log.info(
                    "relay blocklist {path}: {count} addresses",
                    path=str(self._blocklist.path),
                    count=len(block),
                )
                self.relay.set_blocklist(block)
            black = self._blacklist.poll()
            if black is not None:
                self._log.info(
                    "relay blacklist {path}: {count} addresses",
                    path=str(self._blacklist.path),
                    count=len(black),
                )
                self.relay.set_blacklist(black)
        except Exception:
            self._log.failure("relay list reload failed")

    def stats(self) -> RelayStats:
        """Live counters: connections, waiting, active pairs, bytes relayed."""
        return self.relay.stats()

    def when_listening(self) -> Deferred[IListeningPort]:
        """Fires with the listening port once the service has started."""
        return self._endpoint.when_listening()


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each pair holds two descriptors).

    @return: the soft limit now in force.
    """
    from litedesk.fdlimit import raise_nofile_limit as raise_limit

    soft = raise_limit()
    RelayService._log.info(
        "relay open-file limit {limit} (about {pairs} pairs)", limit=soft, pairs=soft // 2
    )
    return soft


def make_relay_service(
    reactor: Any, endpoint: str, settings: RelaySettings, licence: str, data_dir: Path
) -> RelayService:
    """Build (not start) the relay service listening on C{endpoint}.

    @param licence: the resolved C{--key} licence string; empty means no check.
    @param data_dir: where C{blocklist.txt} and C{blacklist.txt} live.
    """
    relay = Relay(reactor, settings, licence)
    ep = _RecordingEndpoint(endpoints.serverFromString(reactor, endpoint))
    return RelayService(relay, ep, Path(data_dir))
