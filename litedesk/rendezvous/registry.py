"""The rendezvous server's peer registry: hbbs 1.1.17 rules, sans-IO.

Every method takes the current time (seconds, float) and returns what the
protocol layer must do; nothing here touches sockets, the reactor or SQLite.
Rules and constants are hbbs' (docs/protocol.rst §5.2-§5.5), plus what OSS
hbbs answers NOT_SUPPORT to: hosts registered over a stream
(L{StreamHosts}) and ID changes (L{Registry.change_id}), docs/protocol.rst
§5.11.

All peers stored in SQLite are loaded at start-up, so lookups never wait for
the database; a peer loaded from disk counts as offline and as "not seen"
until it registers again (hbbs: "after restart every host is asked once").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.ipblocker import IpBlocker
from litedesk.rendezvous.online import OnlineHosts
from litedesk.rendezvous.sinks import ReplySink
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
#: Hosts registered over a stream from one source site (an IPv4 address or
#: an IPv6 /64, see L{source_site}) and in all.  Each holds a connection and
#: a heartbeat timer; the per-site figure leaves room for an office of
#: hosts behind one NAT, the total bounds a many-address attacker.
MAX_STREAM_HOSTS_PER_SITE = 64
MAX_STREAM_HOSTS = 100_000
#: A new id must look like what RustDesk's client checks before it asks
#: (hbb_common is_valid_custom_id, ^[a-zA-Z][\w-]{5,15}$), in ASCII only:
#: Rust's \w also takes every Unicode letter, and an id that merely looks
#: like another one (a Cyrillic o for a Latin o) must not be handed out.
CUSTOM_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]{5,15}")
#: Successful ID changes of one device within RENAME_WINDOW seconds (a typo
#: fixed at once is fine; a device cycling through names is not).
RENAME_COUNT = 3
RENAME_WINDOW = 3600.0

Result = rz.RegisterPkResponse.Result
# The results as plain ints: an attribute of the EnumTypeWrapper (Result.OK)
# goes through its Python __getattr__, ~2.4 us, on every RegisterPk.
_OK = rz.RegisterPkResponse.OK
_TOO_FREQUENT = rz.RegisterPkResponse.TOO_FREQUENT
_UUID_MISMATCH = rz.RegisterPkResponse.UUID_MISMATCH


class Peer:
    """One registered id.  C{__slots__} keeps a peer well under 1 KiB."""

    __slots__ = (
        "addr",
        "channel",
        "guid",
        "id",
        "ip",
        "last_reg",
        "pk",
        "prev_addr",
        "prev_reg",
        "reg_pk_count",
        "reg_pk_time",
        "renames",
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
        #: The stream the host registered on (L{StreamHosts}); pushes go there.
        self.channel: ReplySink | None = None
        #: (successful ID changes, start of their window), None before the first.
        self.renames: tuple[int, float] | None = None

    def online(self, now: float) -> bool:
        """A stream host is online while its stream is bound; a UDP host for 30 s."""
        if self.channel is not None:
            return True
        return self.last_reg is not None and now - self.last_reg < REG_TIMEOUT


@dataclass(frozen=True, slots=True)
class RegisterPeerOutcome:
    request_pk: bool
    send_config_update: bool


#: Every L{RegisterPeerOutcome} there can be, by (request_pk,
#: send_config_update): a heartbeat returns one of these, not a new object.
_PEER_OUTCOMES = {
    (request_pk, update): RegisterPeerOutcome(request_pk, update)
    for request_pk in (False, True)
    for update in (False, True)
}


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


def source_site(ip: str) -> str:
    """The unit per-source limits count: an IPv4 address, or an IPv6 /64.

    One IPv6 subscriber holds a whole /64 (2^64 addresses), so counting
    single IPv6 addresses would limit nothing.  The same unit decides
    whether an ID change comes from where the device registered: privacy
    addresses rotate within the /64.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6:
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return ip


def valid_custom_id(peer_id: str) -> bool:
    """Is C{peer_id} acceptable as the new id of an ID change (L{CUSTOM_ID})?"""
    return CUSTOM_ID.fullmatch(peer_id) is not None


