"""UPnP IGD port mapping for the host (C{--upnp}).

The host maps an external TCP port on its Internet gateway to its local
session listener and advertises that port (C{upnp_port} in C{PunchHoleSent}
and C{RelayResponse}), so a viewer that cannot punch may still connect
directly.  miniupnpc blocks (SSDP discovery, SOAP calls), so every call
runs on a one-thread pool, never on the reactor thread.

The gateway client is injectable (L{IgdClient}) so that tests run without
a gateway.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

DISCOVER_TIMEOUT = 2.0
LEASE = 3600
DESCRIPTION = "LiteDesk"
PORT_TRIES = 4  # the wanted external port, then a few random ones


class UpnpError(Exception):
    """The gateway is missing or refused a request."""


class IgdClient(Protocol):
    """What L{UpnpMapper} needs from an IGD (blocking calls)."""

    def discover(self, timeout: float) -> str:
        """Find the gateway; return our LAN address towards it (raise L{UpnpError})."""

    def external_ip(self) -> str:
        """The gateway's external address ("" if it does not say)."""

    def add(
        self, external_port: int, internal_ip: str, internal_port: int, desc: str, lease: int
    ) -> None:
        """Add (or refresh) a TCP mapping; raise L{UpnpError} when refused."""

    def delete(self, external_port: int) -> None:
        """Remove the TCP mapping of C{external_port}."""


class MiniupnpcClient:
    """L{IgdClient} over the C{miniupnpc} module."""

    def __init__(self) -> None:
        try:
            import miniupnpc
        except ImportError:
            raise UpnpError("miniupnpc is not installed (pip install 'litedesk[upnp]')") from None
        self._u: Any = miniupnpc.UPnP()

    def discover(self, timeout: float) -> str:
        self._u.discoverdelay = int(timeout * 1000)
        try:
            found = self._u.discover()
            if not found:
                raise UpnpError("no UPnP gateway found")
            self._u.selectigd()
        except UpnpError:
            raise
        except Exception as e:
            raise UpnpError(f"no UPnP gateway found ({e})") from None
        return str(self._u.lanaddr)

    def external_ip(self) -> str:
        try:
            return str(self._u.externalipaddress() or "")
        except Exception:
            return ""

    def add(
        self, external_port: int, internal_ip: str, internal_port: int, desc: str, lease: int
    ) -> None:
        try:
            ok = self._u.addportmapping(
                external_port, "TCP", internal_ip, internal_port, desc, "", lease
            )
        except Exception as e:
            raise UpnpError(str(e)) from None
        if not ok:
            raise UpnpError("AddPortMapping failed")

    def delete(self, external_port: int) -> None:
        try:
            self._u.deleteportmapping(external_port, "TCP")
        except Exception as e:
            raise UpnpError(str(e)) from None


def _refuses_leases(error: UpnpError) -> bool:
    text = str(error).lower()
    return "permanent" in text or "725" in text or "lease" in text


class UpnpMapper:
    """Keeps one TCP port mapping on the IGD for C{internal_port}.

    C{start()} fires with the external port (or None when there is no
    gateway or it refused; that is logged and the host works without it).
    The mapping is renewed at half its lease and removed by C{stop()}.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        internal_port: int,
        client: IgdClient | None = None,
        lease: int = LEASE,
        discover_timeout: float = DISCOVER_TIMEOUT,
        external_port: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.internal_port = internal_port
        self._client = client
        self.lease = lease
        self.discover_timeout = discover_timeout
        self.wanted_port = external_port or internal_port
        self.external_port: int | None = None
        self.internal_ip = ""
        self.external_ip = ""
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="litedesk-upnp")
        self._renew_call: Any = None
        self._stopped = False
        self._starting: Deferred[int | None] | None = None

    @property
    def mapped_port(self) -> int:
        """The external port to advertise, 0 while there is none."""
        return self.external_port or 0

    def _run(self, f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self._pool, f, *args)

    def start(self) -> Deferred[int | None]:
        self._pool.start()
        self._starting = Deferred.fromCoroutine(self._start())
        return self._starting

    async def _start(self) -> int | None:
        try:
            if self._client is None:
                self._client = await self._run(MiniupnpcClient)
            assert self._client is not None
            self.internal_ip = await self._run(self._client.discover, self.discover_timeout)
            self.external_ip = await self._run(self._client.external_ip)
            port = await self._map()
        except UpnpError as e:
            self._log.warn(
                "UPnP: cannot map port {port}: {error}", port=self.internal_port, error=e
            )
            return None
        if self._stopped:  # stop() ran while we were mapping
            await self._run(self._delete_quietly, port)
            return None
        self.external_port = port
        self._log.info(
            "UPnP: mapped {ext_ip}:{ext} -> {ip}:{port} (TCP, lease {lease} s)",
            ext_ip=self.external_ip or "gateway",
            ext=port,
            ip=self.internal_ip,
            port=self.internal_port,
            lease=self.lease or "permanent",
        )
        self._schedule_renew()
        return port

    async def _map(self) -> int:
        assert self._client is not None
        candidates = [self.wanted_port] + [
            random.randint(20000, 60000) for _ in range(PORT_TRIES - 1)
        ]
        last: UpnpError | None = None
        for port in candidates:
            try:
                await self._add(port)
                return port
            except UpnpError as e:
                self._log.info("UPnP: external port {port} refused: {error}", port=port, error=e)
                last = e
        raise last or UpnpError("no port")

    async def _add(self, port: int) -> None:
        assert self._client is not None
        args = (port, self.internal_ip, self.internal_port, DESCRIPTION)
        try:
            await self._run(self._client.add, *args, self.lease)
        except UpnpError as e:
            if not self.lease or not _refuses_leases(e):
                raise
            self._log.info(
                "UPnP: the gateway refuses leases ({error}); mapping permanently", error=e
            )
            self.lease = 0
            await self._run(self._client.add, *args, 0)

    def _schedule_renew(self) -> None:
        if self.lease and not self._stopped:
            self._renew_call = self.reactor.callLater(self.lease / 2, self._renew)

    def _renew(self) -> None:
        self._renew_call = None
        port = self.external_port
        if port is None or self._stopped:
            return

        def failed(f: Any) -> None:
            self._log.warn("UPnP: renewing port {port} failed: {error}", port=port, error=f.value)

        def renewed(_: object) -> None:
            self._log.debug("UPnP: renewed port {port}", port=port)

        d = Deferred.fromCoroutine(self._add(port))
        d.addCallbacks(renewed, failed)
        d.addBoth(lambda _: self._schedule_renew())

    def _delete_quietly(self, port: int) -> None:
        assert self._client is not None
        try:
            self._client.delete(port)
        except UpnpError as e:
            self._log.warn("UPnP: removing port {port} failed: {error}", port=port, error=e)

    def stop(self) -> Deferred[None]:
        """Remove the mapping (if any) and end the worker thread."""
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self._stopped = True
        if self._renew_call is not None and self._renew_call.active():
            self._renew_call.cancel()
        self._renew_call = None
        if self._starting is not None and not self._starting.called:
            done: Deferred[None] = Deferred()

            def passthrough(result: object) -> object:
                done.callback(None)
                return result

            self._starting.addBoth(passthrough)
            await done  # _start removes what it mapped, seeing _stopped
        port, self.external_port = self.external_port, None
        if port is not None and self._client is not None:
            await self._run(self._delete_quietly, port)
            self._log.info("UPnP: removed the mapping of port {port}", port=port)
        if self._pool.started:
            self._pool.stop()
