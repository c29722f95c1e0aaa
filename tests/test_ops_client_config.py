"""The RustDesk client config string, its three forms, its QR code and the start-up line.

Covers L{litedesk.ops.client_config}: the string against RustDesk's own
test vector and one computed here by hand (JSON, URL-safe base64 without
padding, reversed); round trips through L{decode} and through a reader
written here from RustDesk's parser (rustdesk/rustdesk src/custom_server.rs
C{get_custom_server_from_string}, behind both C{rustdesk --config} and the
renamed Windows installer), including strings that would contain the C{--}
that parser splits on; the installer name grammar; the mobile app's QR
code (C{config=} and the string; the SVG parses as XML and shows exactly
the modules of that text's QR code); the server options turned into
settings; L{decode} on garbage (hypothesis: C{ValueError} only); and the
"Client config string" line a real server logs at start-up.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, cast

import segno
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.ops.client_config import (
    MAX_CONFIG_STRING,
    ClientConfig,
    decode,
    default_public_host,
    from_options,
)
from litedesk.relay_tap import Options

from .rendezvous_harness import start_server

# rustdesk/rustdesk src/custom_server.rs test_filename_license_string: this
# string, in an installer name, configures host 1.1.1.1 and this key.
RUSTDESK_VECTOR = (
    "0nI900VsFHZVBVdIlncwpHS4V0bOZ0dtVldrpVO4JHdCp0YV5WdzUGZzdnYRVjI6ISeltmI"
    "sISMuEjLx4SMiojI0N3boJye"
)
RUSTDESK_KEY = "5Qbwsde3unUcJBtrx9ZkvUmwFNoExHzpryHuPUdqlWM="


def _strict_config_string(s: str) -> dict[str, str]:
    """RustDesk's reading of one candidate: reverse, base64url with no padding, JSON."""
    b64 = s[::-1]
    if not re.fullmatch(r"[A-Za-z0-9_-]*", b64) or len(b64) % 4 == 1:
        raise ValueError("not unpadded base64url")
    obj = json.loads(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    return {k: obj.get(k, "") for k in ("host", "key", "api", "relay")}


def rustdesk_read_name(name: str) -> dict[str, str]:
    """What a stock client reads from an installer name or C{--config} argument.

    Written here from the behaviour of src/custom_server.rs (1.4.9): drop
    C{.exe}; with C{host=} anywhere, comma-separated C{name=value} fields
    from the first C{host=} on, names case-insensitive; otherwise the
    C{-licensed-} marker becomes C{--}, and each C{--}-separated piece (or,
    failing that, each C{(}-separated part of it) is tried as a config string.
    """
    low = name.lower()
    if low.endswith(".exe.exe"):
        name = name[:-8]
    elif low.endswith(".exe"):
        name = name[:-4]
    if "host=" in name.lower():
        fields = dict.fromkeys(("host", "key", "api", "relay"), "")
        for element in name[name.lower().index("host=") :].split(","):
            for field in fields:
                if element.lower().startswith(field + "="):
                    fields[field] = element[len(field) + 1 :]
        return fields
    for marker in ("-licensed---", "-licensed--", "-licensed-"):
        name = name.replace(marker, "--")
    for piece in name.split("--"):
        for candidate in [piece, *(piece.split("(") if "(" in piece else [])]:
            try:
                return _strict_config_string(candidate.strip())
            except ValueError:
                continue
    raise ValueError(f"RustDesk cannot read {name!r}")


def as_fields(c: ClientConfig) -> dict[str, str]:
    return {"host": c.host, "key": c.key, "api": c.api, "relay": c.relay}


# The only ASCII bytes whose base64 can give a "-": xx111110.
DASHY = ClientConfig(host="rd.example.org", key="~>~~>>~~~>>>/", relay="~~~")


values = st.text(min_size=0, max_size=40)
hosts = st.text(min_size=1, max_size=40).filter(lambda h: h.strip() != "")
configs = st.builds(ClientConfig, host=hosts, key=values, api=values, relay=values)


class StringTests(SynchronousTestCase):
    def test_rustdesk_vector(self) -> None:
        """Host and key alone give exactly the string RustDesk's own test reads."""
        c = ClientConfig(host="1.1.1.1", key=RUSTDESK_KEY)
        self.assertEqual(c.string(), RUSTDESK_VECTOR)
        self.assertEqual(decode(RUSTDESK_VECTOR), c)

    def test_vector_by_hand(self) -> None:
        """All four fields: compact JSON in the order host, key, api, relay, encoded
        as URL-safe base64, padding dropped, reversed."""
        c = ClientConfig(
            host="rd.example.org:21200",
            key="AAAA+/BBB=",
            api="https://rd.example.org",
            relay="rd.example.org:21300",
        )
        text = (
            '{"host":"rd.example.org:21200","key":"AAAA+/BBB=",'
            '"api":"https://rd.example.org","relay":"rd.example.org:21300"}'
        )
        by_hand = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")[::-1]
        self.assertNotIn("--", by_hand)
        self.assertEqual(c.string(), by_hand)

    def test_app_export_decodes(self) -> None:
        """A string the app itself exports (keys host, relay, api, key; padded) decodes."""
        text = json.dumps(
            {"host": "rd.example.org", "relay": "", "api": "", "key": RUSTDESK_KEY},
            separators=(",", ":"),
        )
        padded = base64.urlsafe_b64encode(text.encode()).decode()
        self.assertTrue(padded.endswith("="))
        self.assertEqual(
            decode(f"  {padded[::-1]}\n"), ClientConfig("rd.example.org", RUSTDESK_KEY)
        )

    def test_dashes(self) -> None:
        """A "-" in the string never comes twice in a row (the C{--} that
        C{rustdesk --config} splits on) nor first (the installer name's dash)."""
        s = DASHY.string()
        self.assertIn("-", s)
        self.assertNotIn("--", s)
        self.assertFalse(s.startswith("-"))
        self.assertEqual(decode(s), DASHY)
        self.assertEqual(rustdesk_read_name(s + ".exe"), as_fields(DASHY))

    @given(configs)
    def test_round_trip(self, c: ClientConfig) -> None:
        """decode() and RustDesk's reader give back every field of every config."""
        s = c.string()
        self.assertEqual(decode(s), c)
        self.assertNotIn("--", s)
        self.assertEqual(_strict_config_string(s), as_fields(c))

    @given(st.text(max_size=200))
    def test_decode_garbage(self, s: str) -> None:
        """Garbage raises ValueError, nothing else."""
        with contextlib.suppress(ValueError):
            decode(s)

    @given(st.binary(max_size=300), st.booleans())
    def test_decode_garbage_base64(self, raw: bytes, pad: bool) -> None:
        """Any bytes behind valid base64 (JSON or not) give a config or ValueError."""
        b64 = base64.urlsafe_b64encode(raw).decode()
        with contextlib.suppress(ValueError):
            decode((b64 if pad else b64.rstrip("="))[::-1])

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.sampled_from(["host", "key", "api", "relay", "x"]), inner)
            ),
            max_leaves=8,
        )
    )
    def test_decode_any_json(self, obj: Any) -> None:
        """Any JSON value: a config only from an object whose fields are strings."""
        text = json.dumps(obj)
        s = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")[::-1]
        try:
            c = decode(s)
        except ValueError:
            return
        self.assertIsInstance(obj, dict)
        self.assertEqual(c.host, obj["host"])

    def test_decode_refuses(self) -> None:
        """No host, non-string fields, repeated fields, padding junk, too long: ValueError."""
        for text in (
            '{"key":"k"}',
            '{"host":" "}',
            '{"host":5}',
            '{"host":null}',
            '{"host":"a","host":"b"}',
            '["host"]',
            '{"host":"a","x":NaN}',
        ):
            s = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")[::-1]
            self.assertRaises(ValueError, decode, s)
        self.assertRaises(ValueError, decode, "===" + RUSTDESK_VECTOR)
        self.assertRaises(ValueError, decode, RUSTDESK_VECTOR.replace("I", "+"))
        self.assertRaises(ValueError, decode, "A" * (MAX_CONFIG_STRING + 1))


