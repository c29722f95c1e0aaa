"""Hypothesis strategies shared by the wire-layer tests."""

from __future__ import annotations

import ipaddress
import itertools
import random

from hypothesis import strategies as st

from litedesk.wire.bytescodec import MAX_ENCODABLE

# Lengths where BytesCodec switches header size, plus their neighbours.
HEADER_BOUNDARIES = (0, 1, 0x3E, 0x3F, 0x40, 0x41, 0x3FFE, 0x3FFF, 0x4000, 0x4001)

MAX_PAYLOAD = 70_000

u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
ports = st.integers(min_value=0, max_value=0xFFFF)


@st.composite
def payloads(draw: st.DrawFn, max_size: int = MAX_PAYLOAD) -> bytes:
    """A payload of 0..C{max_size} bytes, often at a header-size boundary.

    Large payloads are expanded from a drawn seed so that Hypothesis stays fast
    and still shrinks (to a shorter length or a smaller seed).
    """
    size = draw(
        st.one_of(
            st.sampled_from([n for n in HEADER_BOUNDARIES if n <= max_size]),
            st.integers(min_value=0, max_value=max_size),
        )
    )
    if size <= 64 and draw(st.booleans()):
        return draw(st.binary(min_size=size, max_size=size))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return random.Random(seed).randbytes(size)


payload_lists = st.lists(payloads(), min_size=0, max_size=4)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """C{data} cut into consecutive non-empty chunks at arbitrary points."""
    if not data:
        return draw(st.sampled_from([[], [b""]]))
    if len(data) <= 64 and draw(st.booleans()):
        return [data[i : i + 1] for i in range(len(data))]
    cuts = draw(
        st.lists(st.integers(min_value=1, max_value=len(data) - 1), max_size=24, unique=True)
        if len(data) > 1
        else st.just([])
    )
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# Decoder limits worth exercising: tiny, typical, and the unlimited default.
max_lengths = st.sampled_from([0, 1, 63, 64, 65536, MAX_ENCODABLE])

ipv4_hosts = st.ip_addresses(v=4).map(str)
ipv6_hosts = st.ip_addresses(v=6).map(str)

# IPv6 hosts RustDesk treats specially: v4-mapped, v4-compatible, loopback, unspecified.
special_ipv6_hosts = st.one_of(
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.ip_addresses(v=4).map(lambda a: str(ipaddress.IPv6Address(bytes(12) + a.packed))),
    st.sampled_from(["::", "::1", "::2", "ef::fe", "::ffff:0:0", "fe80::1"]),
)

hosts = st.one_of(ipv4_hosts, ipv6_hosts, special_ipv6_hosts)
addresses = st.tuples(hosts, ports)
