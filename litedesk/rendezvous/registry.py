"""The rendezvous server's peer registry: hbbs 1.1.17 rules, sans-IO.

Every method takes the current time (seconds, float) and returns what the
protocol layer must do; nothing here touches sockets, the reactor or SQLite.
Rules and constants are hbbs' (docs/protocol.rst §5.2-§5.5).

All peers stored in SQLite are loaded at start-up, so lookups never wait for
the database; a peer loaded from disk counts as offline and as "not seen"
until it registers again (hbbs: "after restart every host is asked once").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.ipblocker import IpBlocker
from litedesk.rendezvous.store import PeerRecord
from litedesk.wire.address import Address
from litedesk.wire.addrmangle import normalize_host

REG_TIMEOUT = 30.0
REG_PK_WINDOW = 6.0
REG_PK_COUNT = 2
MIN_ID_LENGTH = 6
MAX_ID_LENGTH = 100  # the SQLite column is VARCHAR(100)
#: After a heartbeat from a new port on the same IP, pushes also go to the
#: previous port as long as its last heartbeat would still count as online.
#: A RegisterPeer is unauthenticated, so anyone behind the host's public IP
#: (carrier-grade NAT, a shared office) can move a host's address with one
#: datagram, as in hbbs; pushing to both keeps the real host reachable while
#: a legitimate port change (NAT rebinding) costs one extra datagram to a
#: dead port for a while.  Hosts drop the duplicate a double push can cause.
PREV_ADDR_WINDOW = REG_TIMEOUT

Result = rz.RegisterPkResponse.Result


class Peer:
    """One registered id.  C{__slots__} keeps a peer well under 1 KiB."""

    __slots__ = (
        "addr",
        "guid",
        "id",
        "ip",
        "last_reg",
        "pk",
        "prev_addr",
        "prev_reg",
        "reg_pk_count",
        "reg_pk_time",
        "uuid",
    )

    def __init__(
        self,
        peer_id: str,
        *,
        guid: bytes | None = None,
        uuid: bytes = b"",
        pk: bytes = b"",
        ip: str = "",
    ) -> None:
        self.id = peer_id
        self.guid = guid
        self.uuid = uuid
        self.pk = pk
        self.ip = ip  # the "info.ip" of hbbs: source IP of the last accepted RegisterPk
        self.addr: Address | None = None  # last UDP source; None = not seen since start
        self.last_reg: float | None = None
        self.reg_pk_count = 0
        self.reg_pk_time = float("-inf")
        self.prev_addr: Address | None = None  # the port this IP used before (see PREV_ADDR_WINDOW)
        self.prev_reg = float("-inf")

    def online(self, now: float) -> bool:
        return self.last_reg is not None and now - self.last_reg < REG_TIMEOUT


@dataclass(frozen=True, slots=True)
class RegisterPeerOutcome:
    request_pk: bool
    send_config_update: bool


@dataclass(frozen=True, slots=True)
class RegisterPkOutcome:
    """C{result} is None when hbbs sends no reply at all."""

    result: int | None
    reason: str
    persist: PeerRecord | None = None


class PunchTarget(Enum):
    ID_NOT_EXIST = "id does not exist"
    OFFLINE = "offline"
    ONLINE = "online"


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class Registry:
    """In-memory peers, the IP blocker and hbbs' registration rules."""

    def __init__(self, server_serial: int = 0) -> None:
        self._peers: dict[str, Peer] = {}
        self.ip_blocker = IpBlocker()
        self.server_serial = server_serial

    # -- loading and inspection ------------------------------------------

    def load(self, records: Iterable[PeerRecord]) -> int:
        n = 0
        for r in records:
            self._peers[r.id] = Peer(
                r.id, guid=r.guid, uuid=r.uuid, pk=r.pk, ip=normalize_host(r.ip)
            )
            n += 1
        return n

    def get(self, peer_id: str) -> Peer | None:
        return self._peers.get(peer_id)

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[Peer]:
        return iter(self._peers.values())

    def online_count(self, now: float) -> int:
        return sum(1 for p in self._peers.values() if p.online(now))

    def set_guid(self, peer_id: str, guid: bytes) -> None:
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.guid = guid

    # -- UDP: RegisterPeer -------------------------------------------------

    def register_peer(
        self, peer_id: str, serial: int, source: Address, now: float
    ) -> RegisterPeerOutcome | None:
        """A host's heartbeat.  None: ignore it (empty id)."""
        if not peer_id:
            return None
        ip = source[0]
        peer = self._peers.get(peer_id)
        if peer is None or peer.addr is None:
            request_pk = True
        else:
            ip_change = ip != peer.addr[0] and not _is_loopback(ip)
            request_pk = not peer.pk or ip_change
            if not request_pk:
                if (
                    source != peer.addr
                    and peer.last_reg is not None
                    and now - peer.last_reg < PREV_ADDR_WINDOW
                ):
                    # A host and whoever spoofs it alternate: both get pushes.
                    peer.prev_addr, peer.prev_reg = peer.addr, peer.last_reg
                peer.addr = source
                peer.last_reg = now
        return RegisterPeerOutcome(request_pk, self.server_serial > serial)

    # -- UDP: RegisterPk ---------------------------------------------------

    def register_pk(
        self, peer_id: str, uuid: bytes, pk: bytes, source: Address, now: float
    ) -> RegisterPkOutcome:
        """Bind an id to a uuid and public key (hbbs' C{update_pk} rules)."""
        malformed = _malformed_register_pk(peer_id, uuid, pk)
        if malformed is not None:
            return malformed
        ip = source[0]
        if not self.ip_blocker.allow(ip, peer_id, now):
            return RegisterPkOutcome(Result.TOO_FREQUENT, "too many RegisterPk from this IP")
        peer = self._peers.get(peer_id)
        if peer is None or not peer.uuid:
            changed = True
            ip_changed = False
        elif peer.uuid == uuid:
            if peer.ip != ip and peer.pk != pk:
                return RegisterPkOutcome(
                    Result.UUID_MISMATCH, "new key for this id from another IP"
                )
            ip_changed = peer.ip != ip
            changed = peer.pk != pk or ip_changed
        else:
            return RegisterPkOutcome(Result.UUID_MISMATCH, "id is bound to another uuid")
        if peer is not None:
            if now - peer.reg_pk_time > REG_PK_WINDOW:
                peer.reg_pk_count = 0
            elif peer.reg_pk_count > REG_PK_COUNT:
                return RegisterPkOutcome(Result.TOO_FREQUENT, "too many RegisterPk for this id")
        else:
            peer = Peer(peer_id)
            self._peers[peer_id] = peer
        peer.reg_pk_count += 1
        peer.reg_pk_time = now
        if not changed:
            if peer.addr is None:
                # Stored before a restart and proven again by uuid and key: it is
                # back, so later heartbeats must not ask for the key forever.
                peer.addr = source
                peer.last_reg = now
            return RegisterPkOutcome(Result.OK, "unchanged")
        peer.addr = source
        peer.uuid = uuid
        peer.pk = pk
        peer.ip = ip
        peer.last_reg = now
        snapshot = PeerRecord(peer.guid, peer_id, uuid, pk, ip)
        reason = "ip changed" if ip_changed else "registered"
        return RegisterPkOutcome(Result.OK, reason, snapshot)

    # -- TCP: rendezvous ---------------------------------------------------

    def punch_target(self, peer_id: str, now: float) -> tuple[PunchTarget, Peer | None]:
        peer = self._peers.get(peer_id)
        if peer is None:
            return PunchTarget.ID_NOT_EXIST, None
        if not peer.online(now) or peer.addr is None:
            return PunchTarget.OFFLINE, peer
        return PunchTarget.ONLINE, peer

    def push_addresses(self, peer: Peer, now: float) -> list[Address]:
        """Where a push for C{peer} goes: its address, and its previous port while fresh."""
        if peer.addr is None:
            return []
        out = [peer.addr]
        prev = peer.prev_addr
        if prev is not None and prev != peer.addr and now - peer.prev_reg < PREV_ADDR_WINDOW:
            out.append(prev)
        return out

    def relay_target(self, peer_id: str) -> Peer | None:
        """hbbs forwards C{RequestRelay} to any id it holds in memory, online or not."""
        peer = self._peers.get(peer_id)
        if peer is None or peer.addr is None:
            return None
        return peer

    def online_states(self, peer_ids: list[str], now: float) -> bytes:
        """C{OnlineResponse.states}: one bit per asked peer, most significant first."""
        states = bytearray((len(peer_ids) + 7) // 8)
        for i, pid in enumerate(peer_ids):
            peer = self._peers.get(pid)
            if peer is not None and peer.online(now):
                states[i // 8] |= 0x80 >> (i % 8)
        return bytes(states)


def _malformed_register_pk(peer_id: str, uuid: bytes, pk: bytes) -> RegisterPkOutcome | None:
    """The refusal of a RegisterPk whose fields are unusable whoever sends it, else None."""
    if not uuid or not pk:
        return RegisterPkOutcome(None, "empty uuid or pk")
    if len(peer_id.encode()) < MIN_ID_LENGTH:
        # hbbs answers a too-short id with UUID_MISMATCH; clients rely on it.
        return RegisterPkOutcome(Result.UUID_MISMATCH, "id shorter than 6 bytes")
    if len(peer_id.encode()) > MAX_ID_LENGTH:
        return RegisterPkOutcome(Result.INVALID_ID_FORMAT, "id longer than 100 bytes")
    return None
