"""A PCP / NAT-PMP gateway on loopback, written from RFC 6887 and RFC 6886's figures.

For the tests of the host's NAT-PMP/PCP client (L{litedesk.nat.natpmp_mapper})
and service: independent of the client's codec (L{litedesk.nat.natpmp}), so
that a mistake shared by encoder and decoder cannot pass unnoticed.
L{pcp_response} and L{natpmp_map_response} lay out answers as the RFCs draw
them; L{FakeGateway} answers requests, keeps its mappings and its epoch (on
the test's clock), and can refuse PCP or stay silent.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol

__all__ = [
    "EXT_IP",
    "MAPPED_EXT_IP",
    "NONCE",
    "TCP",
    "UDP",
    "FakeGateway",
    "natpmp_map_response",
    "pcp_response",
]

TCP = 6
UDP = 17
NONCE = bytes(range(1, 13))
EXT_IP = "198.51.100.11"
MAPPED_EXT_IP = b"\0" * 10 + b"\xff\xff" + bytes((198, 51, 100, 11))


def pcp_response(
    nonce: bytes = NONCE,
    protocol: int = UDP,
    internal: int = 21118,
    external: int = 21118,
    lifetime: int = 7200,
    epoch: int = 1000,
    result: int = 0,
    ext_ip: bytes = MAPPED_EXT_IP,
) -> bytes:
    """A PCP MAP response laid out as RFC 6887 §7.2 and §11.1 draw it."""
    header = bytes((2, 0x81, 0, result)) + struct.pack("!II", lifetime, epoch) + b"\0" * 12
    body = nonce + bytes((protocol, 0, 0, 0)) + struct.pack("!HH", internal, external) + ext_ip
    return header + body


def natpmp_map_response(
    opcode: int = 1, internal: int = 21118, external: int = 21118, lifetime: int = 7200
) -> bytes:
    """A NAT-PMP mapping response as RFC 6886 §3.3 draws it (result 0, epoch 500)."""
    return struct.pack("!BBHIHHI", 0, 128 + opcode, 0, 500, internal, external, lifetime)


class FakeGateway(DatagramProtocol):
    """A PCP / NAT-PMP server on loopback, from RFC 6887 and RFC 6886's figures.

    C{speaks}: "pcp" (PCP and NAT-PMP), "natpmp" (answers PCP with
    UNSUPP_VERSION), "natpmp-only-silent" (ignores PCP), "silent".
    """

    def __init__(self, speaks: str = "pcp", clock: IReactorTime | None = None) -> None:
        self.speaks = speaks
        self.got: list[bytes] = []
        self.maps: dict[int, tuple[int, int]] = {}  # protocol -> (internal, external)
        self.grant: dict[int, int] = {}  # protocol -> external port it gets instead
        self.lifetime: int | None = None  # grant this instead of what is asked
        self.clock = clock
        self.booted = -1000.0  # the epoch counts seconds since then, on the test's clock
        self.epoch_step = 0  # added to the epoch after each answer (a broken gateway)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.got.append(data)
        if self.speaks == "silent" or len(data) < 2:
            return
        if data[0] == 2:
            answer = self.pcp(data)
        elif data[0] == 0:
            answer = self.natpmp(data)
        else:
            return
        if answer:
            self.transport.write(answer, addr)  # type: ignore[union-attr]
            self.booted -= self.epoch_step

    @property
    def epoch(self) -> int:
        now = self.clock.seconds() if self.clock is not None else 0.0
        return int(now - self.booted)

    def restart(self) -> None:
        """Lose every mapping; the epoch starts again from 0."""
        self.maps.clear()
        self.booted = self.clock.seconds() if self.clock is not None else 0.0

    def _grant(self, protocol: int, internal: int, suggested: int, lifetime: int) -> int:
        if lifetime == 0:
            self.maps.pop(protocol, None)
            return 0
        external = self.grant.get(protocol, suggested or internal)
        self.maps[protocol] = (internal, external)
        return external

    def pcp(self, data: bytes) -> bytes:
        if self.speaks == "natpmp-only-silent":
            return b""
        if self.speaks == "natpmp":
            return struct.pack("!BBHI", 0, 128, 1, self.epoch)
        (lifetime,) = struct.unpack_from("!I", data, 4)
        nonce, protocol = data[24:36], data[36]
        internal, suggested = struct.unpack_from("!HH", data, 40)
        lifetime = self.lifetime if self.lifetime is not None and lifetime else lifetime
        external = self._grant(protocol, internal, suggested, lifetime)
        return pcp_response(nonce, protocol, internal, external, lifetime, self.epoch)

    def natpmp(self, data: bytes) -> bytes:
        opcode = data[1]
        if opcode == 0:
            return struct.pack("!BBHI", 0, 128, 0, self.epoch) + bytes((198, 51, 100, 11))
        internal, suggested, lifetime = struct.unpack_from("!HHI", data, 4)
        lifetime = self.lifetime if self.lifetime is not None and lifetime else lifetime
        protocol = UDP if opcode == 1 else TCP
        external = self._grant(protocol, internal, suggested, lifetime)
        return struct.pack("!BBHIHHI", 0, 128 + opcode, 0, self.epoch, internal, external, lifetime)

    def versions(self) -> list[int]:
        return [d[0] for d in self.got]

    def lifetimes(self) -> list[int]:
        """The lifetime each PCP MAP request asked for."""
        return [struct.unpack_from("!I", d, 4)[0] for d in self.got if d[0] == 2]
