"""The host's port-forward session (docs/protocol.rst §13): placeholder.

L{HostForwardSession} is mixed into L{litedesk.session.host_session.HostSession}.
"""

from __future__ import annotations

from typing import Any

from litedesk.proto import message_pb2 as pb

__all__ = ["HostForwardSession"]


class HostForwardSession:
    ctx: Any

    def _forward_allowed(self, pf: pb.PortForward) -> bool:
        return False

    def _start_port_forward(self, pf: pb.PortForward) -> None:
        raise NotImplementedError

    def _end_port_forward(self) -> None:
        pass