class StreamHosts:
    """Hosts registered over a stream (TCP or WebSocket): the stream is their way in.

    A RustDesk host that cannot use UDP (proxy, WebSocket mode, UDP blocked)
    sends C{RegisterPk} on a stream it keeps open (rendezvous_mediator.rs
    start_tcp) and waits there for pushes.  A stream carries at most one
    host, a host at most one stream (the newest); the peer is online while
    its stream is bound.  Sans-IO: the channels are opaque objects, the
    caller passes the time and runs the heartbeats.
    """

    def __init__(
        self,
        max_per_site: int = MAX_STREAM_HOSTS_PER_SITE,
        max_total: int = MAX_STREAM_HOSTS,
    ) -> None:
        self.max_per_site = max_per_site
        self.max_total = max_total
        self._peers: dict[ReplySink, Peer] = {}
        self._seen: dict[ReplySink, float] = {}
        self._per_site: dict[str, int] = {}
        #: The online count this table reports its binds to; the registry
        #: holding it sets its own (see L{Registry.streams}).
        self.online = OnlineHosts(REG_TIMEOUT)

    def __len__(self) -> int:
        return len(self._peers)

    def peer_of(self, channel: ReplySink) -> Peer | None:
        return self._peers.get(channel)

    def site_count(self, ip: str) -> int:
        return self._per_site.get(source_site(ip), 0)

    def channels(self) -> list[ReplySink]:
        return list(self._peers)

    def refusal(self, channel: ReplySink, replaces: ReplySink | None) -> str | None:
        """Why binding a new host to C{channel} is refused (a limit), or None.

        Binding a stream that already carries a host, or one replacing
        C{replaces} (the id's current stream) from the same site, adds nothing.
        """
        if channel in self._peers:
            return None
        site = source_site(channel.addr[0])
        if replaces is not None and replaces in self._peers:
            if source_site(replaces.addr[0]) == site:
                return None
            growth = 0
        else:
            growth = 1
        if self.max_total > 0 and len(self._peers) + growth > self.max_total:
            return f"{len(self._peers)} hosts registered over streams (the server's limit)"
        held = self._per_site.get(site, 0)
        if self.max_per_site > 0 and held >= self.max_per_site:
            return f"{held} hosts registered over streams from {site} (the limit)"
        return None

    def bind(self, channel: ReplySink, peer: Peer, now: float) -> ReplySink | None:
        """Make C{channel} C{peer}'s way in; return the stream it replaces, now unbound.

        A stream that carried another id gives it up (that id goes offline
        unless it also registers by UDP).
        """
        self._seen[channel] = now
        current = self._peers.get(channel)
        if current is peer and peer.channel is channel:
            return None
        if current is not None:
            self._release(channel)
        replaced = peer.channel
        if replaced is not None:
            self._release(replaced)
        self._peers[channel] = peer
        self._seen[channel] = now
        site = source_site(channel.addr[0])
        self._per_site[site] = self._per_site.get(site, 0) + 1
        if peer.channel is None:
            self.online.bound(peer)
        peer.channel = channel
        peer.addr = channel.addr
        self.online.seen(peer, now)
        peer.prev_addr = None
        return replaced

    def unbind(self, channel: ReplySink) -> Peer | None:
        """C{channel} closed or went silent: its host, now offline, or None."""
        return self._release(channel)

    def touch(self, channel: ReplySink, now: float) -> None:
        """Something arrived on C{channel} (a heartbeat answer, a request)."""
        if channel in self._seen:
            self._seen[channel] = now

    def silent_for(self, channel: ReplySink, now: float) -> float:
        seen = self._seen.get(channel)
        return 0.0 if seen is None else now - seen

    def _release(self, channel: ReplySink) -> Peer | None:
        peer = self._peers.pop(channel, None)
        if peer is None:
            return None
        del self._seen[channel]
        site = source_site(channel.addr[0])
        left = self._per_site[site] - 1
        if left:
            self._per_site[site] = left
        else:
            del self._per_site[site]
        if peer.channel is channel:
            self.online.unbound(peer)
            peer.channel = None
            if peer.addr == channel.addr:
                # Registered by this stream alone: offline now, and no UDP
                # push may go to a TCP source address.
                peer.addr = None
                self.online.gone(peer)
        return peer