class FormTests(SynchronousTestCase):
    def test_command(self) -> None:
        """The command runs rustdesk --config with the string, which the client reads."""
        c = ClientConfig("rd.example.org:21200", RUSTDESK_KEY, "https://rd.example.org")
        self.assertEqual(c.command(), f"rustdesk --config {c.string()}")
        # src/core_main.rs: the argument gets ".exe" and goes through the name parser.
        self.assertEqual(rustdesk_read_name(c.string() + ".exe"), as_fields(c))

    def test_installer_name_readable(self) -> None:
        """Values a file name can hold: host= and key= fields, ending in a comma."""
        c = ClientConfig("rd.example.org", RUSTDESK_KEY)
        name = c.installer_name()
        self.assertEqual(name, f"rustdesk-host=rd.example.org,key={RUSTDESK_KEY},.exe")
        self.assertEqual(rustdesk_read_name(name), as_fields(c))
        # Windows names a second download "... (1).exe": the final comma keeps the key whole.
        self.assertEqual(rustdesk_read_name(name[:-4] + " (1).exe"), as_fields(c))
        with_relay = ClientConfig("rd.example.org", RUSTDESK_KEY, relay="relay.example.org")
        self.assertEqual(
            with_relay.installer_name(),
            f"rustdesk-host=rd.example.org,key={RUSTDESK_KEY},relay=relay.example.org,.exe",
        )

    def test_installer_name_licensed(self) -> None:
        """A port (':'), an API URL or a key with '/' cannot stand in a file name:
        the name carries the config string instead, and still reads back."""
        for c in (
            ClientConfig("rd.example.org:21200", RUSTDESK_KEY),
            ClientConfig("rd.example.org", RUSTDESK_KEY, api="https://rd.example.org"),
            ClientConfig("rd.example.org", "ab/cd="),
            DASHY,
        ):
            name = c.installer_name()
            self.assertEqual(name, f"rustdesk-licensed-{c.string()}.exe")
            self.assertIsNone(re.search(r'[\\/:*?"<>|]', name))
            self.assertEqual(rustdesk_read_name(name), as_fields(c))
            self.assertEqual(rustdesk_read_name(name[:-4] + " (1).exe"), as_fields(c))

    @given(configs)
    def test_installer_name_round_trip(self, c: ClientConfig) -> None:
        """Every config's installer name is a legal Windows file name that reads back."""
        name = c.installer_name()
        self.assertIsNone(re.search(r'[\\/:*?"<>|\x00-\x1f]', name))
        self.assertEqual(rustdesk_read_name(name), as_fields(c))


