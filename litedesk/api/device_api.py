# -*- test-case-name: tests.test_api_devices -*-
"""What RustDesk hosts post without a token: heartbeat, sysinfo, audit records.

Every one of these names the device by C{id} and base64 C{uuid} and is
accepted only when L{Devices.check} says the uuid is the one bound to that
id.  Replies follow what the app does with them (C{src/hbbs_http/sync.rs},
C{src/server/connection.rs}):

  - C{/api/heartbeat}: a JSON object; C{{}} asks nothing.  A device that
    fails the check gets C{{}} too (it then simply beats again later).
  - C{/api/sysinfo}: the text C{SYSINFO_UPDATED} (the app stops sending
    it), C{ID_NOT_FOUND} for an id not registered (the app retries at its
    next tick: registration usually lands within seconds), and
    C{UUID_MISMATCH} for a registered id with another uuid (any other text
    makes the app wait two minutes before it tries again).
  - C{/api/sysinfo_ver}: the app calls it only for rustdesk.com servers; it
    answers an empty text, which no stored hash matches.
  - C{/api/audit/*}: success is a 2xx with an B{empty} body; the app
    retries a 5xx or a non-empty 2xx and drops a 4xx.  So a refused device
    gets 403 and a repeated nonce gets an empty 200.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from litedesk.api import store
from litedesk.api.body import BadBody, int_list, integer, text
from litedesk.api.devices import MAX_CONNS, Devices
from litedesk.api.endpoint import Call, Endpoint, Refused, Reply, json_reply, text_reply

__all__ = ["device_endpoints"]

_log = Logger(namespace="litedesk.api")
_ID_MAX = 64
_UUID_MAX = 256
_FIELD_MAX = 512
_PATH_MAX = 4096
_INFO_MAX = 16 * 1024


def _device(devices: Devices, call: Call, body: dict[str, Any], what: str) -> tuple[str, str]:
    """The posting device's id and uuid text, or L{Refused} 403 naming why."""
    peer_id = text(body, "id", _ID_MAX)
    uuid_text = text(body, "uuid", _UUID_MAX)
    verdict = devices.check(peer_id, uuid_text)
    if verdict != "ok":
        raise Refused(f"{what} refused: {verdict.replace('_', ' ')} for id {peer_id!r}", 403)
    return peer_id, uuid_text


class DeviceAPI:
    """The handlers; one instance per server (it holds L{Devices})."""

    def __init__(self, devices: Devices) -> None:
        self.devices = devices

    def heartbeat(self, call: Call) -> Reply:
        body = call.body()
        try:
            peer_id, _ = _device(self.devices, call, body, "heartbeat")
        except Refused as e:
            _log.debug("API heartbeat from {ip}: {reason}", ip=call.ip, reason=e.message)
            return json_reply({})
        ver = integer(body, "ver")
        conns = int_list(body, "conns", MAX_CONNS)
        integer(body, "modified_at")
        return json_reply(self.devices.heartbeat(peer_id, ver, conns, call.now))

    def sysinfo(self, call: Call) -> Reply | Deferred[Reply]:
        body = call.body()
        peer_id = text(body, "id", _ID_MAX)
        uuid_text = text(body, "uuid", _UUID_MAX)
        verdict = self.devices.check(peer_id, uuid_text)
        if verdict != "ok":
            _log.info(
                "API sysinfo from {ip} for {id!r} refused: {reason}",
                ip=call.ip,
                id=peer_id,
                reason=verdict,
            )
            return text_reply("ID_NOT_FOUND" if verdict == "unknown_id" else "UUID_MISMATCH")
        fields = {k: text(body, k, _FIELD_MAX) for k in store.SYSINFO_FIELDS}
        info = store.SysInfo(
            id=peer_id,
            info=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
            updated_at=call.now,
            **fields,
        )

        def stored(_: object) -> Reply:
            self.devices.sysinfo_stored(peer_id, call.now)
            return text_reply("SYSINFO_UPDATED")

        return call.ctx.db.run(store.store_sysinfo, info, uuid_text).addCallback(stored)

    def sysinfo_ver(self, call: Call) -> Reply:
        call.body()
        return text_reply("")

    def audit(self, kind: str) -> Any:
        read = {"conn": _conn_fields, "file": _file_fields, "alarm": _alarm_fields}[kind]

        def handle(call: Call) -> Deferred[Reply]:
            body = call.body()
            peer_id, _ = _device(self.devices, call, body, f"audit/{kind}")
            fields = read(body)
            fields["device_id"] = peer_id
            nonce = text(body, "nonce", 128)
            d = call.ctx.db.run(store.record_audit, kind, fields, nonce, call.now)
            return d.addCallback(lambda _: Reply(200, b"", b"text/plain; charset=utf-8"))

        return handle


def _info_text(body: dict[str, Any]) -> str:
    """C{info}: the apps send a JSON string; an object is kept as its JSON."""
    value = body.get("info")
    if value is None or isinstance(value, str):
        return text(body, "info", _INFO_MAX)
    dumped = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(dumped) > _INFO_MAX:
        raise BadBody(f"info is longer than {_INFO_MAX} characters")
    return dumped


def _conn_fields(body: dict[str, Any]) -> dict[str, object]:
    fields: dict[str, object] = {
        "action": text(body, "action", 16),
        "conn_id": integer(body, "conn_id"),
        # A u64 in RustDesk (past SQLite's integers): kept as text.
        "session_id": str(integer(body, "session_id", low=0, high=2**64 - 1)),
        "ip": text(body, "ip", 64),
        "type": integer(body, "type"),
    }
    peer = body.get("peer")
    if peer is not None:
        pair = isinstance(peer, list) and len(peer) == 2
        if not (pair and all(isinstance(x, str) for x in peer)):
            raise BadBody("peer is not [id, name]")
        fields["peer_id"] = peer[0][:_ID_MAX]
        fields["peer_name"] = peer[1][:_FIELD_MAX]
    return fields


def _file_fields(body: dict[str, Any]) -> dict[str, object]:
    is_file = body.get("is_file", False)
    if not isinstance(is_file, bool):
        raise BadBody("is_file is not true or false")
    return {
        "conn_id": integer(body, "conn_id"),
        "peer_id": text(body, "peer_id", _ID_MAX),
        "type": integer(body, "type"),
        "path": text(body, "path", _PATH_MAX),
        "is_file": int(is_file),
        "info": _info_text(body),
    }


def _alarm_fields(body: dict[str, Any]) -> dict[str, object]:
    return {
        "conn_id": integer(body, "conn_id"),
        "type": integer(body, "typ"),
        "info": _info_text(body),
    }


def device_endpoints(ctx: Any, devices: Devices) -> dict[str, Endpoint]:
    """The endpoints by path under C{/api} (C{audit/conn}: nested)."""
    api = DeviceAPI(devices)
    out = {
        "heartbeat": Endpoint(ctx, "heartbeat", {b"POST": api.heartbeat}),
        "sysinfo": Endpoint(ctx, "sysinfo", {b"POST": api.sysinfo}),
        "sysinfo_ver": Endpoint(ctx, "sysinfo_ver", {b"POST": api.sysinfo_ver}),
    }
    for kind in store.AUDIT_KINDS:
        out[f"audit/{kind}"] = Endpoint(ctx, f"audit/{kind}", {b"POST": api.audit(kind)})
    return out
