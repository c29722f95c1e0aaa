"""PCP / NAT-PMP port mappings kept on the gateway for the host (C{--natpmp}).

L{NatPmpMapper} maps the host's UDP port (its QUIC listener) and, when it
has one, its TCP session port to one external port E on the default
gateway: PCP MAP (RFC 6887) first, NAT-PMP (RFC 6886) when the gateway
answers C{UNSUPP_VERSION} or does not answer PCP.  The mappings are renewed
at half their lifetime, requested again when the gateway's epoch shows it
lost them (RFC 6887 §8.5), and removed (lifetime 0) by C{stop()}, as the
UPnP mapping is (L{litedesk.nat.upnp}).  The gateway's unsolicited
ANNOUNCE (RFC 6887 §14.1) is not listened for: the epoch of the next
renewal tells the same, later.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from litedesk.nat.natpmp import (
    PROTOCOL_NAMES,
    SERVER_PORT,
    TCP,
    UDP,
    MapResult,
    NatPmpAddressRequest,
    NatPmpMapRequest,
    PcpMapRequest,
    PublicAddress,
    VersionRefused,
    epoch_lost,
)
from litedesk.nat.natpmp_client import (
    FIRST_WAIT,
    TRIES,
    GatewayError,
    GatewayRequest,
    GatewaySocket,
    default_gateway,
    local_address_towards,
)

__all__ = ["LIFETIME", "REMAP_INTERVAL", "RETRY_AFTER", "NatPmpMapper"]

#: Seconds of mapping asked for (the gateway may grant less).
LIFETIME = 7200
#: Renewal is retried this often at most when the gateway stops answering.
RETRY_AFTER = 60.0
#: A gateway whose epoch says it lost its mappings is asked again at once, but
#: not more often than this: a broken or hostile one must not keep us busy.
REMAP_INTERVAL = 30.0


@dataclass
class _Mapping:
    """One protocol's mapping: its PCP nonce stays for renewals and removal."""

    protocol: int
    internal_port: int
    nonce: bytes
    external_port: int = 0
    lifetime: int = 0
    granted_at: float = 0.0


def _granted(answer: MapResult | VersionRefused, protocol: int) -> MapResult:
    """C{answer} if it grants a mapping; else raise L{GatewayError} saying why."""
    if isinstance(answer, VersionRefused):
        why = "version refused"
    elif not answer.ok:
        why = answer.result_name
    elif not answer.external_port:
        why = "no port granted"
    else:
        return answer
    raise GatewayError(f"{PROTOCOL_NAMES[protocol]} mapping refused: {why}")


