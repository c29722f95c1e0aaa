"""The host's forward allow list and the viewer's C{--forward LPORT:HOST:PORT}.

Matching happens after RustDesk's mapping ("" is localhost, RDP with port 0
is localhost:3389), host names compare case-insensitively, an empty list
allows nothing, and whatever text a user or a peer gives, the parser either
returns the parts it was given or raises C{ValueError}.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.forward.rules import (
    ForwardSpec,
    forward_allowed,
    map_target,
    parse_forward_spec,
)

ports = st.integers(min_value=1, max_value=65535)
names = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,30}[A-Za-z0-9])?", fullmatch=True)


class MappingTests(SynchronousTestCase):
    def test_empty_host_is_localhost(self) -> None:
        target = map_target("", 22)
        self.assertEqual(
            (target.host, target.port, target.label), ("localhost", 22, "localhost:22")
        )

    def test_rdp_shortcut(self) -> None:
        """RustDesk's RDP button: host "RDP", port 0; errors name it "RDP"."""
        target = map_target("RDP", 0)
        self.assertEqual((target.host, target.port, target.label), ("localhost", 3389, "RDP"))

    def test_rdp_with_port_is_a_name(self) -> None:
        self.assertEqual(map_target("RDP", 3390).host, "RDP")


class AllowListTests(SynchronousTestCase):
    def test_empty_list_refuses(self) -> None:
        self.assertFalse(forward_allowed((), map_target("localhost", 22)))

    def test_matches_after_mapping(self) -> None:
        allowed = (("localhost", 3389), ("127.0.0.1", 80))
        self.assertTrue(forward_allowed(allowed, map_target("RDP", 0)))
        self.assertTrue(forward_allowed(allowed, map_target("", 3389)))
        self.assertFalse(forward_allowed(allowed, map_target("", 80)))
        self.assertFalse(forward_allowed(allowed, map_target("127.0.0.1", 3389)))

    @given(names, ports, st.integers(min_value=-(2**31), max_value=2**31 - 1))
    def test_case_insensitive_exact_port(self, host: str, port: int, other: int) -> None:
        allowed = ((host, port),)
        self.assertTrue(forward_allowed(allowed, map_target(host.swapcase(), port)))
        self.assertEqual(forward_allowed(allowed, map_target(host, other)), other == port)

    @given(st.text(max_size=40), st.integers(min_value=-(2**31), max_value=2**31 - 1))
    def test_peer_input_never_raises(self, host: str, port: int) -> None:
        """Whatever a LoginRequest carries is judged, never an exception."""
        allowed = (("localhost", 22),)
        result = forward_allowed(allowed, map_target(host, port))
        self.assertEqual(result, host.casefold() in ("", "localhost") and port == 22)


class SpecTests(SynchronousTestCase):
    @given(ports, names, ports)
    def test_round_trip(self, lport: int, host: str, port: int) -> None:
        spec = parse_forward_spec(f"{lport}:{host}:{port}")
        self.assertEqual(spec, ForwardSpec(lport, host, port))
        self.assertEqual(spec.target, f"{host}:{port}")

    def test_ipv6_target(self) -> None:
        spec = parse_forward_spec("2222:[::1]:22")
        self.assertEqual(spec, ForwardSpec(2222, "::1", 22))
        self.assertEqual(spec.target, "[::1]:22")

    def test_bad_specs(self) -> None:
        for text in ("", "8080", "8080:host", "0:h:1", "70000:h:1", "x:h:1", "1:h:0", "1:[::1]"):
            self.assertRaises(ValueError, parse_forward_spec, text)

    @given(st.text(max_size=40))
    def test_any_text_parses_or_is_refused(self, text: str) -> None:
        try:
            spec = parse_forward_spec(text)
        except ValueError:
            return
        self.assertTrue(0 < spec.listen_port < 65536 and 0 < spec.port < 65536)
        self.assertTrue(spec.host)
