"""Where the viewer keeps its API sign-ins: one access token per server.

A server started with C{--require-login} refuses punch and relay requests
that carry no live user token (litedesk.rendezvous.login_gate).  RustDesk's
apps sign in on the server's API and keep the access token in their config
(C{src/hbbs_http/account.rs}, C{flutter/lib/models/user_model.dart}); the
LiteDesk viewer does the same after C{litedesk-viewer --login USER}, in
C{logins.json} beside its settings file (L{litedesk.viewer.config}).

The file is keyed by the rendezvous server as the person names it, put in
one form (L{server_key}): C{HOST:PORT} with RustDesk's default port, or a
C{ws://} / C{wss://} URL without its path, so C{-r example.org} and
C{-r example.org:21116} share a sign-in.  A token is a bearer credential:
the file is created 0600 in a 0700 directory and replaced atomically, and
a broken or foreign file reads as "no sign-ins" rather than stopping the
viewer.  The API server's address (L{api_server_url}) follows RustDesk's
C{get_api_server} (C{src/common.rs}): the rendezvous host on its port - 2,
over plain HTTP, unless the person names one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.logger import Logger

from litedesk.viewer.config import default_config_path
from litedesk.websocket.urls import is_ws_url, parse_ws_url
from litedesk.wire.address import DEFAULT_RENDEZVOUS_PORT, parse_host_port

__all__ = [
    "LOGINS_FILE",
    "MAX_TOKEN",
    "SignedIn",
    "TokenStore",
    "api_server_url",
    "logins_path",
    "server_key",
]

LOGINS_FILE = "logins.json"
#: Longer tokens are not what any API server we know issues; refusing them
#: keeps a hostile API server from making every request we send huge.
MAX_TOKEN = 1024
#: More servers than anyone signs in to; bounds what a corrupt file costs.
_MAX_SERVERS = 256
_log = Logger(namespace="litedesk.viewer.api_tokens")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def server_key(rendezvous: str) -> str:
    """The one form of a rendezvous server's name the sign-ins are keyed by.

    @raise ValueError: C{rendezvous} is not a server address.
    """
    if is_ws_url(rendezvous):
        url = parse_ws_url(rendezvous)
        return str(url.with_path("/")).rstrip("/").lower()
    host, port = parse_host_port(rendezvous, DEFAULT_RENDEZVOUS_PORT)
    return f"{_bracketed(host.lower())}:{port}"


def api_server_url(rendezvous: str, explicit: str | None = None) -> str:
    """The API server to sign in on: C{explicit}, else RustDesk's default.

    RustDesk (C{get_api_server}) takes the rendezvous server's host with
    its port lowered by 2 (C{http://HOST:21114} for the default port).  A
    C{ws://} server behind a proxy has no such rule: its API must be named.

    @raise ValueError: no API server can be derived, or C{explicit} is not
        an C{http://} or C{https://} URL.
    """
    if explicit:
        url = explicit.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--api-server must be an http:// or https:// URL, not {url[:100]!r}")
        return url
    if is_ws_url(rendezvous):
        raise ValueError("a ws:// or wss:// server has no default API server: give --api-server")
    host, port = parse_host_port(rendezvous, DEFAULT_RENDEZVOUS_PORT)
    if port <= 2:
        raise ValueError(f"port {port} has no API port below it: give --api-server")
    return f"http://{_bracketed(host)}:{port - 2}"


def logins_path(config: Path | None = None) -> Path:
    """C{logins.json} in the directory of the viewer's settings file."""
    return (config or default_config_path()).parent / LOGINS_FILE


@dataclass(frozen=True)
class SignedIn:
    """One sign-in: the API server used, the user and the access token.

    @ivar uuid: the device uuid sent at sign-in, sent again at sign-out.
    """

    api_server: str
    user: str
    access_token: str
    uuid: str = ""
    signed_in_at: float = 0.0

    @classmethod
    def from_json(cls, raw: object) -> SignedIn | None:
        """The entry in C{raw}, or C{None} when it is not a usable one."""
        if not isinstance(raw, dict):
            return None
        fields = ("api_server", "user", "access_token", "uuid")
        if not all(isinstance(raw.get(name, ""), str) for name in fields):
            return None
        token = raw.get("access_token", "")
        if not token or len(token) > MAX_TOKEN:
            return None
        at = raw.get("signed_in_at", 0.0)
        try:
            when = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else 0.0
        except OverflowError:  # an integer too large for a float
            when = 0.0
        return cls(raw.get("api_server", ""), raw.get("user", ""), token, raw.get("uuid", ""), when)


class TokenStore:
    """The sign-ins in one C{logins.json}, read afresh on every call.

    Reading afresh keeps a window that stays open in step with a
    C{--login} or C{--logout} run from a terminal.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as e:
            _log.warn("Ignoring sign-ins file {path}: {error}", path=str(self.path), error=e)
            return {}
        servers = raw.get("servers") if isinstance(raw, dict) else None
        if not isinstance(servers, dict):
            return {}
        return {k: v for k, v in list(servers.items())[:_MAX_SERVERS] if isinstance(k, str)}

    def get(self, rendezvous: str) -> SignedIn | None:
        """The sign-in for this server, if there is a usable one."""
        try:
            key = server_key(rendezvous)
        except ValueError:
            return None
        return SignedIn.from_json(self._load().get(key))

    def token(self, rendezvous: str) -> str:
        """The access token for this server, or C{""} (send none)."""
        signed = self.get(rendezvous)
        return signed.access_token if signed is not None else ""

    def put(self, rendezvous: str, signed: SignedIn) -> None:
        servers = self._load()
        servers[server_key(rendezvous)] = asdict(signed)
        self._save(servers)

    def remove(self, rendezvous: str) -> bool:
        """Forget this server's sign-in; whether there was one.  The file
        goes when it holds no sign-ins any more."""
        servers = self._load()
        if servers.pop(server_key(rendezvous), None) is None:
            return False
        if servers:
            self._save(servers)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        return True

    def _save(self, servers: dict[str, Any]) -> None:
        """Write atomically; the temporary file is 0600 from its creation."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps({"servers": servers}, indent=2, sort_keys=True) + "\n"
        # mkstemp creates the file 0600: the token is never readable by others,
        # not even for the moment before a chmod.
        fd, tmp = tempfile.mkstemp(prefix=".logins-", dir=str(self.path.parent))
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
