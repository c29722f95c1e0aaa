"""The RustDesk client config string: what an operator hands to users' apps.

A RustDesk app takes its four server settings (ID server, Key, API server,
Relay server) in one string: the JSON object C{{"host","key","api","relay"}}
encoded as URL-safe base64 without padding, then reversed character by
character.  The unsigned form is accepted as it is (rustdesk/rustdesk
src/custom_server.rs C{get_custom_server_from_config_string}: reverse, decode,
parse; the signed form is only tried when parsing fails).  Operators use it
in four ways, each a method of L{ClientConfig}:

  - pasted (or from the clipboard) in Network -> ID/Relay server -> import
    (flutter/lib/common.dart C{importConfig}, C{ServerConfig.decode});
  - C{rustdesk --config STRING} on an installed client, as administrator
    (src/core_main.rs: the string goes through C{get_custom_server_from_string});
  - the Windows installer renamed C{rustdesk-host=...,key=...,.exe}
    (src/custom_server.rs, src/platform/windows.rs C{get_license_from_exe_name});
  - a QR code of C{config=STRING}, scanned by the mobile app
    (flutter/lib/mobile/pages/scan_page.dart C{showServerSettingFromQr}).

Empty fields keep the client's defaults: no C{api} means C{http://HOST:P-2}
(src/common.rs C{get_api_server_}), no C{relay} means the relay the
rendezvous server names, else HOST:P+1 (src/rendezvous_mediator.rs
C{get_relay_server}).  So L{from_options} fills them only when they differ.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import segno

__all__ = [
    "DEFAULT_RENDEZVOUS_PORT",
    "MAX_CONFIG_STRING",
    "ClientConfig",
    "decode",
    "default_public_host",
    "from_options",
]

#: The port RustDesk clients assume for the ID server (hbb_common RENDEZVOUS_PORT).
DEFAULT_RENDEZVOUS_PORT = 21116
#: Longest config string L{decode} reads: real ones are 100-300 characters.
MAX_CONFIG_STRING = 4096

_FIELDS = ("host", "key", "api", "relay")
# Characters Windows refuses in a file name, and the field separator ','.
_NOT_IN_FILE_NAME = re.compile(r'[\\/:*?"<>|,\x00-\x1f]')
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _encode(fields: dict[str, str]) -> str:
    # ASCII-only JSON (non-ASCII escaped as \uXXXX) never encodes to a "--",
    # which the parser behind --config and installer names splits on: only
    # the 4th character of a base64 quantum can be "-" (its 3rd byte ends
    # 111110), the other three need a byte >= 0x80.  For the same reason
    # the reversed string never starts with "-" (the JSON ends with "}").
    text = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")[::-1]


@dataclass(frozen=True)
class ClientConfig:
    """The four server settings of a RustDesk app, as the app stores them.

    @ivar host: the ID server, C{NAME}, C{NAME:PORT} or C{[IPV6]:PORT}.
    @ivar key: the server's public key (or licence string) clients require.
    @ivar api: the API server URL; empty: the client's default (HOST, port - 2).
    @ivar relay: the relay server; empty: the one the ID server names, else port + 1.
    """

    host: str
    key: str
    api: str = ""
    relay: str = ""

    def _fields(self) -> dict[str, str]:
        # The order of RustDesk's own test vector (src/custom_server.rs);
        # empty api/relay are left out, which both parsers read as "".
        fields = {"host": self.host, "key": self.key}
        if self.api:
            fields["api"] = self.api
        if self.relay:
            fields["relay"] = self.relay
        return fields

    def string(self) -> str:
        """The config string: reversed unpadded base64url of the compact JSON."""
        return _encode(self._fields())

    def command(self) -> str:
        """The command line that configures an installed client (as administrator)."""
        return f"rustdesk --config {self.string()}"

    def installer_name(self) -> str:
        """A Windows installer file name that carries these settings.

        C{rustdesk-host=HOST,key=KEY[,api=API][,relay=RELAY],.exe} when every
        value can stand in a file name (no C{\\ / : * ? " < > |} and no
        comma): fields are split on C{,}, named case-insensitively, and the
        final comma keeps the key whole when Windows renames a second
        download C{... (1).exe}.  Otherwise (a port, an API URL, a key with
        C{/}) C{rustdesk-licensed-STRING.exe}, which the same function
        decodes (src/custom_server.rs C{get_custom_server_from_string}).
        """
        fields = self._fields()
        if all(v and not _NOT_IN_FILE_NAME.search(v) for v in fields.values()):
            return "rustdesk-" + ",".join(f"{k}={v}" for k, v in fields.items()) + ",.exe"
        return f"rustdesk-licensed-{self.string()}.exe"

    def api_port_dropped(self) -> bool:
        """Will stock clients drop this API URL's port?

        They turn C{https://...:21114} into C{https://...} (port 443) unless
        built with C{allow-https-21114} (src/common.rs C{get_api_server}).
        """
        return self.api.lower().startswith("https://") and self.api.endswith(":21114")

    def qr_text(self) -> str:
        """What the mobile app's scanner expects: C{config=} and the string."""
        return f"config={self.string()}"

    def qr_code(self) -> segno.QRCode:
        """The QR code of L{qr_text}: a full-size QR code (phones' scanners
        do not all read Micro QR), error correction level M."""
        return segno.make_qr(self.qr_text(), error="m", boost_error=False)

    def qr_svg(self, scale: int = 4) -> str:
        """The QR code as an C{<svg>} element to inline in HTML (no XML declaration)."""
        svg: str = self.qr_code().svg_inline(scale=scale, dark="#000", light="#fff")
        return svg


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # serde's derived Deserialize refuses a repeated field; so do we.
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"repeated field {k!r}")
        obj[k] = v
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def decode(string: str) -> ClientConfig:
    """Read a config string as the apps do (the inverse of L{ClientConfig.string}).

    Surrounding white space is ignored and base64 padding is optional (the
    app's own export pads; its importer normalizes).  Fields the app does
    not know are ignored; a known field must be a string.

    @raise ValueError: when C{string} is not a config string or names no ID
        server (the app then says "Invalid server configuration").
    """
    s = string.strip()
    if len(s) > MAX_CONFIG_STRING:
        raise ValueError(f"longer than {MAX_CONFIG_STRING} characters")
    b64 = s[::-1].rstrip("=")
    if not _BASE64URL.fullmatch(b64) or len(s) - len(b64) > 2:
        raise ValueError("not URL-safe base64")
    try:
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    except binascii.Error as e:
        raise ValueError(f"not URL-safe base64: {e}") from None
    try:
        obj = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_json_object, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"not JSON text: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    values: dict[str, str] = {}
    for name in _FIELDS:
        v = obj.get(name, "")
        if not isinstance(v, str):
            raise ValueError(f"{name!r} is not a string")
        if any("\ud800" <= c <= "\udfff" for c in v):
            raise ValueError(f"{name!r} holds a lone surrogate")
        values[name] = v
    if not values["host"].strip():
        raise ValueError("no ID server (host)")
    return ClientConfig(**values)


def _is_local_name(name: str) -> bool:
    name = name.strip().lower().rstrip(".")
    if not name or name in _LOCAL_NAMES or name.startswith("localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def default_public_host(
    public_host: str = "",
    fqdn: Callable[[], str] = socket.getfqdn,
    hostname: Callable[[], str] = socket.gethostname,
) -> str:
    """The name clients should type for this server.

    C{--public-host} when given; else the machine's fully qualified name,
    else its host name, skipping names that only reach this machine
    (C{localhost}, loopback addresses) while another exists.  C{getfqdn}
    may ask DNS: call this once, not per request.

    @param fqdn: the fully qualified name lookup (injected for tests).
    @param hostname: the host name lookup (injected for tests).
    """
    if public_host.strip():
        return public_host.strip()
    names = []
    for lookup in (fqdn, hostname):
        try:
            names.append(lookup().strip())
        except OSError:
            continue
    return next(
        (n for n in names if not _is_local_name(n)), next((n for n in names if n), "localhost")
    )


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        return False


def _split_port(host: str) -> tuple[str, int | None]:
    """C{NAME:PORT} or C{[IPV6]:PORT} -> (NAME or [IPV6], PORT); else (host, None).

    As hbb_common socket_client C{split_host_port}: a bare IPv6 address has no port.
    """
    m = re.fullmatch(r"(\[[^\]]*\]):([0-9]{1,5})", host) or re.fullmatch(
        r"([^:\[\]]*):([0-9]{1,5})", host
    )
    if m is None:
        return host, None
    return m.group(1), int(m.group(2))


def _endpoint_port(endpoint: str | None) -> tuple[str, int] | None:
    """(http or https, port) of a C{tcp:}, C{tcp6:} or C{ssl:} endpoint string; else None."""
    if not endpoint:
        return None
    fields = re.split(r"(?<!\\):", endpoint)
    kind = fields[0].lower()
    if kind not in ("tcp", "tcp6", "ssl") or len(fields) < 2:
        return None
    port = fields[1].removeprefix("port=")
    if not port.isdigit() or int(port) == 0:
        return None
    return ("https" if kind == "ssl" else "http"), int(port)


def from_options(
    config: Mapping[str, Any], key_public: str, api_address: str | None
) -> ClientConfig:
    """The settings a client of the server these options describe should use.

    @param config: the parsed server options (C{--public-host}, C{--port},
        C{--relay-servers}, C{--no-relay}, C{--relay-endpoint}).
    @param key_public: the key clients type (public key, or licence string).
    @param api_address: the API listener's endpoint string (C{--api-endpoint}),
        or None when there is none.
    """
    name, port = _split_port(default_public_host(config.get("public-host") or ""))
    if port is None:
        port = int(config.get("port") or DEFAULT_RENDEZVOUS_PORT)
    bare_ipv6 = _is_ipv6(name) and not name.startswith("[")
    url_name = f"[{name}]" if bare_ipv6 else name
    host = name if port == DEFAULT_RENDEZVOUS_PORT else f"{url_name}:{port}"

    relay = ""
    own = _endpoint_port(config.get("relay-endpoint"))
    # With --relay-servers the ID server names a relay per request (round
    # robin, health-checked); a relay typed in the client would override it.
    own_port = own[1] if own is not None else port + 1
    if not (config.get("relay-servers") or config.get("no-relay")) and own_port != port + 1:
        relay = f"{url_name}:{own_port}"

    api = ""
    listener = _endpoint_port(api_address)
    if listener is not None:
        scheme, api_port = listener
        # The client's default is http://HOST:PORT-2, which a bare IPv6
        # address garbles (src/common.rs get_api_server_).
        if scheme != "http" or api_port != port - 2 or bare_ipv6:
            api = f"{scheme}://{url_name}:{api_port}"
    return ClientConfig(host=host, key=key_public, api=api, relay=relay)
