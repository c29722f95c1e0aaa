"""LiteDesk v1 JSON discovery: an opt-in, length-prefixed JSON peer directory.

L{DiscoveryRegistry} (sans-IO state) and L{DiscoveryFactory} (the Twisted
server side) are the public API; see L{litedesk.discovery.protocol} for the
wire protocol.
"""

from litedesk.discovery.protocol import (
    MAX_MESSAGE_LENGTH,
    DiscoveryFactory,
    DiscoveryProtocol,
    ProtocolViolation,
    decode_request,
    encode_message,
)
from litedesk.discovery.state import (
    DEFAULT_MAX_PEERS,
    MAX_PEER_ID_LENGTH,
    DiscoveryRegistry,
    IDiscoveryPeer,
    PeerRecord,
)

__all__ = [
    "DEFAULT_MAX_PEERS",
    "MAX_MESSAGE_LENGTH",
    "MAX_PEER_ID_LENGTH",
    "DiscoveryFactory",
    "DiscoveryProtocol",
    "DiscoveryRegistry",
    "IDiscoveryPeer",
    "PeerRecord",
    "ProtocolViolation",
    "decode_request",
    "encode_message",
]
