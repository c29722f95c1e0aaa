"""The viewer's rendezvous connection for a punch request, and its NAT test.

RustDesk's C{Client::_start} (docs/protocol.rst §7.3-7.4) opens the
connection that carries C{PunchHoleRequest} from a fresh shared
(SO_REUSEPORT) local port, the one it later punches from, and tests its NAT
type while it connects.  A viewer that sends a sign-in token keys that
connection first (L{litedesk.viewer.secure_rendezvous}).  Kept apart from
L{litedesk.viewer.route}, which decides what to do with the answers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from litedesk.nat.nattype import NAMES, SYMMETRIC, UNKNOWN, probe_nat_type
from litedesk.nat.punch import open_rendezvous_from
from litedesk.session.links import LinkError, RendezvousLink
from litedesk.viewer.nat_cache import NatCache
from litedesk.viewer.refusals import ConnectError
from litedesk.viewer.secure_rendezvous import secure_link
from litedesk.wire.address import Address

__all__ = ["NAT_TEST_TIMEOUT", "open_for_punch", "own_nat_type"]

NAT_TEST_TIMEOUT = 1.5
_log = Logger(namespace="litedesk.viewer.route")


def _ms(reactor: Any, t0: float) -> int:
    return int((reactor.seconds() - t0) * 1000)


async def own_nat_type(reactor: Any, server: tuple[str, int]) -> int:
    """Our NAT type (docs/protocol.rst §7.4), or UNKNOWN_NAT when the test gets no answer."""
    t0 = reactor.seconds()
    try:
        probe = await probe_nat_type(reactor, server, timeout=NAT_TEST_TIMEOUT)
    except (LinkError, OSError) as e:
        _log.info("NAT test failed after {ms} ms: {error}", ms=_ms(reactor, t0), error=e)
        return UNKNOWN
    _log.info("NAT test: {nat} ({ms} ms)", nat=NAMES[probe.nat_type], ms=_ms(reactor, t0))
    return probe.nat_type


async def open_for_punch(
    reactor: Any,
    server_ip: tuple[str, int],
    force_relay: bool,
    nat_test: bool,
    server_pk: bytes | None = None,
    nat_cache: NatCache | None = None,
) -> tuple[RendezvousLink, Address, int]:
    """Open the rendezvous link from a fresh port; our NAT type, as C{nat_type} encodes it.

    The NAT test runs while we connect to the rendezvous server, unless
    C{nat_cache} still knows the answer on this network.

    @param server_pk: key the link with this server key (a token will ride on it).
    """
    own_nat: int
    nat_d: Deferred[int] | None = None
    cached = nat_cache.get(server_ip) if nat_cache is not None and not force_relay else None
    if force_relay:
        own_nat = SYMMETRIC  # as RustDesk encodes it: the host goes to the relay
    elif cached is not None:
        own_nat = cached
        _log.info("NAT type {nat} (tested earlier on this network)", nat=NAMES[cached])
    elif nat_test:
        nat_d = ensureDeferred(own_nat_type(reactor, server_ip))
    else:
        own_nat = UNKNOWN
    try:
        link, local = await open_rendezvous_from(reactor, server_ip)
    except LinkError as e:
        if nat_d is not None:
            await nat_d
        raise ConnectError("cannot reach rendezvous server", str(e)) from None
    if nat_d is not None:
        own_nat = await nat_d
        if nat_cache is not None:
            nat_cache.put(server_ip, own_nat)
    if server_pk is not None:
        await secure_link(reactor, link, server_pk)
    return link, local, own_nat
