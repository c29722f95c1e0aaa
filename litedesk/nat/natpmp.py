"""The wire format of PCP (RFC 6887) MAP and of NAT-PMP (RFC 6886), sans-IO.

C{litedesk-host --natpmp} asks the gateway for a port mapping with PCP
first and falls back to NAT-PMP, its predecessor, when the gateway answers
C{UNSUPP_VERSION} or not at all (L{litedesk.nat.natpmp_client} does the I/O).
No well-kept Python library speaks either protocol, and the part we need is
small: one request per mapping and its response.

Each request object knows its own encoding and recognises its response:
C{request.match(datagram)} returns the decoded response, L{VersionRefused}
when the gateway does not speak this version, or C{None} for anything that
is not an answer to this very request (garbage, truncated, another opcode,
another protocol or port, for PCP another mapping nonce).  Parsers never
raise: the datagrams come from the network.  Whether a datagram came from
the gateway at all is the transport's check (RFC 6886 §3.1, RFC 6887 §8.3).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = [
    "MAX_PCP_MESSAGE",
    "NATPMP_RESULTS",
    "NATPMP_VERSION",
    "PCP_RESULTS",
    "PCP_VERSION",
    "PROTOCOL_NAMES",
    "SERVER_PORT",
    "TCP",
    "UDP",
    "MapResult",
    "NatPmpAddressRequest",
    "NatPmpMapRequest",
    "PcpMapRequest",
    "PublicAddress",
    "VersionRefused",
    "epoch_lost",
]

#: The UDP port PCP and NAT-PMP servers listen on (RFC 6887 §19.1).
SERVER_PORT = 5351
PCP_VERSION = 2
NATPMP_VERSION = 0
#: IANA protocol numbers, as PCP carries them.
TCP = 6
UDP = 17
PROTOCOL_NAMES = {TCP: "TCP", UDP: "UDP"}
#: RFC 6887 §7: messages are at most 1100 bytes (a response may carry options).
MAX_PCP_MESSAGE = 1100

_RESPONSE = 0x80  # the R bit of the opcode byte
_PCP_MAP = 1
_PCP_HEADER = struct.Struct("!BBxxI16s")  # version, R|opcode, lifetime, client IP
_PCP_RESPONSE_HEADER = struct.Struct("!BBxBII12x")  # version, R|op, result, lifetime, epoch
_PCP_MAP_BODY = struct.Struct("!12sB3xHH16s")  # nonce, protocol, int. port, ext. port, ext. IP
_PCP_MAP_LENGTH = _PCP_HEADER.size + _PCP_MAP_BODY.size  # 60

_NATPMP_OP_ADDRESS = 0
_NATPMP_OPCODE = {UDP: 1, TCP: 2}
_NATPMP_MAP = struct.Struct("!BBxxHHI")  # version, opcode, int. port, ext. port, lifetime
_NATPMP_MAP_RESPONSE = struct.Struct("!BBHIHHI")  # ver, op, result, epoch, ports, lifetime
_NATPMP_ADDRESS_RESPONSE = struct.Struct("!BBHI4s")  # ver, op, result, epoch, address

#: RFC 6887 §7.4 result codes.
PCP_RESULTS = {
    0: "SUCCESS",
    1: "UNSUPP_VERSION",
    2: "NOT_AUTHORIZED",
    3: "MALFORMED_REQUEST",
    4: "UNSUPP_OPCODE",
    5: "UNSUPP_OPTION",
    6: "MALFORMED_OPTION",
    7: "NETWORK_FAILURE",
    8: "NO_RESOURCES",
    9: "UNSUPP_PROTOCOL",
    10: "USER_EX_QUOTA",
    11: "CANNOT_PROVIDE_EXTERNAL",
    12: "ADDRESS_MISMATCH",
    13: "EXCESSIVE_REMOTE_PEERS",
}
#: RFC 6886 §3.5 result codes.
NATPMP_RESULTS = {
    0: "SUCCESS",
    1: "UNSUPP_VERSION",
    2: "NOT_AUTHORIZED",
    3: "NETWORK_FAILURE",
    4: "NO_RESOURCES",
    5: "UNSUPP_OPCODE",
}
_UNSUPP_VERSION = 1


@dataclass(frozen=True)
class VersionRefused:
    """The gateway does not speak the version we sent (C{UNSUPP_VERSION}).

    @ivar version: the version the gateway answered with (0: NAT-PMP only).
    """

    version: int


@dataclass(frozen=True)
class MapResult:
    """A gateway's answer to a mapping request (success or not).

    @ivar result: the result code (0 is success); C{result_name} spells it.
    @ivar lifetime: seconds the mapping lasts (on an error: how long the
        error stands).
    @ivar epoch: the gateway's seconds since its mapping state began.
    @ivar external_ip: the external address (PCP only; C{""} for NAT-PMP,
        which tells it in L{PublicAddress}).
    """

    result: int
    result_name: str
    lifetime: int
    epoch: int
    protocol: int
    internal_port: int
    external_port: int
    external_ip: str = ""

    @property
    def ok(self) -> bool:
        return self.result == 0


@dataclass(frozen=True)
class PublicAddress:
    """NAT-PMP's answer to the external-address request (RFC 6886 §3.2)."""

    result: int
    result_name: str
    epoch: int
    external_ip: str

    @property
    def ok(self) -> bool:
        return self.result == 0


