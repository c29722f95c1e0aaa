"""Relay-server list: parsing, round robin, and the TCP health check over real sockets."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.rendezvous.relaylist import RelayList, parse_relay_list


class ParsingTests(SynchronousTestCase):
    def test_bad_entries_dropped(self) -> None:
        """Unparseable entries in --relay-servers are dropped, as hbbs does."""
        self.assertEqual(
            parse_relay_list(" a.example.com, ,b.example.com:x, c.example.com:21117,d:0"),
            ["a.example.com", "c.example.com:21117"],
        )

    def test_round_robin(self) -> None:
        """Each punch request gets the next relay in turn; no relays gives ''."""
        relays = RelayList(["a", "b", "c"])
        self.assertEqual([relays.pick() for _ in range(4)], ["a", "b", "c", "a"])
        self.assertEqual(RelayList([]).pick(), "")


class HealthCheckTests(TestCase):
    @inlineCallbacks
    def test_dead_relay_skipped(self) -> Any:
        """A relay that refuses TCP connections is not handed out; it returns when it is up."""
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol)
        )
        self.addCleanup(port.stopListening)
        up = f"127.0.0.1:{port.getHost().port}"
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
        s.close()  # nothing listens there now
        dead = f"127.0.0.1:{dead_port}"
        relays = RelayList([up, dead], timeout=2)
        yield relays.check(reactor)
        self.assertEqual(relays.active, [up])
        self.assertEqual({relays.pick() for _ in range(4)}, {up})

        revived = yield TCP4ServerEndpoint(reactor, dead_port, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol)
        )
        self.addCleanup(revived.stopListening)
        yield relays.check(reactor)
        self.assertEqual(relays.active, [up, dead])

    @inlineCallbacks
    def test_all_dead_keeps_list(self) -> Any:
        """If no relay answers, the list is kept rather than emptied."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        relays = RelayList([f"127.0.0.1:{p}", f"127.0.0.2:{p}"], timeout=2)
        yield relays.check(reactor)
        self.assertEqual(relays.active, [f"127.0.0.1:{p}", f"127.0.0.2:{p}"])
