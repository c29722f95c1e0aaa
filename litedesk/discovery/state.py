# -*- test-case-name: tests.test_discovery -*-
"""Sans-IO peer registry of the LiteDesk v1 JSON discovery protocol.

Nothing here touches the reactor or a socket.  L{DiscoveryRegistry} takes
plain values (a connection handle, strings, an address) and returns the JSON
object to send back to the caller.  The only effects on I{other} connections
(a C{connection_request} pushed to a target, the eviction of a connection
whose peer id was taken over) go through the small L{IDiscoveryPeer}
interface, which the Twisted protocol implements and tests fake.

Peer ids are unique.  When a second live connection registers an id that is
already held, the newer connection wins: the older connection gets an
C{error} message and is closed, and its entry is replaced.  (The protocol has
no authentication, so this is a discovery service for a trusted network, not
an identity service; the newer-wins rule lets a client that lost its TCP
connection without a FIN re-register at once instead of waiting for the old,
half-open connection to time out.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from twisted.logger import Logger
from zope.interface import Interface

#: A JSON object as sent on the wire.
Message = dict[str, object]

#: Longest accepted peer id and peer type, in characters (code points).
MAX_PEER_ID_LENGTH = 64
MAX_PEER_TYPE_LENGTH = 64

#: Default cap on the number of registered peers.
DEFAULT_MAX_PEERS = 10000


class IDiscoveryPeer(Interface):
    """A connected discovery client that can be sent messages and closed."""

    def send_message(message: Mapping[str, object]) -> None:
        """Send one JSON object to the client (fire and forget)."""

    def close() -> None:
        """Close the connection once what was already sent has been written."""


def error(reason: str) -> Message:
    """The C{error} message carrying C{reason}."""
    return {"type": "error", "reason": reason}


def _text_problem(value: str, what: str, limit: int, allow_empty: bool) -> str | None:
    if not value and not allow_empty:
        return f"{what} must not be empty"
    if len(value) > limit:
        return f"{what} is longer than {limit} characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: JSON can carry them as \\ud800 escapes, but
        # strict decoders (serde_json, Go) reject them, so one such id
        # would break every other client's peer_list.
        return f"{what} is not valid Unicode text"
    return None


def peer_id_problem(peer_id: str, field: str = "peer_id") -> str | None:
    """Why C{peer_id} is not an acceptable peer id, or C{None} if it is.

    @param field: the name of the field, used in the reason.
    """
    return _text_problem(peer_id, field, MAX_PEER_ID_LENGTH, allow_empty=False)


def peer_type_problem(peer_type: str) -> str | None:
    """Why C{peer_type} is not an acceptable peer type, or C{None} if it is."""
    return _text_problem(peer_type, "peer_type", MAX_PEER_TYPE_LENGTH, allow_empty=True)


@dataclass(frozen=True)
class PeerRecord:
    """One registered peer.

    @ivar connection: the connection it registered on.
    @ivar peer_id: its unique id.
    @ivar peer_type: free-form client kind, e.g. C{"host"} or C{"viewer"}.
    @ivar public_ip: its address as the server sees it (v4-mapped IPv6
        already normalised to IPv4).
    @ivar public_port: its source port as the server sees it.
    """

    connection: IDiscoveryPeer
    peer_id: str
    peer_type: str
    public_ip: str
    public_port: int

    def describe(self) -> Message:
        """The fields shared by C{peer_list} entries and C{peer_info}."""
        return {
            "peer_id": self.peer_id,
            "peer_type": self.peer_type,
            "public_ip": self.public_ip,
            "public_port": self.public_port,
        }


class DiscoveryRegistry:
    """The peers registered through the discovery protocol, by id and by connection.

    @param max_peers: how many peers may be registered at once; a
        registration that would exceed it is answered with an error.
    """

    _log = Logger()

    def __init__(self, max_peers: int = DEFAULT_MAX_PEERS) -> None:
        if max_peers < 0:
            raise ValueError("max_peers must not be negative")
        self.max_peers = max_peers
        self._by_id: dict[str, PeerRecord] = {}
        self._by_connection: dict[IDiscoveryPeer, PeerRecord] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def peers(self) -> Iterator[PeerRecord]:
        """The registered peers, oldest registration first."""
        return iter(list(self._by_id.values()))

    def lookup(self, peer_id: str) -> PeerRecord | None:
        """The peer registered under C{peer_id}, if any."""
        return self._by_id.get(peer_id)

    def peer_for(self, connection: IDiscoveryPeer) -> PeerRecord | None:
        """The entry C{connection} registered, if any."""
        return self._by_connection.get(connection)

    def register(
        self,
        connection: IDiscoveryPeer,
        peer_id: str,
        peer_type: str,
        public_ip: str,
        public_port: int,
    ) -> Message:
        """Register (or re-register) C{connection} as C{peer_id}.

        Re-registering on the same connection replaces that connection's
        entry (the old id is released).  If another connection holds
        C{peer_id}, that connection is sent an error and closed.

        @return: C{registered}, or an C{error} when the id or type is
            invalid or the registry is full.
        """
        problem = peer_id_problem(peer_id) or peer_type_problem(peer_type)
        if problem is not None:
            return error(problem)
        mine = self._by_connection.get(connection)
        holder = self._by_id.get(peer_id)
        # Only a connection without an entry claiming a free id adds one.
        if mine is None and holder is None and len(self._by_id) >= self.max_peers:
            self._log.warn(
                "Discovery registry full ({count} peers); refusing {peer_id!r}",
                count=len(self._by_id),
                peer_id=peer_id,
            )
            return error("registry full")
        if mine is not None:
            del self._by_id[mine.peer_id]
            del self._by_connection[connection]
        if holder is not None and holder.connection is not connection:
            self._log.info(
                "Peer {peer_id!r} registered by a newer connection; dropping the old one",
                peer_id=peer_id,
            )
            del self._by_id[peer_id]
            del self._by_connection[holder.connection]
            holder.connection.send_message(error("peer_id registered by another connection"))
            holder.connection.close()
        record = PeerRecord(connection, peer_id, peer_type, public_ip, public_port)
        self._by_id[peer_id] = record
        self._by_connection[connection] = record
        return {
            "type": "registered",
            "peer_id": peer_id,
            "public_ip": public_ip,
            "public_port": public_port,
        }

    def list_peers(self) -> Message:
        """The C{peer_list} reply."""
        return {"type": "peer_list", "peers": [r.describe() for r in self._by_id.values()]}

    def get_peer_info(self, connection: IDiscoveryPeer, target_id: str) -> Message:
        """Look up C{target_id} for C{connection} and tell the target who asked.

        The target is sent C{connection_request} with the asker's id, type
        and address.  The asker must have registered first.

        @return: C{peer_info}, or an C{error} if the asker is not registered
            or the target is unknown.
        """
        asker = self._by_connection.get(connection)
        if asker is None:
            return error("register before get_peer_info")
        target = self._by_id.get(target_id)
        if target is None:
            return error("unknown peer")
        target.connection.send_message(
            {
                "type": "connection_request",
                "from_peer_id": asker.peer_id,
                "from_peer_type": asker.peer_type,
                "from_public_ip": asker.public_ip,
                "from_public_port": asker.public_port,
            }
        )
        return {"type": "peer_info", **target.describe()}

    def unregister(self, connection: IDiscoveryPeer) -> PeerRecord | None:
        """Forget C{connection} (it closed); a no-op if it holds no entry.

        @return: the entry that was removed, if any.
        """
        record = self._by_connection.pop(connection, None)
        if record is not None:
            del self._by_id[record.peer_id]
        return record
