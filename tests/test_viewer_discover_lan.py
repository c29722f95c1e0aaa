"""`litedesk-viewer --discover-lan` lists hosts that answer RustDesk's discovery ping."""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from litedesk.host.discoverable import LanResponder

reactor: Any = _reactor


class DiscoverLanTests(TestCase):
    @inlineCallbacks
    def test_lists_two_hosts_as_json_and_text(self) -> Any:
        """Two answering hosts are listed with id, hostname and platform."""
        ports: list[Any] = []
        for peer_id, name in (("111111111", "office-pc"), ("222222222", "lab-pc")):
            # Each on its own loopback address, both on the same port, like
            # two machines on one LAN.
            host = f"127.0.0.{len(ports) + 2}"
            p = reactor.listenUDP(
                0 if not ports else ports[0].getHost().port,
                LanResponder(peer_id, name),
                interface=host,
            )
            self.addCleanup(p.stopListening)
            ports.append(p)
        port = ports[0].getHost().port
        argv = [
            "-c",
            "from litedesk.viewer.cli import main; main()",
            "--discover-lan",
            "--lan-port",
            str(port),
            "--discover-to",
            "127.0.0.2",
            "--discover-to",
            "127.0.0.3",
            "--discover-wait",
            "0.5",
        ]
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, [*argv, "--stats-json"], env=None
        )
        self.assertEqual(code, 0, err)
        found = json.loads(out)
        self.assertEqual([h["id"] for h in found], ["111111111", "222222222"])
        self.assertEqual(found[0]["hostname"], "office-pc")
        self.assertTrue(found[0]["platform"])
        out, err, code = yield getProcessOutputAndValue(sys.executable, argv, env=None)
        self.assertEqual(code, 0, err)
        lines = out.decode().strip().splitlines()
        self.assertEqual(lines[1].split("\t")[:2], ["222222222", "lab-pc"])