def svg_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules an inline SVG from segno draws (its path of h-strokes)."""
    root = ET.fromstring(svg)
    paths = [p for p in root.iter() if p.tag.endswith("path") and p.get("stroke")]
    [path] = paths
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for cmd, a, b in re.findall(r"([MmHh])(-?[0-9.]+)(?: (-?[0-9.]+))?", path.get("d", "")):
        if cmd == "M":
            x, y = float(a), float(b)
        elif cmd == "m":
            x, y = x + float(a), y + float(b)
        else:
            n = int(float(a))
            dark.update((int(x) + i, int(y)) for i in range(n))
            x += n
    return dark


class QRCodeTests(SynchronousTestCase):
    config = ClientConfig("rd.example.org", RUSTDESK_KEY, relay="relay.example.org:21300")

    def test_text(self) -> None:
        """The scanner wants config= followed by the string it decodes."""
        text = self.config.qr_text()
        self.assertTrue(text.startswith("config="))
        self.assertEqual(decode(text.removeprefix("config=")), self.config)

    def test_svg_shows_the_text(self) -> None:
        """The SVG is a bare <svg> element (no XML declaration) whose dark modules
        are those of a full-size QR code of qr_text(), level M or better, byte mode."""
        svg = self.config.qr_svg()
        self.assertTrue(svg.startswith("<svg"))
        self.assertNotIn("<?xml", svg)
        self.assertEqual(ET.fromstring(svg).tag.rsplit("}", 1)[-1], "svg")
        qr = segno.make_qr(self.config.qr_text(), error="m", boost_error=False)
        self.assertFalse(qr.is_micro)
        self.assertEqual((qr.mode, qr.error), ("byte", "M"))
        border = qr.default_border_size
        expected = {
            (col + border, row + border)
            for row, line in enumerate(qr.matrix)
            for col, bit in enumerate(line)
            if bit
        }
        self.assertEqual(svg_modules(svg), expected)
        # A QR code of another text differs: the comparison can fail.
        other = ClientConfig("rd.example.org", RUSTDESK_KEY).qr_svg()
        self.assertNotEqual(svg_modules(other), expected)


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(["--data-dir", "unused", *argv])
    return options


class FromOptionsTests(SynchronousTestCase):
    def settings(self, *argv: str, key: str = "K") -> ClientConfig:
        options = parse("--public-host", "rd.example.org", *argv)
        api = None if options["no-api"] else options["api-endpoint"]
        return from_options(options, key, api)

    def test_defaults(self) -> None:
        """Default ports: only host and key; the client derives API and relay."""
        self.assertEqual(self.settings(), ClientConfig("rd.example.org", "K"))

    def test_other_port(self) -> None:
        """--port P: host:P; API at P-2 and relay at P+1 are still the client's defaults."""
        self.assertEqual(
            self.settings("--port", "21200"), ClientConfig("rd.example.org:21200", "K")
        )

    def test_relay_elsewhere(self) -> None:
        """A relay not on P+1 is named; with --relay-servers the ID server names it."""
        self.assertEqual(self.settings("--relay-port", "30000").relay, "rd.example.org:30000")
        self.assertEqual(
            self.settings("--relay-port", "30000", "--relay-servers", "r.example.org").relay, ""
        )
        self.assertEqual(self.settings("--no-relay").relay, "")

    def test_api(self) -> None:
        """HTTPS, or another port than P-2, is named; --no-api leaves the default."""
        ssl = "ssl:21114:privateKey=k.pem:certKey=c.pem"
        self.assertEqual(self.settings("--api-endpoint", ssl).api, "https://rd.example.org:21114")
        # Stock clients drop that port (the start-up log warns).
        self.assertTrue(self.settings("--api-endpoint", ssl).api_port_dropped())
        self.assertFalse(
            self.settings("--api-endpoint", ssl.replace("21114", "8443")).api_port_dropped()
        )
        self.assertEqual(
            self.settings("--api-endpoint", "tcp:8080").api, "http://rd.example.org:8080"
        )
        self.assertEqual(self.settings("--no-api").api, "")
        self.assertEqual(self.settings("--api-endpoint", "unix:/run/api.sock").api, "")

    def test_ipv6(self) -> None:
        """A bare IPv6 address stays bare on the default port; URLs bracket it."""
        options = parse("--public-host", "2001:db8::1")
        c = from_options(options, "K", options["api-endpoint"])
        self.assertEqual(c, ClientConfig("2001:db8::1", "K", api="http://[2001:db8::1]:21114"))
        options = parse("--public-host", "2001:db8::1", "--port", "21200")
        c = from_options(options, "K", options["api-endpoint"])
        self.assertEqual(c.host, "[2001:db8::1]:21200")

    def test_public_host_with_port(self) -> None:
        """--public-host NAME:PORT (a forwarded port) wins over --port."""
        self.assertEqual(self.settings("--port", "21200").host, "rd.example.org:21200")
        options = parse("--public-host", "rd.example.org:443")
        self.assertEqual(from_options(options, "K", None).host, "rd.example.org:443")


