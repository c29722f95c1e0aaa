"""The Twisted side of UDP hole punching: sockets and the reactor's clock.

L{UdpPuncher} binds the UDP sockets of one attempt (1, or
L{litedesk.nat.udp_probe.HARD_SOCKETS} behind a symmetric NAT), lets the
caller use socket 0 for the rendezvous exchange (L{UdpPuncher.send_raw};
answers that are not probes go to L{UdpPuncher.unclaimed}), then runs
L{litedesk.nat.udp_probe.UdpPunch} on the reactor until it has a winner, the
window ends or the peer turns out to be foreign (RustDesk's own UDP punch).
The winning port is handed over still bound and still answering the peer's
repeated SELECTs; the caller replaces its protocol with
C{QuicHost.attach} / C{QuicViewer.attach}.  Every other socket is closed.

The protocol of the exchange, and why it reaches through one symmetric NAT,
is in L{litedesk.nat.udp_probe}'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from litedesk.nat.udp_probe import HARD_SOCKETS, Address, Send, UdpPunch, decode

_log = Logger(namespace="litedesk.nat.udp_puncher")


@dataclass
class PunchResult:
    """A punched path: C{port} (ours, still bound) reaches C{remote}.

    C{remote} is in the form C{port.write} takes (IPv4-mapped on a
    dual-stack socket bound to C{::}).

    @ivar elapsed: seconds from L{UdpPuncher.run} to the winner.
    @ivar probes_sent: probes sent by this side (sprayed ones included).
    """

    port: IListeningPort
    remote: Address
    elapsed: float
    probes_sent: int


def plain_address(addr: Any) -> Address:
    """C{(ip, port)} with an IPv4-mapped IPv6 address (a dual-stack socket's) unmapped."""
    ip = str(addr[0])
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[len("::ffff:") :]
    return (ip, int(addr[1]))


class _PunchSocket(DatagramProtocol):
    """Hands what one socket receives to the puncher, with the socket's index."""

    noisy = False  # 256 of them behind a symmetric NAT

    def __init__(self, puncher: UdpPuncher, index: int) -> None:
        self.puncher = puncher
        self.index = index

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            self.puncher._received(self.index, datagram, plain_address(addr))
        except Exception:
            # Nothing a peer sends may stop this socket's reader.
            _log.failure("Dropping a datagram from {peer}", peer=addr)


class UdpPuncher:
    """One punch attempt over UDP sockets of our own.

    @ivar foreign: the peer answered like RustDesk (not a LiteDesk probe).
    @ivar unclaimed: called with C{(socket index, data, source)} for every
        datagram that is not a probe and did not come from the peer while
        punching (e.g. the rendezvous server's answers to L{send_raw}).
    """

    def __init__(self, reactor: Any, token: bytes, sockets: int = 1, interface: str = "") -> None:
        if not 1 <= sockets <= HARD_SOCKETS:
            raise ValueError(f"1 to {HARD_SOCKETS} sockets, not {sockets}")
        self.reactor = reactor
        self.token = token
        self.sockets = sockets
        self.interface = interface
        self._ports: dict[int, IListeningPort] = {}
        self.foreign = False
        self.unclaimed: Callable[[int, bytes, Address], None] | None = None
        self.send_errors = 0
        self._punch: UdpPunch | None = None
        self._winner_port: IListeningPort | None = None
        self._result: Deferred[PunchResult | None] | None = None
        self._timer: IDelayedCall | None = None
        self._window: IDelayedCall | None = None
        self._started_at = 0.0

    def open(self) -> list[IListeningPort]:
        """Bind the sockets (port 0); [0] is the one the rendezvous server observes."""
        if self._ports:
            raise RuntimeError("the sockets are open already")
        try:
            for index in range(self.sockets):
                protocol = _PunchSocket(self, index)
                port = self.reactor.listenUDP(0, protocol, interface=self.interface)
                self._ports[index] = port
        except BaseException:
            self.close()
            raise
        return list(self._ports.values())

    @property
    def ports(self) -> list[IListeningPort]:
        """The sockets still open (only the winner once a punch succeeded)."""
        return list(self._ports.values())

    @property
    def punch(self) -> UdpPunch | None:
        """The state machine of the run (None before L{run})."""
        return self._punch

    def send_raw(self, index: int, data: bytes, addr: Address) -> None:
        """Send C{data} from socket C{index} (e.g. a rendezvous message)."""
        self._write(Send(index, addr, data))

    def _socket_address(self, addr: Address) -> Address:
        """C{addr} as the sockets take it: IPv4-mapped on dual-stack (C{::}) sockets."""
        if ":" in self.interface and "." in addr[0] and ":" not in addr[0]:
            return (f"::ffff:{addr[0]}", addr[1])
        return addr

    def _write(self, send: Send) -> None:
        port = self._ports.get(send.socket)
        if port is None:
            return
        try:
            port.write(send.payload, self._socket_address(send.address))  # type: ignore[attr-defined]
        except Exception as e:
            # OSError (a route or firewall refusing one destination), or
            # twisted.internet.error's InvalidAddressError (an address of the
            # other family): one failed send must not end the punch.
            self.send_errors += 1
            _log.debug("Punch send to {to} failed: {why}", to=send.address, why=e)

    def run(
        self,
        role: str,
        peer_ip: str,
        peer_ports: Sequence[int],
        spray: bool,
        window: float,
    ) -> Deferred[PunchResult | None]:
        """Punch for at most C{window} seconds.

        @return: a Deferred firing with the L{PunchResult}, or None when the
            window ended or the peer is foreign (then all sockets are closed).
            Cancelling it (another path won) stops the punch and closes every
            socket, the winner's too if it was not handed out yet.
        """
        if self._punch is not None:
            raise RuntimeError("a puncher runs once")
        if not self._ports:
            self.open()
        now = self.reactor.seconds()
        self._started_at = now
        self._punch = UdpPunch(
            role=role,
            token=self.token,
            sockets=self.sockets,
            peer_ip=peer_ip,
            peer_ports=peer_ports,
            spray=spray,
            now=now,
        )
        self._result = Deferred(self._cancel)
        self._window = self.reactor.callLater(window, self._window_over)
        self._send_all(self._punch.start(now))
        self._schedule()
        return self._result

    # -- driving the state machine -------------------------------------------------

    def _send_all(self, sends: list[Send]) -> None:
        for send in sends:
            self._write(send)

    def _schedule(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        punch = self._punch
        if punch is None:
            return
        if punch.finished:
            self._finish()
            return
        deadline = punch.next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - self.reactor.seconds())
            self._timer = self.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._punch is not None:
            self._send_all(self._punch.tick(self.reactor.seconds()))
            self._schedule()

    def _received(self, index: int, data: bytes, source: Address) -> None:
        punch = self._punch
        if punch is None:
            self._pass_on(index, data, source)
            return
        junk = punch.junk
        self._send_all(punch.received(index, data, source, self.reactor.seconds()))
        if punch.junk != junk and source[0] != punch.peer_ip:
            self._pass_on(index, data, source)
        if self._result is not None:
            self._schedule()

    def _pass_on(self, index: int, data: bytes, source: Address) -> None:
        if self.unclaimed is not None:
            self.unclaimed(index, data, source)

    def _window_over(self) -> None:
        self._window = None
        self._finish()

    def _finish(self) -> None:
        """Hand out the result once: the winner, or None (and close everything)."""
        result, self._result = self._result, None
        punch = self._punch
        if result is None or punch is None:
            return
        self._stop_timers()
        elapsed = self.reactor.seconds() - self._started_at
        self.foreign = punch.foreign
        outcome: PunchResult | None = None
        if punch.winner is not None:
            index, remote = punch.winner
            self._winner_port = self._ports[index]
            outcome = PunchResult(
                self._winner_port, self._socket_address(remote), elapsed, punch.probes_sent
            )
        self._log_outcome(punch, elapsed)
        # The result comes once the other sockets are really closed (a
        # stopListening completes on the next reactor turn).
        closed = self._close_ports(keep=self._winner_port)
        closed.addBoth(lambda _: None if result.called else result.callback(outcome))

    def _stop_timers(self) -> None:
        for call in (self._timer, self._window):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._window = None

    def _cancel(self, result: Deferred[PunchResult | None]) -> None:
        """The caller gave up on this punch (another path won): stop, close everything."""
        self._result = None
        self._stop_timers()
        self._winner_port = None
        self._close_ports(keep=None)
        _log.info("UDP punch cancelled")

    def late_datagram(self, data: bytes, source: Address) -> bool:
        """For the new owner of the winning port: let the punch answer what is its own.

        A host whose SELECT_ACK was lost gets the viewer's SELECT again after
        QUIC took the port; passing it here answers it.  Returns whether
        C{data} was a punch datagram (then the owner should drop it).
        """
        punch = self._punch
        if punch is None or punch.winner is None or decode(data) is None:
            return False
        self._send_all(punch.received(punch.winner[0], data, source, self.reactor.seconds()))
        return True

    def _log_outcome(self, punch: UdpPunch, elapsed: float) -> None:
        _log.info(
            "UDP punch as {role} to {peer}: winner {winner} after {elapsed:.3f} s, "
            "{probes} probes sent over {sockets} socket(s), foreign {foreign}",
            role=punch.role,
            peer=punch.peer_ip,
            winner=punch.winner,
            elapsed=elapsed,
            probes=punch.probes_sent,
            sockets=punch.sockets,
            foreign=punch.foreign,
            junk=punch.junk,
            strangers=punch.strangers,
            wrong_token=punch.wrong_token,
            stale=punch.stale,
            replies_dropped=punch.replies_dropped,
            send_errors=self.send_errors,
        )

    def _close_ports(self, keep: IListeningPort | None) -> Deferred[Any]:
        stopping = []
        for index, port in list(self._ports.items()):
            if port is not keep:
                del self._ports[index]
                stopping.append(maybeDeferred(port.stopListening))
        return gatherResults(stopping, consumeErrors=True)

    def close(self) -> None:
        """Stop punching (the run gives None) and close every socket but a winner handed out."""
        self._finish()
        self._close_ports(keep=self._winner_port)