class Registry:
    """In-memory peers, the IP blocker and hbbs' registration rules."""

    def __init__(self, server_serial: int = 0) -> None:
        self._peers: dict[str, Peer] = {}
        self.ip_blocker = IpBlocker()
        self.server_serial = server_serial
        #: Online hosts, counted without a walk (every C{last_reg} goes through it).
        self.online = OnlineHosts(REG_TIMEOUT)
        self.streams = StreamHosts()

    @property
    def streams(self) -> StreamHosts:
        """Hosts on streams; one assigned here reports to this registry's count."""
        return self._streams

    @streams.setter
    def streams(self, table: StreamHosts) -> None:
        table.online = self.online
        self._streams = table

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

    def discard_unsaved(self, peer_id: str, uuid: bytes) -> None:
        """Forget C{peer_id} if this node bound it to C{uuid} and never stored it.

        The database refused the binding (another cluster node holds the id,
        L{litedesk.rendezvous.sinks.IdTaken}); that node's row, when it
        arrives, is then taken as new rather than refused as another device's.
        """
        peer = self._peers.get(peer_id)
        if peer is not None and peer.uuid == uuid and peer.guid is None and peer.channel is None:
            if peer.last_reg is not None:
                self.online.gone(peer)
            del self._peers[peer_id]

    def apply_stored(self, r: PeerRecord) -> None:
        """A row another cluster node committed: take its id, uuid, key and IP.

        What this node knows of the peer being online is left as it is (the
        row says nothing about it); an ID change moves the peer, unless the
        new id is already held here by another device (the database's
        unique index let the rename through, so that entry is stale and
        gives way).
        """
        if r.renamed_from:
            moved = self._peers.pop(r.renamed_from, None)
            if moved is not None:
                moved.id = r.id
                self._peers[r.id] = moved
        peer = self._peers.get(r.id)
        if peer is None:
            self._peers[r.id] = Peer(
                r.id, guid=r.guid, uuid=r.uuid, pk=r.pk, ip=normalize_host(r.ip)
            )
            return
        peer.uuid, peer.pk, peer.ip = r.uuid, r.pk, normalize_host(r.ip)
        if r.guid:
            peer.guid = r.guid

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[Peer]:
        return iter(self._peers.values())

    def online_count(self, now: float) -> int:
        """Hosts online at C{now}, without walking the peers (L{OnlineHosts})."""
        return self.online.count(now)

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
                self.online.seen(peer, now)
        return _PEER_OUTCOMES[request_pk, self.server_serial > serial]

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
            return RegisterPkOutcome(_TOO_FREQUENT, "too many RegisterPk from this IP")
        peer = self._peers.get(peer_id)
        if peer is None or not peer.uuid:
            changed = True
            ip_changed = False
        elif peer.uuid == uuid:
            if peer.ip != ip and peer.pk != pk:
                return RegisterPkOutcome(_UUID_MISMATCH, "new key for this id from another IP")
            ip_changed = peer.ip != ip
            changed = peer.pk != pk or ip_changed
        else:
            return RegisterPkOutcome(_UUID_MISMATCH, "id is bound to another uuid")
        if peer is not None:
            if now - peer.reg_pk_time > REG_PK_WINDOW:
                peer.reg_pk_count = 0
            elif peer.reg_pk_count > REG_PK_COUNT:
                return RegisterPkOutcome(_TOO_FREQUENT, "too many RegisterPk for this id")
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
                self.online.seen(peer, now)
            return RegisterPkOutcome(_OK, "unchanged")
        peer.addr = source
        peer.uuid = uuid
        peer.pk = pk
        peer.ip = ip
        self.online.seen(peer, now)
        snapshot = PeerRecord(peer.guid, peer_id, uuid, pk, ip)
        reason = "ip changed" if ip_changed else "registered"
        return RegisterPkOutcome(_OK, reason, snapshot)

    # -- TCP: ID change (RegisterPk with old_id) -----------------------------

    def change_id(
        self, old_id: str, new_id: str, uuid: bytes, source: Address, now: float
    ) -> RegisterPkOutcome:
        """Rename C{old_id} to C{new_id} for the device that owns it.

        A stock client asks with C{RegisterPk{old_id, id, uuid}} on a plain
        TCP connection and no key (ui_interface.rs check_id).  The device
        proves itself by the uuid the id is bound to, and by asking from the
        site it registered from: the uuid is a machine id that every server
        the device ever used has seen, so alone it would let any of them
        take the id away (and then claim it); hbbs itself refuses a key
        change from another IP for the same reason.  On OK the peer keeps
        its key, guid and online state under the new id and the old id is
        gone (PunchHoleRequest: ID_NOT_EXIST).
        """
        if not valid_custom_id(new_id):
            return RegisterPkOutcome(
                Result.INVALID_ID_FORMAT, "new id is not 6-16 of A-Z a-z 0-9 _ - from a letter"
            )
        if not uuid:
            return RegisterPkOutcome(_UUID_MISMATCH, "no uuid")
        ip = source[0]
        if not self.ip_blocker.allow(ip, new_id, now):
            return RegisterPkOutcome(_TOO_FREQUENT, "too many RegisterPk from this IP")
        peer = self._peers.get(old_id)
        if peer is None:
            return RegisterPkOutcome(_UUID_MISMATCH, "old id is not registered")
        if peer.uuid != uuid:
            return RegisterPkOutcome(_UUID_MISMATCH, "old id is bound to another uuid")
        if not self._from_device(peer, ip, now):
            return RegisterPkOutcome(
                Result.UUID_MISMATCH, "not from the address the device registered from"
            )
        if new_id == old_id:
            return RegisterPkOutcome(_OK, "unchanged")
        count, since = peer.renames or (0, now)
        if now - since >= RENAME_WINDOW:
            count, since = 0, now
        if count >= RENAME_COUNT:
            return RegisterPkOutcome(
                Result.TOO_FREQUENT, f"{count} id changes within {RENAME_WINDOW:.0f} s"
            )
        if new_id in self._peers:
            return RegisterPkOutcome(Result.ID_EXISTS, "new id is taken")
        del self._peers[old_id]
        peer.id = new_id
        self._peers[new_id] = peer
        peer.renames = (count + 1, since)
        snapshot = PeerRecord(peer.guid, new_id, peer.uuid, peer.pk, peer.ip, renamed_from=old_id)
        return RegisterPkOutcome(_OK, f"renamed from {old_id}", snapshot)

    def undo_change_id(self, peer: Peer, old_id: str) -> bool:
        """Give a renamed C{peer} its old id back (the rename could not be stored).

        Only while nothing else happened to either id; False otherwise.
        """
        new_id = peer.id
        if self._peers.get(new_id) is not peer or old_id in self._peers:
            return False
        del self._peers[new_id]
        peer.id = old_id
        self._peers[old_id] = peer
        return True

    @staticmethod
    def _from_device(peer: Peer, ip: str, now: float) -> bool:
        """Does a request from C{ip} come from where C{peer} registered?"""
        site = source_site(ip)
        if peer.ip and source_site(peer.ip) == site:
            return True
        live = peer.addr if peer.online(now) else None
        return live is not None and source_site(live[0]) == site

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

    def online_states(
        self,
        peer_ids: list[str],
        now: float,
        elsewhere: Callable[[str, float], bool] | None = None,
    ) -> bytes:
        """C{OnlineResponse.states}: one bit per asked peer, most significant first.

        @param elsewhere: is a peer not online here online on another
            cluster node?
        """
        states = bytearray((len(peer_ids) + 7) // 8)
        for i, pid in enumerate(peer_ids):
            peer = self._peers.get(pid)
            if (peer is not None and peer.online(now)) or (
                elsewhere is not None and elsewhere(pid, now)
            ):
                states[i // 8] |= 0x80 >> (i % 8)
        return bytes(states)


def _malformed_register_pk(peer_id: str, uuid: bytes, pk: bytes) -> RegisterPkOutcome | None:
    """The refusal of a RegisterPk whose fields are unusable whoever sends it, else None."""
    if not uuid or not pk:
        return RegisterPkOutcome(None, "empty uuid or pk")
    if len(peer_id.encode()) < MIN_ID_LENGTH:
        # hbbs answers a too-short id with UUID_MISMATCH; clients rely on it.
        return RegisterPkOutcome(_UUID_MISMATCH, "id shorter than 6 bytes")
    if len(peer_id.encode()) > MAX_ID_LENGTH:
        return RegisterPkOutcome(Result.INVALID_ID_FORMAT, "id longer than 100 bytes")
    return None
