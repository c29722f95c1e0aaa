"""The viewer with several rendezvous servers (C{litedesk-viewer ID --rendezvous A,B}).

Covers the list's parsing, the sign-in token sent for a list and, against
real servers on loopback, which failures move on to the next server (cannot
connect, connection closed) and which answers are final (an unknown id is
not asked of the next server).
The whole path (a host that moved to server 2 reached through the list, and
C{--stats-json} naming the server) is in tests/test_host_failover.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import ensureDeferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.viewer.api_tokens import SignedIn, TokenStore, logins_path
from litedesk.viewer.connection import (
    FailureReason,
    UsageFailure,
    failure_reason,
    find_route,
    rendezvous_entries,
)
from litedesk.viewer.route import ConnectError
from litedesk.viewer.sign_in import token_for

from .support.ports import free_port_pair
from .support.rendezvous_nodes import start_node

reactor: Any = _reactor


class EntriesTests(SynchronousTestCase):
    def test_list_in_order(self) -> None:
        self.assertEqual(rendezvous_entries(" a.example, b:21200 "), ["a.example", "b:21200"])
        self.assertEqual(rendezvous_entries("ws://a.example/"), ["ws://a.example/"])

    def test_empty_entry_refused(self) -> None:
        with self.assertRaises(UsageFailure) as caught:
            rendezvous_entries("a.example,,b.example")
        self.assertIn("empty entry", str(caught.exception))

    def test_token_of_the_first_server_sent_for_a_list(self) -> None:
        """A viewer signed in to a cluster's first node sends that token whichever
        node it asks (the nodes share their accounts)."""
        config = Path(self.mktemp()) / "viewer.conf"
        config.parent.mkdir()
        TokenStore(logins_path(config)).put(
            "a.example", SignedIn("http://a.example:21114", "ann", "tok-1")
        )
        args = argparse.Namespace(rendezvous="a.example, b.example", config=config)
        self.assertEqual(self.successResultOf(ensureDeferred(token_for(reactor, args))), "tok-1")


class _Counting(Protocol):
    """Counts connections; closes each at once when told to."""

    def __init__(self, seen: list[int], close: bool) -> None:
        self.seen = seen
        self.close = close

    def connectionMade(self) -> None:
        self.seen.append(1)
        if self.close and self.transport is not None:
            self.transport.loseConnection()


class FindRouteTests(TestCase):
    def setUp(self) -> None:
        self.port = free_port_pair()
        self.node = start_node(Path(self.mktemp()), self.port)
        self.addCleanup(lambda: self.node.stopService() if self.node.running else None)

    def args(self, rendezvous: str) -> argparse.Namespace:
        return argparse.Namespace(
            target="999888777",
            rendezvous=rendezvous,
            key=self.node.key.public_key,
            force_relay=True,
            websocket=False,
            ws_ca=None,
        )

    def listener(self, close: bool) -> tuple[int, list[int]]:
        seen: list[int] = []
        port = reactor.listenTCP(
            0, Factory.forProtocol(lambda: _Counting(seen, close)), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port, seen

    @inlineCallbacks
    def test_unreachable_server_skipped(self) -> Any:
        """A server nobody listens on is skipped: the next one answers (here: that
        the id is unknown, which only a server that was asked can say)."""
        dead = free_port_pair()
        d = ensureDeferred(
            find_route(reactor, self.args(f"127.0.0.1:{dead},127.0.0.1:{self.port}"), "")
        )
        error = yield self.assertFailure(d, ConnectError)
        self.assertEqual(failure_reason(error), FailureReason.UNKNOWN_ID)

    @inlineCallbacks
    def test_closing_server_skipped(self) -> Any:
        closing, seen = self.listener(close=True)
        d = ensureDeferred(
            find_route(reactor, self.args(f"127.0.0.1:{closing},127.0.0.1:{self.port}"), "")
        )
        error = yield self.assertFailure(d, ConnectError)
        self.assertEqual(failure_reason(error), FailureReason.UNKNOWN_ID)
        self.assertTrue(seen)

    @inlineCallbacks
    def test_an_answer_is_final(self) -> Any:
        """An unknown id is the answer: the next server is not asked."""
        other, seen = self.listener(close=False)
        d = ensureDeferred(
            find_route(reactor, self.args(f"127.0.0.1:{self.port},127.0.0.1:{other}"), "")
        )
        error = yield self.assertFailure(d, ConnectError)
        self.assertEqual(failure_reason(error), FailureReason.UNKNOWN_ID)
        self.assertEqual(seen, [])

    @inlineCallbacks
    def test_last_failure_reported(self) -> Any:
        """When no server answers, the error is the last server's."""
        d = ensureDeferred(
            find_route(reactor, self.args(f"127.0.0.1:{free_port_pair()},127.0.0.1:1"), "")
        )
        error = yield self.assertFailure(d, ConnectError)
        self.assertEqual(failure_reason(error), FailureReason.RENDEZVOUS_UNREACHABLE)
        self.assertIn("127.0.0.1:1", str(error))
