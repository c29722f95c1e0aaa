"""A RustDesk 1.4.9 app's calls to its "API server", written from RustDesk's source.

Each method sends what the app sends, headers included, and nothing of
LiteDesk's is imported, so the tests check the server against the app and
not against itself:

  - sign-in (C{flutter/lib/models/user_model.dart}, C{common/hbbs/hbbs.dart}):
    C{/api/login} is posted with no headers (Dart's C{http.post} with a string
    body: C{text/plain}), C{currentUser} and C{logout} with
    C{Content-Type: application/json} and C{Authorization: Bearer};
  - the host's sync loop (C{src/hbbs_http/sync.rs}): heartbeat and sysinfo
    with the id and C{base64(uuid)} (standard alphabet, padded), JSON;
  - audit posts (C{src/server/connection.rs}): one nonce (a uuid4) per post;
  - the address book and lists (C{flutter/lib/models/ab_model.dart},
    C{group_model.dart}).

Blocking (C{http.client}); the trial tests call it through C{deferToThread}.
"""

from __future__ import annotations

import base64
import http.client
import json
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

__all__ = ["ApiClient", "Response", "encode_uuid"]

TIMEOUT = 10.0


def encode_uuid(raw: bytes) -> str:
    """How the app writes its machine uuid in API bodies (C{crate::encode64})."""
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    ctype: str

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class ApiClient:
    """One app pointed at C{http://host:port} (its "API server" setting).

    @ivar token: the access token of the last successful L{login}.
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.token = ""

    # -- raw ------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        try:
            headers = headers or {}
            chunked = headers.get("Transfer-Encoding") == "chunked"
            conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
            r = conn.getresponse()
            return Response(r.status, r.read(), r.headers.get("content-type", ""))
        finally:
            conn.close()

    def _json_headers(self, auth: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def post_json(self, path: str, value: Any, *, auth: bool = False) -> Response:
        return self.request("POST", path, json.dumps(value).encode(), self._json_headers(auth))

    # -- sign-in --------------------------------------------------------------

    def login(
        self,
        username: str,
        password: str,
        *,
        device_id: str = "123456789",
        device_uuid: str = "",
        kind: str = "account",
    ) -> Response:
        """LoginRequest.toJson(): the fields given, then deviceInfo."""
        body = {
            "username": username,
            "password": password,
            "id": device_id,
            "uuid": device_uuid or encode_uuid(b"viewer-machine-uuid"),
            "autoLogin": True,
            "type": kind,
            "deviceInfo": {"os": "linux", "type": "client", "name": "test-box"},
        }
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        r = self.request("POST", "/api/login", json.dumps(body).encode(), headers)
        if r.status == 200 and "access_token" in r.json():
            self.token = r.json()["access_token"]
        return r

    def current_user(self, device_id: str = "123456789") -> Response:
        body = {"id": device_id, "uuid": encode_uuid(b"viewer-machine-uuid")}
        return self.post_json("/api/currentUser", body, auth=True)

    def logout(self, device_id: str = "123456789") -> Response:
        body = {"id": device_id, "uuid": encode_uuid(b"viewer-machine-uuid")}
        return self.post_json("/api/logout", body, auth=True)

    def login_options(self) -> Response:
        return self.request("GET", "/api/login-options")

    # -- the host's sync loop -------------------------------------------------

    def heartbeat(
        self, device_id: str, raw_uuid: bytes, *, ver: int = 1004009, conns: list[int] | None = None
    ) -> Response:
        body: dict[str, Any] = {"id": device_id, "uuid": encode_uuid(raw_uuid), "ver": ver}
        if conns:
            body["conns"] = conns
        body["modified_at"] = 0
        return self.post_json("/api/heartbeat", body)

    def sysinfo(self, device_id: str, raw_uuid: bytes, **extra: str) -> Response:
        body = {
            "cpu": "Test CPU, 3.2GHz, 8/4 cores",
            "memory": "16GB",
            "os": "linux / Debian GNU/Linux 13",
            "hostname": "test-host",
            "username": "alice",
            "version": "1.4.9",
            "id": device_id,
            "uuid": encode_uuid(raw_uuid),
            **extra,
        }
        return self.post_json("/api/sysinfo", body)

    # -- audit posts ------------------------------------------------------------

    def audit_conn(
        self, device_id: str, raw_uuid: bytes, conn_id: int, fields: dict[str, Any], nonce: str = ""
    ) -> Response:
        body = {
            **fields,
            "id": device_id,
            "uuid": encode_uuid(raw_uuid),
            "conn_id": conn_id,
            "session_id": 7_000_000_000,
            "nonce": nonce or str(uuidlib.uuid4()),
        }
        return self.post_json("/api/audit/conn", body)

    def audit_file(
        self, device_id: str, raw_uuid: bytes, conn_id: int, nonce: str = ""
    ) -> Response:
        info = {"ip": "192.0.2.1", "name": "bob", "num": 1, "files": [["", 1234]]}
        body = {
            "id": device_id,
            "uuid": encode_uuid(raw_uuid),
            "peer_id": "987654321",
            "conn_id": conn_id,
            "type": 0,
            "path": "/home/alice/report.pdf",
            "is_file": True,
            "info": json.dumps(info),
            "nonce": nonce or str(uuidlib.uuid4()),
        }
        return self.post_json("/api/audit/file", body)

    def audit_alarm(self, device_id: str, raw_uuid: bytes, conn_id: int) -> Response:
        body = {
            "id": device_id,
            "uuid": encode_uuid(raw_uuid),
            "typ": 0,
            "info": json.dumps({"ip": "192.0.2.1"}),
            "conn_id": conn_id,
            "nonce": str(uuidlib.uuid4()),
        }
        return self.post_json("/api/audit/alarm", body)

    def audit_note(self, guid: str, note: str) -> Response:
        body = json.dumps({"guid": guid, "note": note}).encode()
        return self.request("PUT", "/api/audit", body, self._json_headers(True))

    # -- address book and lists -------------------------------------------------

    def _empty_post(self, path: str) -> Response:
        """A POST with C{Content-Length: 0} and JSON headers (C{_setEmptyBody})."""
        headers = {**self._json_headers(True), "Content-Length": "0"}
        return self.request("POST", path, None, headers)

    def ab_settings(self) -> Response:
        return self._empty_post("/api/ab/settings")

    def ab_personal(self) -> Response:
        return self._empty_post("/api/ab/personal")

    def ab_shared_profiles(self) -> Response:
        return self._empty_post("/api/ab/shared/profiles?current=1&pageSize=100")

    def ab_peers(self, guid: str, current: int = 1, page_size: int = 100) -> Response:
        query = urlencode({"current": current, "pageSize": page_size, "ab": guid})
        return self._empty_post(f"/api/ab/peers?{query}")

    def ab_tags(self, guid: str) -> Response:
        return self._empty_post(f"/api/ab/tags/{guid}")

    def ab_send(self, method: str, path: str, guid: str, value: Any) -> Response:
        """A change to the personal book: C{path} is C{peer/add}, C{tag/rename}, ..."""
        body = json.dumps(value).encode()
        return self.request(method, f"/api/ab/{path}/{guid}", body, self._json_headers(True))

    def ab_get(self) -> Response:
        headers = {**self._json_headers(True), "Accept-Encoding": "gzip"}
        return self.request("GET", "/api/ab", None, headers)

    def ab_post(self, book: dict[str, Any]) -> Response:
        return self.post_json("/api/ab", {"data": json.dumps(book)}, auth=True)

    def page(self, path: str, current: int = 1, page_size: int = 100) -> Response:
        query = urlencode({"current": current, "pageSize": page_size, "accessible": ""})
        headers = {"Authorization": f"Bearer {self.token}"}
        return self.request("GET", f"{path}?{query}", None, headers)
