"""How many hosts are online, kept up to date so that asking costs no walk.

A host is online while its stream is bound (L{litedesk.rendezvous.registry.StreamHosts})
or for C{REG_TIMEOUT} seconds after its last registration
(L{litedesk.rendezvous.registry.Peer.online}).  Counting that by walking
every peer costs about a second at 1,000,000 registered hosts, too slow for
a C{/metrics} scrape; so L{OnlineHosts} keeps the registered peers in an
C{OrderedDict} in the order of their last registration (each registration
moves its peer to the end: O(1)), and a count drops the stale ones from the
front, each peer at most once per registration.  Hosts on streams are
counted apart, and the peers that are both (bound and recently registered)
once.

The registry writes C{Peer.last_reg} only through L{OnlineHosts.seen} and
L{OnlineHosts.gone}, and C{Peer.channel} changes are reported with
L{OnlineHosts.bound} and L{OnlineHosts.unbound}: the order of the dict is
then the order of C{last_reg}, which is what makes pruning from the front
exact.  Memory: one entry per peer at most (the peers already exist).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litedesk.rendezvous.registry import Peer

__all__ = ["OnlineHosts"]


class OnlineHosts:
    """The online count of a registry's peers, sans-IO (callers pass the time).

    @param timeout: seconds a registration keeps a host online (C{REG_TIMEOUT}).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # Peers by last registration, oldest first; stale ones linger at the
        # front until the next count.
        self._fresh: OrderedDict[Peer, None] = OrderedDict()
        self._bound = 0
        # Peers both bound to a stream and in _fresh: counted once.
        self._both = 0
        #: Called with a peer that comes online (a registration after none for
        #: C{timeout}, or a stream bound): a cluster node announces it there.
        self.arrived: Callable[[Peer], None] | None = None
        #: Peers whose next registration counts as an arrival even though
        #: they are online (another node announced them meanwhile).
        self.recheck: set[Peer] = set()

    def seen(self, peer: Peer, now: float) -> None:
        """C{peer} registered at C{now} (sets C{last_reg}); O(1), the heartbeat path."""
        if self.arrived is not None and peer.channel is None:
            last = peer.last_reg
            if last is None or now - last >= self.timeout or peer in self.recheck:
                self.recheck.discard(peer)
                self.arrived(peer)
        peer.last_reg = now
        fresh = self._fresh
        try:
            fresh.move_to_end(peer)
        except KeyError:
            fresh[peer] = None
            if peer.channel is not None:
                self._both += 1

    def gone(self, peer: Peer) -> None:
        """C{peer} has no registration any more (sets C{last_reg} to None)."""
        peer.last_reg = None
        if self._fresh.pop(peer, False) is None and peer.channel is not None:
            self._both -= 1

    def bound(self, peer: Peer) -> None:
        """C{peer.channel} went from None to a stream."""
        self._bound += 1
        if self.arrived is not None:
            self.arrived(peer)
        if peer in self._fresh:
            self._both += 1

    def unbound(self, peer: Peer) -> None:
        """C{peer.channel} is about to go back to None (call before clearing it)."""
        self._bound -= 1
        if peer in self._fresh:
            self._both -= 1

    def count(self, now: float) -> int:
        """Hosts online at C{now}: amortised O(1), each stale entry leaves once.

        One count may still pay for many: the first after N hosts went silent
        drops N entries, some 0.5 us each (half a second if 1,000,000 hosts
        fall silent at once; bench/api.py measures the case).
        """
        fresh = self._fresh
        timeout = self.timeout
        stale = 0
        for peer in fresh:
            last = peer.last_reg
            # The very test of Peer.online, so both agree at the boundary.
            if last is not None and now - last < timeout:
                break
            stale += 1
        popitem = fresh.popitem
        for _ in range(stale):
            peer, _ = popitem(last=False)
            if peer.channel is not None:
                self._both -= 1
        return len(fresh) + self._bound - self._both