def _mapped_v6(ip: str) -> bytes:
    """C{ip} as PCP's 128-bit field: IPv4 as an IPv4-mapped IPv6 address (RFC 6887 §5)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return b"\0" * 10 + b"\xff\xff" + addr.packed
    return addr.packed


def _unmapped(packed: bytes) -> str:
    addr = ipaddress.IPv6Address(packed)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


def _refused_version(data: bytes, ours: int) -> VersionRefused | None:
    """A short UNSUPP_VERSION answer in another version's layout, or None.

    A NAT-PMP-only gateway answers any non-zero version with 8 bytes:
    version 0, opcode 128 (0 in some, after RFC 6886's erratum 3618), result
    1 (RFC 6886 §3.5).  A PCP server answers an unknown version with its own
    highest version and result 1 (RFC 6887 §9).  In both layouts the result
    then reads 1 as a 16-bit number at offset 2.
    """
    if len(data) < 8 or data[0] == ours or data[1] not in (0, _RESPONSE):
        return None
    if int.from_bytes(data[2:4], "big") != _UNSUPP_VERSION:
        return None
    return VersionRefused(data[0])


@dataclass(frozen=True)
class PcpMapRequest:
    """A PCP MAP request (RFC 6887 §11.1): map C{internal_port} of C{protocol}.

    @ivar nonce: 12 random bytes naming the mapping; a renewal or a removal
        of the mapping repeats them (RFC 6887 §11.2).
    @ivar client_ip: our address as the gateway sees the request's source
        (the server answers C{ADDRESS_MISMATCH} otherwise).
    @ivar suggested_port: the external port we would like (0: any).
    @ivar lifetime: seconds asked for; 0 removes the mapping.
    """

    nonce: bytes
    protocol: int
    internal_port: int
    suggested_port: int
    lifetime: int
    client_ip: str
    suggested_ip: str = "0.0.0.0"  # "no preference" (RFC 6887 §11.1)

    def encode(self) -> bytes:
        header = _PCP_HEADER.pack(PCP_VERSION, _PCP_MAP, self.lifetime, _mapped_v6(self.client_ip))
        body = _PCP_MAP_BODY.pack(
            self.nonce,
            self.protocol,
            self.internal_port,
            self.suggested_port,
            _mapped_v6(self.suggested_ip),
        )
        return header + body

    def match(self, data: bytes) -> MapResult | VersionRefused | None:
        """Our MAP response in C{data}, or L{VersionRefused}, or None (not ours)."""
        refused = _refused_version(data, PCP_VERSION)
        if refused is not None:
            return refused
        if not _PCP_MAP_LENGTH <= len(data) <= MAX_PCP_MESSAGE or len(data) % 4:
            return None
        version, opcode, result, lifetime, epoch = _PCP_RESPONSE_HEADER.unpack_from(data)
        if version != PCP_VERSION or opcode != _RESPONSE | _PCP_MAP:
            return None
        nonce, protocol, internal, external, ext_ip = _PCP_MAP_BODY.unpack_from(
            data, _PCP_HEADER.size
        )
        if (nonce, protocol, internal) != (self.nonce, self.protocol, self.internal_port):
            return None
        if result == _UNSUPP_VERSION:
            return VersionRefused(version)
        name = PCP_RESULTS.get(result, f"result {result}")
        return MapResult(
            result, name, lifetime, epoch, protocol, internal, external, _unmapped(ext_ip)
        )


def _natpmp_result(code: int) -> str:
    return NATPMP_RESULTS.get(code, f"result {code}")


@dataclass(frozen=True)
class NatPmpMapRequest:
    """A NAT-PMP mapping request (RFC 6886 §3.3); lifetime 0 removes it (§3.4)."""

    protocol: int
    internal_port: int
    suggested_port: int
    lifetime: int

    @property
    def opcode(self) -> int:
        return _NATPMP_OPCODE[self.protocol]

    def encode(self) -> bytes:
        return _NATPMP_MAP.pack(
            NATPMP_VERSION, self.opcode, self.internal_port, self.suggested_port, self.lifetime
        )

    def match(self, data: bytes) -> MapResult | VersionRefused | None:
        """Our mapping response in C{data}, or L{VersionRefused}, or None (not ours)."""
        if len(data) < 4 or data[0] != NATPMP_VERSION:
            return None
        result = int.from_bytes(data[2:4], "big")
        if result == _UNSUPP_VERSION and data[1] in (0, _RESPONSE, _RESPONSE | self.opcode):
            return VersionRefused(NATPMP_VERSION)
        if len(data) < _NATPMP_MAP_RESPONSE.size:
            return None
        _, opcode, result, epoch, internal, external, lifetime = _NATPMP_MAP_RESPONSE.unpack_from(
            data
        )
        if opcode != _RESPONSE | self.opcode or internal != self.internal_port:
            return None
        return MapResult(
            result, _natpmp_result(result), lifetime, epoch, self.protocol, internal, external
        )


@dataclass(frozen=True)
class NatPmpAddressRequest:
    """NAT-PMP's request for the gateway's external address (RFC 6886 §3.2)."""

    def encode(self) -> bytes:
        return bytes((NATPMP_VERSION, _NATPMP_OP_ADDRESS))

    def match(self, data: bytes) -> PublicAddress | VersionRefused | None:
        """The address response in C{data}, or L{VersionRefused}, or None."""
        if len(data) < 4 or data[0] != NATPMP_VERSION or data[1] not in (0, _RESPONSE):
            return None
        result = int.from_bytes(data[2:4], "big")
        if result == _UNSUPP_VERSION:
            return VersionRefused(NATPMP_VERSION)
        if len(data) < _NATPMP_ADDRESS_RESPONSE.size or data[1] != _RESPONSE:
            return None
        _, _, result, epoch, packed = _NATPMP_ADDRESS_RESPONSE.unpack_from(data)
        address = str(ipaddress.IPv4Address(packed))
        return PublicAddress(result, _natpmp_result(result), epoch, address)


def epoch_lost(previous_epoch: int, previous_time: float, epoch: int, now: float) -> bool:
    """Whether the gateway lost its mappings since its previous answer.

    RFC 6887 §8.5 (as RFC 6886 §3.6): the gateway's epoch counts seconds
    since its mapping state began.  It went backwards, or it advanced much
    less or much more than our own clock did (by more than 2 s plus 1/16 of
    the interval), means a reboot or a state loss: every mapping must be
    requested again.

    @param previous_epoch: the epoch of the previous answer, received at
        C{previous_time} (our clock, seconds).
    @param epoch: the epoch of the answer received at C{now}.
    """
    if epoch < previous_epoch - 1:
        return True
    ours = now - previous_time
    theirs = epoch - previous_epoch
    return ours + 2 < theirs - theirs / 16 or theirs + 2 < ours - ours / 16
