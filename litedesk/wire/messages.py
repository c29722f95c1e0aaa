"""Parsing helpers for C{hbb.RendezvousMessage} that never raise on bad input."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from litedesk.proto import rendezvous_pb2 as rz

RendezvousMessage = rz.RendezvousMessage


def parse_rendezvous(data: bytes) -> rz.RendezvousMessage | None:
    """Parse one message; None for garbage.

    The C protobuf runtime (upb) caps nesting depth, so hostile input such as
    300,000 nested groups is a C{DecodeError}, not a crash; C{RecursionError}
    is caught too in case the pure-Python runtime is in use.
    """
    msg = rz.RendezvousMessage()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError):
        return None
    return msg


def kind(msg: rz.RendezvousMessage) -> str | None:
    """The name of the oneof member that is set, e.g. C{"register_peer"}."""
    name: str | None = msg.WhichOneof("union")
    return name


def serialize(**member: object) -> bytes:
    """C{serialize(register_peer_response=rz.RegisterPeerResponse(...))}."""
    return rz.RendezvousMessage(**member).SerializeToString()  # type: ignore[arg-type]
