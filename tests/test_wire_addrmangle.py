"""Tests for L{litedesk.wire.addrmangle}: RustDesk's AddrMangle endpoint encoding.

Vectors for docs/protocol.rst §3.3 and §9 item 2, computed from RustDesk's code.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.wire.addrmangle import decode, encode, is_unspecified, normalize, normalize_host
from tests import strategies

# (address, tm, mangled hex) from the §3.3 table.
IPV4_VECTORS = [
    (("192.168.16.32", 21116), 0, "7c520000000080512140"),
    (("192.168.16.32", 21116), 0x12345678, "f4a8f0ac682470fe8964"),
    (("1.2.3.4", 80), 0x18202240, "90228044403082484638"),
    (("127.0.0.1", 8080), 0xFFFFFFFF, "8f1ffffffffffd00000202"),
    (("10.0.0.1", 65535), 0xABCDEF01, "00ef03de9b5717de9b5901"),
    (("0.0.0.0", 0), 0, ""),
]

IPV6_VECTOR = (("2001:db8::1", 8080), "20010db8000000000000000000000001901f")


class EncodeTests(SynchronousTestCase):
    def test_ipv4_table(self) -> None:
        """
        Each IPv4 row of §3.3 mangles to exactly the listed bytes for the
        listed timestamp, including the empty encoding of 0.0.0.0:0 at tm=0.
        """
        for addr, tm, mangled in IPV4_VECTORS:
            with self.subTest(addr=addr, tm=tm):
                self.assertEqual(encode(addr, tm=tm).hex(), mangled)

    def test_ipv6(self) -> None:
        """
        An IPv6 endpoint is its 16 address bytes then the port as a
        little-endian u16: always 18 bytes, independent of the clock.
        """
        addr, mangled = IPV6_VECTOR
        self.assertEqual(encode(addr).hex(), mangled)
        self.assertEqual(encode(addr, tm=0x12345678).hex(), mangled)

    def test_clock(self) -> None:
        """
        Without C{tm} the current time in microseconds, truncated to 32
        bits, is used.
        """
        mangled = encode(("192.168.16.32", 21116), now_us=lambda: (7 << 32) | 0x12345678)
        self.assertEqual(mangled.hex(), "f4a8f0ac682470fe8964")

    def test_real_clock_round_trips(self) -> None:
        """
        With the real clock, the mangled address decodes back to itself.
        """
        self.assertEqual(decode(encode(("203.0.113.9", 21116))), ("203.0.113.9", 21116))

    def test_mapped_ipv6_encodes_as_ipv4(self) -> None:
        """
        A dual-stack listener's C{::ffff:a.b.c.d} peer is mangled as the IPv4
        address (so it gets the IPv4 encoding of §3.3, not 18 bytes).
        """
        self.assertEqual(
            encode(("::ffff:192.168.16.32", 21116), tm=0).hex(), "7c520000000080512140"
        )
        self.assertEqual(encode(("::192.168.16.32", 21116), tm=0).hex(), "7c520000000080512140")


class DecodeTests(SynchronousTestCase):
    def test_ipv4_table(self) -> None:
        """
        Each IPv4 row of §3.3 decodes to its address and port.
        """
        for addr, _tm, mangled in IPV4_VECTORS:
            with self.subTest(mangled=mangled):
                self.assertEqual(decode(bytes.fromhex(mangled)), addr)

    def test_ipv6(self) -> None:
        """
        An 18-byte input decodes as IPv6 address and little-endian port.
        """
        addr, mangled = IPV6_VECTOR
        self.assertEqual(decode(bytes.fromhex(mangled)), addr)

    def test_empty(self) -> None:
        """
        Empty bytes (an absent address field) decode to 0.0.0.0:0, which
        counts as unspecified.
        """
        self.assertEqual(decode(b""), ("0.0.0.0", 0))
        self.assertTrue(is_unspecified(decode(b"")))

    def test_wrong_long_lengths(self) -> None:
        """
        Inputs longer than 16 bytes that are not 18 bytes decode to [::]:0,
        as RustDesk does (§9 item 2: 17 bytes).
        """
        for length in (17, 19, 32):
            with self.subTest(length=length):
                self.assertEqual(decode(b"\x11" * length), ("::", 0))
        self.assertTrue(is_unspecified(decode(b"\x11" * 17)))

    def test_upstream_mangle2(self) -> None:
        """
        Upstream's test_mangle2: C{[::ffff:127.0.0.1]:8080} and
        C{[::127.0.0.1]:8080} both normalise, encode and decode to
        127.0.0.1:8080.
        """
        for host in ("::ffff:127.0.0.1", "::127.0.0.1"):
            with self.subTest(host=host):
                self.assertEqual(normalize((host, 8080)), ("127.0.0.1", 8080))
                self.assertEqual(decode(encode((host, 8080), tm=0x5555AAAA)), ("127.0.0.1", 8080))

    def test_upstream_ipv6_round_trips(self) -> None:
        """
        Upstream's IPv6 cases stay IPv6: C{[ef::fe]:8080}, C{[::1]:8080}
        (loopback is never turned into IPv4), C{[2001:db8::1]:8080} and
        C{[2001:db8:ff::1111]:80}.
        """
        for addr in [
            ("ef::fe", 8080),
            ("::1", 8080),
            ("2001:db8::1", 8080),
            ("2001:db8:ff::1111", 80),
        ]:
            with self.subTest(addr=addr):
                self.assertEqual(normalize(addr), addr)
                mangled = encode(addr, tm=1)
                self.assertEqual(len(mangled), 18)
                self.assertEqual(decode(mangled), addr)

    def test_upstream_ipv4_round_trip(self) -> None:
        """
        Upstream's test_mangle: 192.168.16.32:21116 round-trips.
        """
        self.assertEqual(decode(encode(("192.168.16.32", 21116))), ("192.168.16.32", 21116))


class NormalizeTests(SynchronousTestCase):
    def test_hosts(self) -> None:
        """
        Peer hosts are keyed the way hbbs keys them: v4-mapped and
        v4-compatible IPv6 become IPv4 (C{::} included), loopback C{::1} and
        ordinary IPv6 stay, scope ids are dropped, IPv6 text is canonical,
        non-IP strings pass through.
        """
        for host, expected in [
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("::10.1.2.3", "10.1.2.3"),
            ("::", "0.0.0.0"),
            ("::1", "::1"),
            ("fe80::1%eth0", "fe80::1"),
            ("2001:DB8:0:0::1", "2001:db8::1"),
            ("10.1.2.3", "10.1.2.3"),
            ("example.com", "example.com"),
        ]:
            with self.subTest(host=host):
                self.assertEqual(normalize_host(host), expected)


class PropertyTests(SynchronousTestCase):
    @given(strategies.addresses, strategies.u32)
    def test_round_trip(self, addr: tuple[str, int], tm: int) -> None:
        """
        Any IPv4 or IPv6 endpoint, mangled with any 32-bit timestamp, decodes
        to the same endpoint (after hbbs' IPv4 normalisation).
        """
        mangled = encode(addr, tm=tm)
        self.assertEqual(decode(mangled), normalize(addr))
        if isinstance(ipaddress.ip_address(normalize(addr)[0]), ipaddress.IPv4Address):
            self.assertLessEqual(len(mangled), 11)
        else:
            self.assertEqual(len(mangled), 18)

    @given(st.binary(max_size=40))
    def test_decode_never_raises(self, data: bytes) -> None:
        """
        Any bytes a peer sends as a mangled address decode to some valid
        (host, port) pair without raising.
        """
        host, port = decode(data)
        ipaddress.ip_address(host)
        self.assertTrue(0 <= port <= 0xFFFF)

    @given(
        st.one_of(
            st.text(alphabet="0123456789.x ", max_size=20),
            st.ip_addresses(v=4).map(str),
        ),
        st.integers(0, 0xFFFF),
        strategies.u32,
    )
    def test_ipv4_text_mangles_as_ipaddress_reads_it(self, host: str, port: int, tm: int) -> None:
        """
        Any host text (dotted quads, and forms inet_aton reads differently:
        "1.2", "010.0.0.1", trailing junk) mangles exactly as C{ipaddress}
        reads it, or is refused as C{ipaddress} refuses it.
        """
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            with self.assertRaises(ValueError):
                encode((host, port), tm=tm)
            return
        value = (
            ((int.from_bytes(ip.packed, "little") + tm) << 49) | (tm << 17) | (port + (tm & 0xFFFF))
        )
        expected = (value & ((1 << 128) - 1)).to_bytes(16, "little").rstrip(b"\x00")
        self.assertEqual(encode((host, port), tm=tm), expected)
        self.assertEqual(decode(expected), (str(ip), port))