class PublicHostTests(SynchronousTestCase):
    def test_option_wins(self) -> None:
        """--public-host is used as given (trimmed)."""
        self.assertEqual(
            default_public_host(" rd.example.org ", lambda: "a", lambda: "b"), "rd.example.org"
        )

    def test_fqdn_then_hostname(self) -> None:
        """The fully qualified name, unless it only reaches this machine."""
        self.assertEqual(
            default_public_host("", lambda: "m.example.org", lambda: "m"), "m.example.org"
        )
        for local in ("localhost", "localhost.localdomain", "127.0.1.1", "::1", ""):

            def fqdn(name: str = local) -> str:
                return name

            self.assertEqual(default_public_host("", fqdn, lambda: "m"), "m")

    def test_nothing_better(self) -> None:
        """A local name, or "localhost", when no lookup gives anything better."""

        def broken() -> str:
            raise OSError("no name")

        self.assertEqual(default_public_host("", lambda: "localhost", broken), "localhost")
        self.assertEqual(default_public_host("", broken, broken), "localhost")


class StartUpLineTests(TestCase):
    """The "Client config string" line of a real server started on loopback."""

    def start(self, *extra: str) -> tuple[Any, str]:
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        try:
            svc = start_server(Path(self.mktemp()), *extra)
        finally:
            globalLogPublisher.removeObserver(observer)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        [line] = [e for e in events if "config_string" in e]
        return svc, line["config_string"]

    def test_signing_key(self) -> None:
        """The string names --public-host, the port and the public key."""
        svc, s = self.start("--key", "", "--public-host", "rd.example.org", "--port", "21200")
        self.assertEqual(decode(s), ClientConfig("rd.example.org:21200", svc.key.public_key))

    def test_licence_key(self) -> None:
        """With a licence string as the key, the string carries the licence."""
        _, s = self.start("--key", "a-licence", "--public-host", "rd.example.org")
        self.assertEqual(decode(s), ClientConfig("rd.example.org", "a-licence"))
