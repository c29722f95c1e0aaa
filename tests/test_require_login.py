"""C{--require-login}: a real C{twistd litedesk-relay} refuses viewers without a live token.

The server runs as its own process; users and tokens are put in its ops
database from outside (C{litedesk-admin}, and a token row written as a
sign-in would), which also proves the server notices another process's
changes.  The viewer is the stock-client emulator: its punch and relay
requests get RustDesk's refusal fields (C{other_failure}, C{refuse_reason})
with texts saying what to do, and a request with a live token reaches a
real registered host.  Hosts register without any token.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from litedesk.ops import users
from litedesk.ops.opsdb import OPS_DB_FILE, connect
from litedesk.relay_tap import Options
from litedesk.rendezvous.login_gate import NO_TOKEN, TOKEN_INVALID

from .support import rustdesk_rendezvous as emu
from .support.polling import wait_until
from .support.ports import free_port_pair
from .support.processes import RelayProcess, litedesk_admin
from .test_rendezvous_secure_tcp import HOST_ID, HOST_PK, FakeHost


class RequireLoginTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.port = free_port_pair()
        self.data = Path(self.mktemp())
        self.data.mkdir(mode=0o700)
        made = litedesk_admin(self.data, "user", "add", "alice", stdin="correct horse\n")
        self.assertEqual(made.returncode, 0, made.stderr)
        self.log = Path(self.mktemp())
        self.relay = RelayProcess(self.data, self.port, self.log, "--key", "-", "--require-login")
        self.addCleanup(self.relay.stop)
        self.key = (self.data / "id_ed25519.pub").read_text().strip()
        self.server = f"127.0.0.1:{self.port}"

    def issue_token(self, token: str) -> None:
        """A live token for alice, written as the server's own sign-in writes it."""
        with contextlib.closing(connect(self.data / OPS_DB_FILE)) as conn, conn:
            users.insert_token(conn, token, "alice", "api", now=time.time(), lifetime=3600)

    def punch_refusal(self, token: str, peer_id: str = HOST_ID) -> str:
        try:
            emu.punch_hole_request(self.server, self.key, peer_id, token=token)
        except emu.RendezvousFailure as e:
            return str(e)
        return ""

    def test_no_token_refused_with_a_text_saying_what_to_do(self) -> None:
        """No token: the app shows the server's text; unknown ids get the same answer, so a
        stranger cannot probe which ids exist."""
        host = FakeHost(self.port)  # a host registers without any token
        self.addCleanup(host.sock.close)
        self.assertEqual(self.punch_refusal(""), NO_TOKEN)
        self.assertEqual(self.punch_refusal("", peer_id="nobody1"), NO_TOKEN)
        with self.assertRaises(emu.RendezvousFailure) as caught:
            emu.request_relay(self.server, self.key, HOST_ID, f"127.0.0.1:{self.port + 1}")
        self.assertEqual(str(caught.exception), NO_TOKEN)

    def test_unknown_token_refused(self) -> None:
        self.assertEqual(self.punch_refusal("not-a-token"), TOKEN_INVALID)
        with self.assertRaises(emu.RendezvousFailure) as caught:
            emu.request_relay(
                self.server, self.key, HOST_ID, f"127.0.0.1:{self.port + 1}", token="x" * 43
            )
        self.assertEqual(str(caught.exception), TOKEN_INVALID)

    def test_live_token_reaches_the_host_until_the_user_is_disabled(self) -> None:
        """A token issued in the database is honoured within seconds (the server reloads
        when another process commits); disabling the user ends it just as fast."""
        token = users.new_token()
        self.issue_token(token)
        host = FakeHost(self.port)
        answer = None

        def punched() -> bool:
            nonlocal answer
            try:
                answer, _ = emu.logged_in_punch_hole_request(
                    self.server, self.key, HOST_ID, token, secure_wait=5.0
                )
            except emu.RendezvousFailure as e:
                self.assertEqual(str(e), TOKEN_INVALID)
                return False
            return True

        wait_until(punched, timeout=15, interval=0.5)
        host.close()
        self.assertIsNone(host.error)
        assert answer is not None
        self.assertEqual(answer.kind, "punch")
        self.assertEqual(answer.host_pk, HOST_PK)

        disabled = litedesk_admin(self.data, "user", "disable", "alice")
        self.assertEqual(disabled.returncode, 0, disabled.stderr)
        wait_until(lambda: self.punch_refusal(token) == TOKEN_INVALID, timeout=15, interval=0.5)

    def test_refusals_are_counted_and_logged(self) -> None:
        """Each refusal is one warning line naming the address, for fail2ban."""
        self.punch_refusal("")
        self.punch_refusal("bogus")
        wait_until(lambda: self.log.read_text().count("(--require-login)") >= 2, timeout=10)
        text = self.log.read_text()
        self.assertIn("from 127.0.0.1 for 123456789 refused: no token (--require-login)", text)
        self.assertIn("refused: token not live (--require-login)", text)


class OptionTests(SynchronousTestCase):
    def test_needs_the_api_server(self) -> None:
        """Users log in on the API server: --require-login without it is a usage error."""
        for extra in (["--no-api"], ["--relay-only"]):
            with self.assertRaises(usage.UsageError) as caught:
                Options().parseOptions(["--require-login", *extra])
            self.assertIn("--require-login needs", str(caught.exception))
