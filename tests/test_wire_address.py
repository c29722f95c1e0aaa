"""litedesk.wire.address.parse_host_port: the one parser of host[:port] text."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.wire.address import DEFAULT_RENDEZVOUS_PORT, parse_host_port

hostnames = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(1, 65535)


class FormsTests(SynchronousTestCase):
    def test_examples(self) -> None:
        """What options and config files accept: host, host:port, [v6], [v6]:port, bare v6."""
        d = DEFAULT_RENDEZVOUS_PORT
        self.assertEqual(parse_host_port("rd.example.com", d), ("rd.example.com", 21116))
        self.assertEqual(parse_host_port(" rd.example.com:4000 ", d), ("rd.example.com", 4000))
        self.assertEqual(parse_host_port("10.0.0.1:9000", 21117), ("10.0.0.1", 9000))
        self.assertEqual(parse_host_port("[2001:db8::1]:4000", d), ("2001:db8::1", 4000))
        self.assertEqual(parse_host_port("[2001:db8::1]", d), ("2001:db8::1", 21116))
        self.assertEqual(parse_host_port("2001:db8::1", d), ("2001:db8::1", 21116))

    def test_refused(self) -> None:
        """Each bad form is a ValueError that names the problem, never a wrong address."""
        for text, why in [
            ("host:0", "1..65535"),
            ("host:65536", "1..65535"),
            ("host:x", "not a number"),
            ("host:", "not a number"),
            ("host:-1", "not a number"),
            ("host:+5", "not a number"),
            ("host:٣", "not a number"),  # a non-ASCII digit int() would take
            (":5", "no host"),
            ("", "no host"),
            ("[::1]x", "[v6]"),
            ("[::1", "[v6]"),
            ("[]:5", "no host"),
            ("[[::1]:5", "stray bracket"),
            ("a]:5", "stray bracket"),
            ("[::1]:", "not a number"),
        ]:
            with self.assertRaises(ValueError, msg=text) as cm:
                parse_host_port(text, 21116)
            self.assertIn(why, str(cm.exception), text)

    def test_default_port_checked(self) -> None:
        """A default out of range (the relay's rendezvous port + 1 = 65536) is refused too."""
        self.assertRaises(ValueError, parse_host_port, "relay.example.com", 65536)


class PropertyTests(SynchronousTestCase):
    @given(st.one_of(hostnames, ipv4), ports, ports)
    def test_host_with_port(self, host: str, port: int, default: int) -> None:
        self.assertEqual(parse_host_port(f"{host}:{port}", default), (host, port))
        self.assertEqual(parse_host_port(host, default), (host, default))

    @given(ipv6, ports, ports)
    def test_ipv6(self, host: str, port: int, default: int) -> None:
        self.assertEqual(parse_host_port(f"[{host}]:{port}", default), (host, port))
        self.assertEqual(parse_host_port(f"[{host}]", default), (host, default))
        if host.count(":") > 1:  # "::" and the like; a bare form needs two colons
            self.assertEqual(parse_host_port(host, default), (host, default))

    @given(st.one_of(hostnames, ipv4), st.integers().filter(lambda p: not 0 < p < 65536))
    def test_port_out_of_range(self, host: str, port: int) -> None:
        with self.assertRaises(ValueError):
            parse_host_port(f"{host}:{port}", 21116)

    @given(st.text(max_size=40), ports)
    def test_any_text(self, text: str, default: int) -> None:
        """Any text gives a host and a port in range, or ValueError; nothing else escapes."""
        try:
            host, port = parse_host_port(text, default)
        except ValueError:
            return
        self.assertTrue(host)
        self.assertTrue(0 < port < 65536)
        self.assertFalse(set(host) & set("[]"))
        if ":" in host:  # only a bracketed or a bare IPv6 form keeps colons in the host
            self.assertTrue(text.strip().startswith("[") or host.count(":") > 1)

    @given(ipv6)
    def test_ipv6_round_trips_through_ipaddress(self, host: str) -> None:
        parsed, _ = parse_host_port(f"[{host}]:1", 2)
        self.assertEqual(ipaddress.ip_address(parsed), ipaddress.ip_address(host))
