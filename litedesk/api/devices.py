# -*- test-case-name: tests.test_api_devices -*-
"""Which device may report, and what its heartbeats said: sans-IO state.

Heartbeats, sysinfo and audit posts carry no token: a RustDesk host names
itself by C{id} and C{uuid}, the base64 (standard alphabet, padded) of the
same machine uuid bytes it sends in C{RegisterPk.uuid}
(C{src/hbbs_http/sync.rs}, C{src/server/connection.rs}).  L{Devices.check}
accepts a report only when that uuid matches the one the registry bound to
the id.  Anyone can name an id; only the machine (or whoever read its uuid
off it) knows the uuid, so what devices report is device-asserted data and
is shown as such.

Per id that passed the check, L{Devices} keeps the last heartbeat (time,
version, connection ids), whether this process holds the device's sysinfo
(if not, the next heartbeat asks for it with C{{"sysinfo": 1}}) and the
connections the console asked to end (sent as C{{"disconnect": [...]}}).
Bounded: entries exist only for registered ids, and entries silent for
L{STALE_SECONDS} are dropped (oldest first, at each heartbeat).  Time is
passed in.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_CONNS",
    "MAX_PENDING_DISCONNECTS",
    "STALE_SECONDS",
    "DeviceState",
    "Devices",
    "decode_uuid",
]

#: The most connection ids kept (and accepted) per heartbeat.
MAX_CONNS = 64
#: The most disconnect requests waiting per device.
MAX_PENDING_DISCONNECTS = 64
#: A device that sent no heartbeat for this long is forgotten (the app beats
#: every 15 s when idle, every 3 s during sessions).
STALE_SECONDS = 120.0


def decode_uuid(text: str) -> bytes | None:
    """The bytes of a base64 uuid as the apps send it, or C{None} if it is not base64.

    RustDesk encodes with the standard alphabet and padding; the URL-safe
    alphabet and missing padding are read too, since they cannot be confused.
    """
    if not text or len(text) > 256:
        return None
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(slots=True)
class DeviceState:
    """One device's last heartbeat, as the console reads it.

    @ivar last_seen: reactor time of the last heartbeat.
    @ivar ver: the app's version number (C{hbb_common::get_version_number}).
    @ivar conns: connection ids the host reported running.
    @ivar has_sysinfo: this process stored a sysinfo report for the id.
    @ivar pending: connection ids the console asked to end, not yet sent.
    """

    last_seen: float
    ver: int = 0
    conns: tuple[int, ...] = ()
    has_sysinfo: bool = False
    pending: list[int] = field(default_factory=list)


class Devices:
    """Heartbeat state of the devices whose uuid matched.

    @param registry: the rendezvous registry (C{get(id)} -> peer with
        C{.uuid}), or C{None} when this server runs no rendezvous (then no
        device can be checked and every report is refused).
    """

    def __init__(self, registry: Any) -> None:
        self._registry = registry
        self._states: OrderedDict[str, DeviceState] = OrderedDict()

    def check(self, peer_id: str, uuid_text: str) -> str:
        """C{ok}, C{unknown_id} (not registered) or C{uuid_mismatch}."""
        peer = self._registry.get(peer_id) if self._registry is not None and peer_id else None
        if peer is None:
            return "unknown_id"
        want = bytes(peer.uuid or b"")
        got = decode_uuid(uuid_text)
        if not want or got != want:
            return "uuid_mismatch"
        return "ok"

    def heartbeat(self, peer_id: str, ver: int, conns: list[int], now: float) -> dict[str, Any]:
        """Record a checked device's heartbeat; the reply's fields (C{{}}: nothing to ask)."""
        self._expire(now)
        state = self._states.pop(peer_id, None) or DeviceState(now)
        state.last_seen = now
        state.ver = ver
        state.conns = tuple(conns[:MAX_CONNS])
        self._states[peer_id] = state  # to the end: the order is by last heartbeat
        reply: dict[str, Any] = {}
        if not state.has_sysinfo:
            reply["sysinfo"] = 1
        if state.pending:
            reply["disconnect"] = state.pending
            state.pending = []
        return reply

    def sysinfo_stored(self, peer_id: str, now: float) -> None:
        """A checked device's sysinfo is in the database: stop asking for it."""
        state = self._states.get(peer_id)
        if state is None:
            state = self._states[peer_id] = DeviceState(now)
        state.has_sysinfo = True

    def request_disconnect(self, peer_id: str, conn_id: int) -> bool:
        """Ask device C{peer_id} to end connection C{conn_id} at its next heartbeat.

        @return: C{False} when the device sends no heartbeats to this server
            (nothing would carry the request) or too many are waiting.
        """
        state = self._states.get(peer_id)
        if state is None or len(state.pending) >= MAX_PENDING_DISCONNECTS:
            return False
        if conn_id not in state.pending:
            state.pending.append(conn_id)
        return True

    def live(self, peer_id: str, now: float | None = None) -> DeviceState | None:
        """The device's last heartbeat; with C{now}, only if younger than L{STALE_SECONDS}.

        (Without C{now}, an entry can be up to one heartbeat older: silent
        devices are dropped when the next heartbeat of any device arrives.)
        """
        state = self._states.get(peer_id)
        if state is not None and now is not None and now - state.last_seen >= STALE_SECONDS:
            return None
        return state

    def __len__(self) -> int:
        return len(self._states)

    def _expire(self, now: float) -> None:
        while self._states:
            peer_id, state = next(iter(self._states.items()))
            if now - state.last_seen < STALE_SECONDS:
                return
            del self._states[peer_id]