class NatPmpMapper:
    """Keeps the UDP (and TCP) mapping of the host's port on the gateway.

    C{start()} fires with the external port E (or None when there is no
    gateway, it does not answer, or it refuses; that is logged and the host
    works without it).  C{mapped_port} is E while the mapping stands, else 0.
    The UDP mapping comes first and decides E; the TCP mapping asks for E
    (without UDP, C{--no-udp}, the TCP mapping decides it).

    @ivar udp_port: the internal UDP port mapped (the QUIC listener; 0: none).
    @ivar tcp_port: the internal TCP port mapped (0: none); may be changed
        until C{start()}.
    @ivar version: "PCP" or "NAT-PMP" once the gateway answered.
    @param pcp: False to speak NAT-PMP only (a gateway whose PCP misbehaves).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        udp_port: int,
        tcp_port: int = 0,
        gateway: str | None = None,
        *,
        clock: IReactorTime | None = None,
        server_port: int = SERVER_PORT,
        lifetime: int = LIFETIME,
        tries: int = TRIES,
        first_wait: float = FIRST_WAIT,
        nonce: Callable[[int], bytes] = os.urandom,
        pcp: bool = True,
    ) -> None:
        if not (udp_port or tcp_port):
            raise ValueError("nothing to map")
        self.reactor = reactor
        self.clock: IReactorTime = clock or reactor
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self.gateway = gateway
        self.server_port = server_port
        self.lifetime = lifetime
        self.tries = tries
        self.first_wait = first_wait
        self._first_version = "" if pcp else "NAT-PMP"
        self.version = self._first_version
        self.external_ip = ""
        self._nonce = nonce
        # The first mapping decides the external port; the second asks for it.
        self._first = _Mapping(UDP if udp_port else TCP, udp_port or tcp_port, nonce(12))
        self._second: _Mapping | None = None
        self._client_ip = ""
        self._socket: GatewaySocket | None = None
        self._port: Any = None
        self._epoch: tuple[int, float] | None = None
        self._epoch_lost = False
        self._remapped_at: float | None = None
        self._renew_call: IDelayedCall | None = None
        self._round: Deferred[bool] | None = None
        self._stopped = False

    @property
    def mapped_port(self) -> int:
        """The external port to advertise, 0 while there is none."""
        return self._first.external_port

    @property
    def tcp_mapped_port(self) -> int:
        """E when TCP is mapped to it too, else 0 (a TCP mapping the gateway
        put on another port is removed: no viewer would learn it)."""
        tcp = self._second if self.udp_port else self._first
        if tcp is None or not tcp.external_port or tcp.external_port != self.mapped_port:
            return 0
        return tcp.external_port

    def start(self) -> Deferred[int | None]:
        """Find the gateway and map; fires with the external port or None."""
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> int | None:
        gateway = self.gateway or default_gateway()
        if gateway is None:
            self._log.warn("NAT-PMP: no default gateway; nothing mapped")
            return None
        self.gateway = gateway
        if self.udp_port and self.tcp_port:
            self._second = _Mapping(TCP, self.tcp_port, self._nonce(12))
        try:
            self._client_ip = local_address_towards(gateway, self.server_port)
        except OSError as e:
            self._log.warn("NAT-PMP: no route to gateway {gw}: {error}", gw=gateway, error=e)
            return None
        self._socket = GatewaySocket(self.clock, (gateway, self.server_port), self.first_wait)
        self._port = self.reactor.listenUDP(0, self._socket)
        try:
            mapped = await self._map_round()
        except CancelledError:
            mapped = False
        if not mapped or self._stopped:
            return None
        self._log.info(
            "NAT-PMP: mapped {ext_ip}:{ext} -> {ip}:{port} ({what}, {version}, "
            "lifetime {lifetime} s)",
            ext_ip=self.external_ip or "gateway",
            ext=self.mapped_port,
            ip=self._client_ip,
            port=self._first.internal_port,
            what=self._what(),
            version=self.version,
            lifetime=self._first.lifetime,
        )
        return self.mapped_port

    def _what(self) -> str:
        if not self.udp_port:
            return "TCP"
        return "UDP+TCP" if self.tcp_mapped_port else "UDP"

    def _map_round(self) -> Deferred[bool]:
        """Request (or renew) every mapping once; fires True when the first is mapped."""
        self._round = Deferred.fromCoroutine(self._map_all())
        return self._round

    async def _map_all(self) -> bool:
        try:
            await self._map(self._first)
            if self._second is not None:
                await self._map_second(self._second)
        except CancelledError:
            return False
        except GatewayError as e:
            self._log.warn(
                "NAT-PMP: cannot map port {port} on {gw}: {error}",
                port=self._first.internal_port,
                gw=self.gateway,
                error=e,
            )
            self._expire()
            if not self._first.external_port:
                self.version = self._first_version  # the next try asks for PCP again
            self._schedule(self._retry_delay())
            return False
        if self._epoch_lost and self._may_remap():  # the gateway restarted: again
            self._log.info("NAT-PMP: the gateway lost its mappings; mapping again")
            self._schedule(0)
        else:
            self._schedule(min((m.lifetime for m in self._mappings()), default=2) / 2)
        self._epoch_lost = False
        return True

    def _may_remap(self) -> bool:
        now = self.clock.seconds()
        if self._remapped_at is not None and now - self._remapped_at < REMAP_INTERVAL:
            return False
        self._remapped_at = now
        return True

    async def _map_second(self, tcp: _Mapping) -> None:
        try:
            await self._map(tcp, self._first.external_port)
        except GatewayError as e:
            self._log.warn(
                "NAT-PMP: TCP port {port} not mapped: {error}", port=tcp.internal_port, error=e
            )
            return
        if tcp.external_port != self._first.external_port:
            self._log.warn(
                "NAT-PMP: TCP got external port {tcp} instead of {udp}; TCP mapping removed",
                tcp=tcp.external_port,
                udp=self._first.external_port,
            )
            await self._remove(tcp)

    def _mappings(self) -> list[_Mapping]:
        return [m for m in (self._first, self._second) if m is not None and m.external_port]

    def _request(self, m: _Mapping, suggested: int, lifetime: int) -> GatewayRequest:
        if self.version == "NAT-PMP":
            return NatPmpMapRequest(m.protocol, m.internal_port, suggested, lifetime)
        return PcpMapRequest(
            m.nonce, m.protocol, m.internal_port, suggested, lifetime, self._client_ip
        )

    async def _ask(self, request: GatewayRequest) -> Any:
        assert self._socket is not None
        return await self._socket.request(request, self.tries)

    async def _map(self, m: _Mapping, suggested: int = 0) -> None:
        """Request C{m} (PCP, or NAT-PMP once PCP was refused); raise L{GatewayError}."""
        wanted = suggested or m.external_port or m.internal_port
        answer: MapResult | VersionRefused | None = None
        if self.version != "NAT-PMP":
            answer = await self._try_pcp(m, wanted)
        if answer is None:
            if not self.external_ip:
                await self._public_address()
            answer = await self._ask(self._request(m, wanted, self.lifetime))
        answer = _granted(answer, m.protocol)
        self._note_epoch(answer.epoch)
        if m.external_port and answer.external_port != m.external_port:
            self._log.warn(
                "NAT-PMP: the gateway moved the {proto} mapping from port {old} to {new}",
                proto=PROTOCOL_NAMES[m.protocol],
                old=m.external_port,
                new=answer.external_port,
            )
        m.external_port, m.lifetime = answer.external_port, max(answer.lifetime, 2)
        m.granted_at = self.clock.seconds()
        if answer.external_ip:
            self.external_ip = answer.external_ip

    async def _try_pcp(self, m: _Mapping, wanted: int) -> MapResult | None:
        """PCP's answer, or None when the gateway does not speak PCP (go NAT-PMP)."""
        try:
            answer = await self._ask(self._request(m, wanted, self.lifetime))
        except GatewayError:
            if self.version == "PCP":
                raise
            answer = VersionRefused(-1)  # no PCP answer at all: try NAT-PMP
        if isinstance(answer, VersionRefused):
            self._log.info("NAT-PMP: no PCP on {gw}; trying NAT-PMP", gw=self.gateway)
            self.version = "NAT-PMP"
            return None
        self.version = "PCP"
        assert isinstance(answer, MapResult)
        return answer

    async def _public_address(self) -> None:
        answer: PublicAddress | VersionRefused = await self._ask(NatPmpAddressRequest())
        if isinstance(answer, PublicAddress) and answer.ok:
            self._note_epoch(answer.epoch)
            self.external_ip = answer.external_ip

    def _note_epoch(self, epoch: int) -> None:
        now = self.clock.seconds()
        if self._epoch is not None and epoch_lost(*self._epoch, epoch, now):
            self._epoch_lost = True
        self._epoch = (epoch, now)

    def _retry_delay(self) -> float:
        return min(RETRY_AFTER, max(1.0, self.lifetime / 4))

    def _expire(self) -> None:
        """Forget mappings whose lifetime is over (nothing is advertised then)."""
        now = self.clock.seconds()
        for m in self._mappings():
            if now >= m.granted_at + m.lifetime:
                self._log.warn(
                    "NAT-PMP: the {proto} mapping of port {port} expired",
                    proto=PROTOCOL_NAMES[m.protocol],
                    port=m.external_port,
                )
                m.external_port = 0

    def _schedule(self, delay: float) -> None:
        if not self._stopped:
            self._renew_call = self.clock.callLater(delay, self._renew)

    def _renew(self) -> None:
        self._renew_call = None
        if not self._stopped:
            self._map_round()

    async def _remove(self, m: _Mapping) -> None:
        """Lifetime 0 for C{m} (RFC 6887 §15, RFC 6886 §3.4); failures are logged."""
        port, m.external_port = m.external_port, 0
        try:
            answer = await self._ask(self._request(m, 0, 0))
        except (GatewayError, CancelledError) as e:
            self._log.warn("NAT-PMP: removing port {port} failed: {error}", port=port, error=e)
            return
        if isinstance(answer, MapResult) and answer.ok:
            self._log.info(
                "NAT-PMP: removed the {proto} mapping of port {port}",
                proto=PROTOCOL_NAMES[m.protocol],
                port=port,
            )
        else:
            self._log.warn("NAT-PMP: the gateway refused removing port {port}", port=port)

    def stop(self) -> Deferred[None]:
        """Remove the mappings (if any) and close the socket."""
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self._stopped = True
        if self._renew_call is not None and self._renew_call.active():
            self._renew_call.cancel()
        self._renew_call = None
        if self._round is not None and not self._round.called:
            self._round.cancel()  # its request in flight; granted ports stay noted
        if self._socket is not None:
            for m in reversed(self._mappings()):
                await self._remove(m)
        port, self._port = self._port, None
        if port is not None:
            stopped = port.stopListening()
            if stopped is not None:
                await stopped
