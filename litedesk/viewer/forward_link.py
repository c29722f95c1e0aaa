# -*- test-case-name: tests.test_viewer_files_window -*-
"""The forward dialog's handle on the C{--forward} listener.

L{start_forwarding} starts what C{litedesk-viewer --forward LPORT:HOST:PORT}
starts (L{litedesk.viewer.forward.LocalForward}: a first port-forward
session opened at once, so that "forward not allowed" or "forward target
unreachable" is known before anything listens, then one session per
connection accepted on 127.0.0.1:LPORT).  L{Forwarding} is all the dialog
reads of it: live counters, the last failure of a later connection's
session, and C{stop()}.
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IListeningPort

from litedesk.forward.rules import ForwardSpec
from litedesk.viewer.forward import LocalForward


class Forwarding:
    """A running forward: 127.0.0.1:C{listen_port} to C{host}:C{port} on the host's side."""

    def __init__(self, forward: LocalForward, port: IListeningPort) -> None:
        self._forward = forward
        self._port = port

    @property
    def connections(self) -> int:
        """Local connections accepted so far."""
        return self._forward.connections

    @property
    def bytes_out(self) -> int:
        """Bytes from local clients to the target so far (running connections too)."""
        f = self._forward
        return f.bytes_out + sum(s.bytes_to_session for s in f.splices)

    @property
    def bytes_in(self) -> int:
        """Bytes from the target to local clients so far (running connections too)."""
        f = self._forward
        return f.bytes_in + sum(s.bytes_to_tcp for s in f.splices)

    @property
    def last_error(self) -> str:
        """Why the latest connection's session failed (C{""}: none has)."""
        return self._forward.last_error

    def stop(self) -> Deferred[Any]:
        """Stop listening and close every forwarded connection; fires when they are gone."""
        closed = maybeDeferred(self._port.stopListening)
        return DeferredList([closed, self._forward.stop()], consumeErrors=True)


def parse_port(text: str, what: str) -> int:
    """A TCP port typed by a person.

    @raise ValueError: with a line to show (C{"local port: give a number 1-65535"}).
    """
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{what}: give a number 1-65535")
    return int(text)


async def start_forwarding(
    reactor: Any, args: argparse.Namespace, password: str, listen_port: int, host: str, port: int
) -> Forwarding:
    """Open the first session to C{host}:C{port} through the host, then listen.

    @raise Exception: the host refused (C{SessionError("forward not
        allowed")}, "forward target unreachable", a wrong password...) or
        the local port cannot be listened on (C{CannotListenError}).
    """
    forward = LocalForward(reactor, args, ForwardSpec(listen_port, host, port), password)
    await forward.probe()
    try:
        listening = await forward.listen()
    except Exception:
        await forward.stop()
        raise
    return Forwarding(forward, listening)
