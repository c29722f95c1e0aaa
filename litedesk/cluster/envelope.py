# -*- test-case-name: tests.test_cluster_envelope -*-
"""The payloads cluster nodes send each other through PostgreSQL NOTIFY.

A NOTIFY payload is text of at most 8,000 bytes (PostgreSQL's limit), so
each message is one compact JSON object: a forwarded viewer request
(L{Forward}), the answer going back to the viewer's node (L{Answer}), a
host that arrived on a node (L{Arrival}, on the presence channel) and the
peer rows a node committed (L{PeerNotice}, on the peers channel).  The
RendezvousMessage inside a forward or an answer travels as base64 of its
protobuf bytes, untouched.

Payloads come from other nodes, which are trusted, but a bug or a version
skew must not take a node down: L{decode} returns None for anything that is
not exactly one of these shapes, and the caller logs it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litedesk.rendezvous.store import PeerRecord
from litedesk.wire.address import Address

__all__ = [
    "MAX_PAYLOAD",
    "Answer",
    "Arrival",
    "Forward",
    "PeerNotice",
    "decode",
    "encode",
    "encode_arrivals",
    "encode_peer_notices",
    "own_prefixes",
]

#: PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more.
MAX_PAYLOAD = 7_999


@dataclass(frozen=True, slots=True)
class Forward:
    """A viewer's request for a host on another node.

    @ivar origin: the node holding the viewer's connection.
    @ivar viewer: the viewer's address as the origin sees it (the address
        the host will punch to, and the key of its parked connection).
    @ivar local: the origin's address the viewer connected to.
    @ivar websocket: the viewer came over WebSocket.
    @ivar message: the RendezvousMessage bytes the viewer sent.
    """

    origin: str
    viewer: Address
    local: Address
    websocket: bool
    message: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """What the host's node writes to a forwarded viewer."""

    viewer: Address
    message: bytes


@dataclass(frozen=True, slots=True)
class Arrival:
    """Hosts C{peer_ids} came online on node C{node} (and are not on the others)."""

    node: str
    peer_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PeerNotice:
    """Peer rows node C{node} committed, in commit order."""

    node: str
    records: tuple[PeerRecord, ...]


Message = Forward | Answer | Arrival | PeerNotice


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _record(r: PeerRecord) -> list[Any]:
    return [r.id, _b64(r.guid or b""), _b64(r.uuid), _b64(r.pk), r.ip, r.renamed_from]


def encode(msg: Message) -> str:
    """The payload text of C{msg} (may exceed L{MAX_PAYLOAD}: callers check)."""
    obj: dict[str, Any]
    if isinstance(msg, Forward):
        obj = {
            "k": "fwd",
            "o": msg.origin,
            "v": list(msg.viewer),
            "l": list(msg.local),
            "w": msg.websocket,
            "m": _b64(msg.message),
        }
    elif isinstance(msg, Answer):
        obj = {"k": "ans", "v": list(msg.viewer), "m": _b64(msg.message)}
    elif isinstance(msg, Arrival):
        obj = {"k": "arr", "n": msg.node, "i": list(msg.peer_ids)}
    else:
        obj = {"k": "peers", "n": msg.node, "r": [_record(r) for r in msg.records]}
    return json.dumps(obj, separators=(",", ":"))


def _chunked(items: list[Any], make: Callable[[tuple[Any, ...]], Message]) -> list[str]:
    """C{make(slice)} payloads covering C{items}, each within L{MAX_PAYLOAD}.

    A single item too large on its own is left out (ids are at most 100
    bytes and keys 32, so only a bug gets there)."""
    out: list[str] = []
    start = 0
    while start < len(items):
        end = len(items)
        while True:
            text = encode(make(tuple(items[start:end])))
            if len(text.encode()) <= MAX_PAYLOAD or end - start == 1:
                break
            end = start + max(1, (end - start) // 2)
        if len(text.encode()) <= MAX_PAYLOAD:
            out.append(text)
        start = end
    return out


def encode_peer_notices(node: str, records: list[PeerRecord]) -> list[str]:
    """C{records} as as few L{PeerNotice} payloads as fit L{MAX_PAYLOAD} each."""
    return _chunked(records, lambda part: PeerNotice(node, part))


def encode_arrivals(node: str, peer_ids: list[str]) -> list[str]:
    """C{peer_ids} as as few L{Arrival} payloads as fit L{MAX_PAYLOAD} each."""
    return _chunked(peer_ids, lambda part: Arrival(node, part))


def own_prefixes(node: str) -> tuple[str, ...]:
    """How every L{Arrival} and L{PeerNotice} C{node} sends begins (L{encode}'s
    key order), so that a node can drop its own without decoding them."""
    return tuple(
        encode(msg).split('"n":', 1)[0] + '"n":' + json.dumps(node) + ","
        for msg in (Arrival(node, ()), PeerNotice(node, ()))
    )


def _address(value: object) -> Address | None:
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and 0 <= value[1] <= 65535
    ):
        return (value[0], value[1])
    return None


def _bytes(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _decode_record(value: object) -> PeerRecord | None:
    if not isinstance(value, list) or len(value) != 6:
        return None
    peer_id, guid, uuid, pk, ip, renamed = value
    fields = (_bytes(guid), _bytes(uuid), _bytes(pk))
    if not all(isinstance(v, str) for v in (peer_id, ip, renamed)) or None in fields:
        return None
    g, u, p = fields
    assert g is not None and u is not None and p is not None
    return PeerRecord(g or None, peer_id, u, p, ip, renamed_from=renamed)


def _forward(obj: dict[str, Any]) -> Forward | None:
    viewer, local, message = _address(obj.get("v")), _address(obj.get("l")), _bytes(obj.get("m"))
    origin, websocket = obj.get("o"), obj.get("w")
    if viewer is None or local is None or message is None:
        return None
    if not isinstance(origin, str) or not isinstance(websocket, bool):
        return None
    return Forward(origin, viewer, local, websocket, message)


def _peers(obj: dict[str, Any]) -> PeerNotice | None:
    node, rows = obj.get("n"), obj.get("r")
    if not isinstance(node, str) or not isinstance(rows, list):
        return None
    records = [_decode_record(r) for r in rows]
    if any(r is None for r in records):
        return None
    return PeerNotice(node, tuple(r for r in records if r is not None))


def decode(text: str) -> Message | None:
    """The message in payload C{text}, or None if it is not a valid one."""
    if len(text) > MAX_PAYLOAD:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    kind = obj.get("k")
    if kind == "fwd":
        return _forward(obj)
    if kind == "ans":
        viewer, message = _address(obj.get("v")), _bytes(obj.get("m"))
        if viewer is None or message is None:
            return None
        return Answer(viewer, message)
    if kind == "arr":
        node, ids = obj.get("n"), obj.get("i")
        if isinstance(node, str) and isinstance(ids, list) and all(isinstance(i, str) for i in ids):
            return Arrival(node, tuple(ids))
        return None
    if kind == "peers":
        return _peers(obj)
    return None
