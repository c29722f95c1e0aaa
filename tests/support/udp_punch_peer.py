"""One side of a UDP punch as a program, for the NAT lab (tests/test_nat_udp_lab.py).

Run inside a lab namespace, it does what a host or viewer does around
L{litedesk.nat.udp_puncher.UdpPuncher}, with a tiny reflector standing in for
the rendezvous server:

  1. picks the plan for its NAT and the peer's (C{--own}, C{--peer}:
     C{cone} or C{symmetric}); both symmetric prints C{{"plan": "relay"}} and
     exits without opening a socket;
  2. opens the plan's sockets and asks the reflector (L{REFLECTOR}) from
     socket 0 which public address it has; prints C{{"mapped": "ip:port"}};
  3. reads the peer's C{"ip port"} from stdin (what the rendezvous server
     would tell it), punches, and checks the path as QUIC would use it: the
     viewer sends pings on the winning socket, the host answers them (the
     host's punch keeps answering repeated SELECTs meanwhile);
  4. prints C{{"ok": ..., "data": ..., "remote": ..., "elapsed": ...}} and exits.

Structured log events go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogBeginner, textFileLogObserver

from litedesk.nat.udp_probe import plan_for, punch_token
from litedesk.nat.udp_puncher import UdpPuncher

#: A UDP reflector: answers every datagram with the "ip:port" it came from.
REFLECTOR = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, (ip, port) = s.recvfrom(2048)
    s.sendto(("%s:%d" % (ip, port)).encode(), (ip, port))
"""

PING, PONG = b"lab ping", b"lab pong"


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


class _PathCheck(DatagramProtocol):
    """Takes over the winning socket as QuicHost/QuicViewer.attach would.

    Punch datagrams still go to the puncher (L{UdpPuncher.late_datagram}),
    so the host keeps confirming its choice to a viewer whose SELECT_ACK was
    lost.
    """

    noisy = False

    def __init__(self, puncher: UdpPuncher, remote: tuple[str, int]) -> None:
        self.puncher = puncher
        self.remote = remote
        self.got: defer.Deferred[None] = defer.Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.puncher.late_datagram(datagram, tuple(addr)):
            return
        if datagram == PING and tuple(addr) == self.remote:
            assert self.transport is not None
            self.transport.write(PONG, addr)
            if not self.got.called:
                self.got.callback(None)
        elif datagram == PONG and tuple(addr) == self.remote and not self.got.called:
            self.got.callback(None)


async def _ask_reflector(reactor: Any, puncher: UdpPuncher, reflector: tuple[str, int]) -> str:
    answer: defer.Deferred[str] = defer.Deferred()

    def unclaimed(index: int, data: bytes, source: tuple[str, int]) -> None:
        if source == reflector and not answer.called:
            answer.callback(data.decode())

    puncher.unclaimed = unclaimed
    for _ in range(25):
        puncher.send_raw(0, b"where am I", reflector)
        await task.deferLater(reactor, 0.2, lambda: None)
        if answer.called:
            break
    puncher.unclaimed = None
    return await answer.addTimeout(0.1, reactor)


async def _check_path(
    reactor: Any, puncher: UdpPuncher, role: str, port: IListeningPort, remote: Any
) -> bool:
    check = _PathCheck(puncher, tuple(remote))
    port.protocol = check  # type: ignore[attr-defined]
    check.makeConnection(port)  # type: ignore[arg-type]
    for _ in range(60):
        if check.got.called:
            break
        if role == "viewer":
            port.write(PING, tuple(remote))  # type: ignore[attr-defined]
        await task.deferLater(reactor, 0.05, lambda: None)
    await defer.maybeDeferred(port.stopListening)
    return check.got.called


async def _main(reactor: Any, args: argparse.Namespace) -> None:
    plan = plan_for(args.own == "symmetric", args.peer == "symmetric")
    if plan is None:
        _say(plan="relay")
        return
    puncher = UdpPuncher(reactor, punch_token(args.host_id), plan.sockets)
    puncher.open()
    ip, _, port = args.reflector.rpartition(":")
    _say(mapped=await _ask_reflector(reactor, puncher, (ip, int(port))), sockets=plan.sockets)
    line = await threads.deferToThread(sys.stdin.readline)
    peer_ip, peer_port = line.split()
    result = await puncher.run(args.role, peer_ip, [int(peer_port)], plan.spray, args.window)
    if result is None:
        _say(ok=False, foreign=puncher.foreign)
        return
    data = await _check_path(reactor, puncher, args.role, result.port, result.remote)
    remote = f"{result.remote[0]}:{result.remote[1]}"
    _say(ok=True, data=data, remote=remote, elapsed=result.elapsed, probes=result.probes_sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=("host", "viewer"), required=True)
    parser.add_argument("--own", choices=("cone", "symmetric"), required=True)
    parser.add_argument("--peer", choices=("cone", "symmetric"), required=True)
    parser.add_argument("--reflector", required=True, help="ip:port")
    parser.add_argument("--host-id", default="lab-host")
    parser.add_argument("--window", type=float, default=8.0)
    args = parser.parse_args()
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    task.react(lambda reactor: defer.ensureDeferred(_main(reactor, args)))


if __name__ == "__main__":
    main()
