"""The viewer signs in to a server that requires it (C{litedesk-viewer --login}).

Covers, from the person's side:

  - where the API server is (RustDesk's rendezvous port - 2, or
    C{--api-server}) and where the token is kept (C{logins.json}, 0600,
    one sign-in per server however the server is spelled);
  - the API's answers read by L{litedesk.viewer.api_login.parse_login_answer}
    under hypothesis, and odd API servers (a second factor asked for, an
    answer that is not JSON or is endless, nobody listening) served by a
    twisted.web stand-in on loopback, each ending in one clear sentence;
  - a real C{twistd litedesk-relay --require-login} with a user made by
    C{litedesk-admin}: C{--login} from a separate viewer process (password on
    standard input), a wrong password, C{--logout} ending the token on the
    server;
  - end to end with a real host agent on Xvfb: without a sign-in the viewer
    is told to run C{litedesk-viewer --login USER}; C{--login USER ID} signs
    in and connects; later connections send the stored token (punch and
    relay paths).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import stat
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.login_gate import NO_TOKEN, TOKEN_INVALID
from litedesk.rendezvous.secure_tcp import SecureTcpServer
from litedesk.session.links import open_rendezvous
from litedesk.viewer.api_login import LoginFailure, parse_login_answer, sign_in, sign_out
from litedesk.viewer.api_tokens import (
    LOGINS_FILE,
    SignedIn,
    TokenStore,
    api_server_url,
    server_key,
)
from litedesk.viewer.connection import FailureReason, failure_reason
from litedesk.viewer.refusals import ConnectError, LoginRequired, punch_failure, relay_refusal
from litedesk.viewer.route import find_host, request_relay
from litedesk.viewer.secure_rendezvous import CANNOT_SECURE, answer_offer, secure_link
from litedesk.wire.keys import server_key_bytes
from litedesk.wire.secretbox import SecretChannel

from .support import rustdesk_rendezvous as emu
from .support.e2e_lab import RecordingProxy
from .support.polling import wait_until
from .support.ports import free_port, free_port_pair
from .support.processes import TWISTD, RelayProcess, litedesk_admin, stop_all
from .support.skips import requires
from .support.xvfb import Xvfb, _die_with_parent

VIEWER = [sys.executable, "-c", "from litedesk.viewer.cli import main; main()"]
PASSWORD = "correct horse"
HOST_PASSWORD = "host-password-7"


class ApiServerUrlTests(SynchronousTestCase):
    def test_rendezvous_port_minus_two(self) -> None:
        """As RustDesk's get_api_server: same host, port - 2, plain HTTP."""
        self.assertEqual(api_server_url("example.org"), "http://example.org:21114")
        self.assertEqual(api_server_url("example.org:31116"), "http://example.org:31114")
        self.assertEqual(api_server_url("[2001:db8::1]:21116"), "http://[2001:db8::1]:21114")

    def test_named_api_server_wins(self) -> None:
        self.assertEqual(
            api_server_url("example.org", "https://api.example.org/"), "https://api.example.org"
        )

    def test_unusable(self) -> None:
        """Each says what to give instead."""
        for server, api in (
            ("wss://example.org", None),
            ("example.org:2", None),
            ("example.org", "ftp://example.org"),
            ("example.org", "example.org:21114"),
        ):
            with self.assertRaises(ValueError) as caught:
                api_server_url(server, api)
            self.assertIn("--api-server", str(caught.exception))


class TokenStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.store = TokenStore(self.dir / "litedesk" / LOGINS_FILE)

    def signed(self, token: str = "tok-1") -> SignedIn:
        return SignedIn("http://example.org:21114", "alice", token, "dXVpZA==", 1.0)

    def test_one_sign_in_per_server_however_spelled(self) -> None:
        self.store.put("Example.org", self.signed())
        self.assertEqual(self.store.token("example.org:21116"), "tok-1")
        self.assertEqual(self.store.token("other.org"), "")
        self.assertEqual(self.store.token("example.org:21117"), "")
        self.assertEqual(server_key("wss://Example.org/ws/id"), "wss://example.org")

    def test_file_is_private(self) -> None:
        """Only the user can read the tokens: 0600 file in a 0700 directory."""
        self.store.put("example.org", self.signed())
        self.assertEqual(stat.S_IMODE(self.store.path.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(self.store.path.parent.stat().st_mode), 0o700)
        self.store.put("other.org", self.signed("tok-2"))  # replaced, still private
        self.assertEqual(stat.S_IMODE(self.store.path.stat().st_mode), 0o600)
        self.assertEqual(self.store.token("example.org"), "tok-1")

    def test_remove(self) -> None:
        """The file goes with the last sign-in."""
        self.store.put("example.org", self.signed())
        self.store.put("other.org", self.signed("tok-2"))
        self.assertTrue(self.store.remove("example.org:21116"))
        self.assertFalse(self.store.remove("example.org"))
        self.assertEqual(self.store.token("other.org"), "tok-2")
        self.assertTrue(self.store.remove("other.org"))
        self.assertFalse(self.store.path.exists())

    @settings(max_examples=200, deadline=None)
    @given(
        st.one_of(
            st.binary(max_size=200),
            st.recursive(
                st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(
                        st.sampled_from(["access_token", "api_server", "uuid", "signed_in_at"]),
                        inner,
                        max_size=4,
                    )
                ),
                max_leaves=12,
            ).map(lambda v: json.dumps({"servers": {"example.org:21116": v}}).encode()),
        )
    )
    def test_broken_file_means_no_sign_in(self, content: bytes) -> None:
        """Whatever the file holds, a connection sends a string token or none."""
        self.store.path.parent.mkdir(parents=True, exist_ok=True)
        self.store.path.write_bytes(content)
        token = self.store.token("example.org")
        self.assertIsInstance(token, str)


class LoginAnswerTests(SynchronousTestCase):
    def test_token_and_user(self) -> None:
        body = {"access_token": "abc", "type": "access_token", "user": {"name": "alice"}}
        answer = parse_login_answer(200, json.dumps(body).encode())
        self.assertEqual((answer.access_token, answer.user), ("abc", "alice"))

    def test_server_error_text_shown(self) -> None:
        with self.assertRaises(LoginFailure) as caught:
            parse_login_answer(200, b'{"error": "Wrong user name or password"}')
        self.assertEqual(
            str(caught.exception), "sign-in failed: the server says: Wrong user name or password"
        )
        with self.assertRaises(LoginFailure) as caught:
            parse_login_answer(429, b'{"error": "Too many\\nattempts\\u0007"}')
        self.assertIn("the server says: Too many attempts", str(caught.exception))

    @settings(max_examples=300, deadline=None)
    @given(
        st.integers(100, 599),
        st.one_of(
            st.binary(max_size=300),
            st.dictionaries(
                st.sampled_from(["access_token", "type", "user", "error", "x"]),
                st.none()
                | st.booleans()
                | st.integers()
                | st.text(max_size=40)
                | st.dictionaries(st.sampled_from(["name", "is_admin"]), st.text(max_size=10)),
                max_size=5,
            ).map(lambda d: json.dumps(d).encode()),
        ),
    )
    def test_any_answer_is_a_token_or_a_sentence(self, status: int, body: bytes) -> None:
        """The API server is the peer: nothing it sends raises anything but LoginFailure,
        and a token we accept is one we can put in a request."""
        try:
            answer = parse_login_answer(status, body)
        except LoginFailure as e:
            self.assertTrue(str(e).startswith("sign-in failed: "))
            self.assertNotIn("\n", str(e))
            return
        self.assertEqual(status, 200)
        self.assertTrue(answer.access_token.isascii() and answer.access_token.isprintable())


class RefusalTextTests(SynchronousTestCase):
    def test_login_texts_name_the_command(self) -> None:
        """The server's --require-login texts become 'login required' with the fix; other
        refusals keep their kind."""
        server = ("relay.example.org", 21116)
        for error in (
            punch_failure(rz.PunchHoleResponse(other_failure=NO_TOKEN), server),
            relay_refusal(TOKEN_INVALID, server),
        ):
            self.assertEqual(failure_reason(error), FailureReason.LOGIN_REQUIRED)
            self.assertTrue(FailureReason.LOGIN_REQUIRED.final)
            self.assertIn(
                "litedesk-viewer --login USER --rendezvous relay.example.org:21116", str(error)
            )
        by_url = LoginRequired(NO_TOKEN, "wss://example.org/")
        self.assertIn("litedesk-viewer --login USER --rendezvous wss://example.org/ ", str(by_url))
        busy = relay_refusal("busy", server)
        self.assertEqual(failure_reason(busy), FailureReason.RELAY_REFUSED)
        offline = punch_failure(rz.PunchHoleResponse(failure=rz.PunchHoleResponse.OFFLINE), server)
        self.assertEqual(failure_reason(offline), FailureReason.HOST_OFFLINE)


class SecureRendezvousTests(TestCase):
    """The viewer's half of secure TCP (before a token is sent), against the server's own
    sans-IO half and against servers that do not offer it."""

    def setUp(self) -> None:
        self.signing = SigningKey.generate()
        self.server_pk = bytes(self.signing.verify_key)

    def test_keys_with_the_server(self) -> None:
        """Our answer opens on the server's side; then both seal and open each other's frames."""
        server = SecureTcpServer(self.signing)
        offer = rz.RendezvousMessage.FromString(server.offer() or b"").key_exchange
        answer, key = answer_offer(offer, self.server_pk)
        self.assertIsNone(
            server.receive(rz.RendezvousMessage(key_exchange=answer).SerializeToString())
        )
        self.assertTrue(server.secured)
        ours = SecretChannel(key)
        request = b"punch request with a token"
        self.assertEqual(server.receive(ours.seal(request)), request)
        self.assertEqual(ours.open(server.send(b"the answer")), b"the answer")

    def test_offer_signed_by_another_key(self) -> None:
        """A server (or a man in the middle) without the configured key gets no token."""
        other = SecureTcpServer(SigningKey.generate())
        offer = rz.RendezvousMessage.FromString(other.offer() or b"").key_exchange
        with self.assertRaises(ConnectError) as caught:
            answer_offer(offer, self.server_pk)
        self.assertIn("not signed by the server key given (--key)", str(caught.exception))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=120), max_size=4))
    def test_any_offer_is_answered_or_refused(self, keys: list[bytes]) -> None:
        """The offer is peer input: anything but a good one is a ConnectError."""
        try:
            answer_offer(rz.KeyExchange(keys=keys), self.server_pk)
        except ConnectError as e:
            self.assertEqual(e.reason, CANNOT_SECURE)
        else:
            self.fail("an unsigned offer was answered")

    async def test_silent_or_closing_server(self) -> None:
        """No offer (a server that says nothing, or hangs up): the token is not sent."""
        for factory in (Factory.forProtocol(Protocol), Factory.forProtocol(_Hangup)):
            port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
            self.addCleanup(port.stopListening)
            link = await open_rendezvous(reactor, "127.0.0.1", port.getHost().port)
            with self.assertRaises(ConnectError) as caught:
                await secure_link(reactor, link, self.server_pk, wait=1.0)
            self.assertEqual(caught.exception.reason, CANNOT_SECURE)
            self.assertEqual(failure_reason(caught.exception), FailureReason.CANNOT_SECURE)
            self.assertTrue(FailureReason.CANNOT_SECURE.final)  # the window does not retry
            await link.closed


class _Hangup(Protocol):
    """A server that hangs up at once."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class _StandIn(Resource):
    """An API server as odd as we like, following RustDesk's paths."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[bytes, dict[str, Any], bytes | None]] = []
        self.status = 200
        self.answer = b"{}"

    def render_POST(self, request: Any) -> bytes:
        body = json.loads(request.content.read())
        self.requests.append((request.path, body, request.getHeader(b"authorization")))
        request.setResponseCode(self.status)
        return self.answer


class OddApiServerTests(TestCase):
    def setUp(self) -> Any:
        self.api = _StandIn()
        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(self.api))

        def listening(port: Any) -> None:
            self.addCleanup(port.stopListening)
            self.url = f"http://127.0.0.1:{port.getHost().port}"

        return d.addCallback(listening)

    async def failure(self) -> str:
        with self.assertRaises(LoginFailure) as caught:
            await sign_in(reactor, self.url, "alice", PASSWORD, "dXVpZA==")
        return str(caught.exception)

    async def test_rustdesk_body_and_bearer(self) -> None:
        """The login body is a RustDesk app's; sign-out sends the token as Bearer."""
        self.api.answer = json.dumps(
            {"access_token": "t0k", "type": "access_token", "user": {"name": "alice"}}
        ).encode()
        answer = await sign_in(reactor, self.url, "alice", PASSWORD, "dXVpZA==")
        self.assertEqual(answer.access_token, "t0k")
        path, body, auth = self.api.requests[0]
        self.assertEqual(path, b"/api/login")
        self.assertEqual(
            {k: body[k] for k in ("username", "password", "uuid", "autoLogin", "type")},
            {
                "username": "alice",
                "password": PASSWORD,
                "uuid": "dXVpZA==",
                "autoLogin": True,
                "type": "account",
            },
        )
        self.assertEqual(body["deviceInfo"]["type"], "client")
        self.assertIsNone(auth)
        await sign_out(reactor, self.url, "t0k", "dXVpZA==")
        self.assertEqual(self.api.requests[1][0], b"/api/logout")
        self.assertEqual(self.api.requests[1][2], b"Bearer t0k")

    async def test_second_factor(self) -> None:
        self.api.answer = b'{"type": "tfa_check", "tfa_type": "totp"}'
        self.assertIn("second factor (tfa_check)", await self.failure())

    async def test_not_an_api_server(self) -> None:
        self.api.status = 404
        self.api.answer = b"<html>No Such Resource</html>"
        self.assertIn("is --api-server the server's API?", await self.failure())

    async def test_endless_answer_is_cut(self) -> None:
        """An answer far over 64 KiB is refused, not held."""
        self.api.answer = b"[" + b"0," * 100_000 + b"0]"
        self.assertIn("answer is over 65536 bytes", await self.failure())

    async def test_nobody_listening(self) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        message = await self.failure()
        self.assertIn(f"cannot reach the API server at {self.url}/api/login", message)
        self.assertIn("refused", message)


class ViewerProcess:
    """C{litedesk-viewer} runs as a person runs it, with its own config directory."""

    def __init__(self, home: Path, server: str, key: str, env: dict[str, str]) -> None:
        self.home = home
        self.server = server
        self.key = key
        self.env = dict(env, XDG_CONFIG_HOME=str(home), LITEDESK_PASSWORD=HOST_PASSWORD)

    @property
    def logins(self) -> Path:
        return self.home / "litedesk" / LOGINS_FILE

    def run(
        self, *args: str, stdin: str = "", timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*VIEWER, "--rendezvous", self.server, "--key", self.key, *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


class RealApiLoginTests(SynchronousTestCase):
    """--login and --logout against a real server's API, users made by litedesk-admin."""

    def setUp(self) -> None:
        self.port = free_port_pair()
        self.data = Path(self.mktemp())
        self.data.mkdir(mode=0o700)
        made = litedesk_admin(self.data, "user", "add", "alice", stdin=PASSWORD + "\n")
        self.assertEqual(made.returncode, 0, made.stderr)
        self.relay = RelayProcess(
            self.data, self.port, Path(self.mktemp()), "--key", "-", "--require-login"
        )
        self.addCleanup(self.relay.stop)
        key = (self.data / "id_ed25519.pub").read_text().strip()
        self.server = f"127.0.0.1:{self.port}"
        self.viewer = ViewerProcess(Path(self.mktemp()), self.server, key, dict(os.environ))
        self.key = key

    def punch_refusal(self, token: str) -> str:
        try:
            emu.punch_hole_request(self.server, self.key, "123456789", token=token)
        except emu.RendezvousFailure as e:
            return str(e)
        return ""

    def test_login_keeps_a_token_the_server_honours_and_logout_ends_it(self) -> None:
        signed = self.viewer.run("--login", "alice", stdin=PASSWORD + "\n")
        self.assertEqual(signed.returncode, 0, signed.stderr)
        self.assertIn(f"signed in as alice on http://127.0.0.1:{self.port - 2}", signed.stdout)
        self.assertEqual(stat.S_IMODE(self.viewer.logins.stat().st_mode), 0o600)
        token = TokenStore(self.viewer.logins).token(self.server)
        self.assertTrue(token)
        # The server takes it (an unknown id is past the gate: no login refusal).
        self.assertEqual(self.punch_refusal(token), "ID does not exist")

        out = self.viewer.run("--logout")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(f"signed out of {self.server} (alice)", out.stdout)
        self.assertFalse(self.viewer.logins.exists())
        wait_until(lambda: self.punch_refusal(token) == TOKEN_INVALID, timeout=15, interval=0.3)

    def test_logout_with_the_api_gone(self) -> None:
        """The token is forgotten here all the same, and the person is told it stays valid
        on the server."""
        signed = self.viewer.run("--login", "alice", stdin=PASSWORD + "\n")
        self.assertEqual(signed.returncode, 0, signed.stderr)
        self.relay.stop()
        out = self.viewer.run("--logout")
        self.assertEqual(out.returncode, 1)
        self.assertIn(f"forgot the token for {self.server}, but could not end it", out.stderr)
        self.assertIn("litedesk-admin user sign-out", out.stderr)
        self.assertFalse(self.viewer.logins.exists())

    def test_password_typed_at_a_terminal_is_not_echoed(self) -> None:
        """At a terminal the viewer prompts and reads the password without echo."""
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)

        def own_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        argv = [*VIEWER, "--rendezvous", self.server, "--login", "alice"]
        proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=self.viewer.env,
            preexec_fn=own_terminal,
        )
        os.close(slave)
        self.addCleanup(stop_all, [proc])
        seen = b""

        def read_until(marker: bytes) -> None:
            nonlocal seen
            while marker not in seen:
                ready, _, _ = select.select([master], [], [], 60)
                self.assertTrue(ready, f"no {marker!r} in {seen!r}")
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the viewer closed the terminal
                    chunk = b""
                self.assertTrue(chunk, f"no {marker!r} in {seen!r}")
                seen += chunk

        read_until(b"Password for alice: ")
        os.write(master, PASSWORD.encode() + b"\n")
        read_until(b"signed in as alice")
        self.assertEqual(proc.wait(60), 0)
        self.assertNotIn(PASSWORD.encode(), seen)
        self.assertTrue(TokenStore(self.viewer.logins).token(self.server))

    def test_wrong_password(self) -> None:
        out = self.viewer.run("--login", "alice", stdin="wrong\n")
        self.assertEqual(out.returncode, 1)
        self.assertEqual(
            out.stderr.strip(),
            "litedesk-viewer: sign-in failed: the server says: Wrong user name or password",
        )
        self.assertFalse(self.viewer.logins.exists())

    def test_unreachable_api(self) -> None:
        dead = f"http://127.0.0.1:{free_port()}"
        out = self.viewer.run("--login", "alice", "--api-server", dead, stdin=PASSWORD + "\n")
        self.assertEqual(out.returncode, 1)
        self.assertIn(
            f"sign-in failed: cannot reach the API server at {dead}/api/login", out.stderr
        )

    def test_usage_errors(self) -> None:
        """Nonsense combinations are refused before any password is asked for."""
        for args, why in (
            (("--login", "alice", "--logout"), "--login and --logout exclude each other"),
            (("--logout", "123456789"), "--logout takes no host id"),
            (("--login", "alice", "10.0.0.5:21118"), "give a host id, not HOST:PORT"),
        ):
            out = self.viewer.run(*args, stdin=PASSWORD + "\n")
            self.assertEqual(out.returncode, 2, out.stderr)
            self.assertIn(why, out.stderr)
        self.assertFalse(self.viewer.logins.exists())

    def test_token_cannot_be_kept(self) -> None:
        """A config directory that cannot be made is one line, not a traceback."""
        home = Path(self.mktemp())
        home.write_text("a file where the config directory should be")
        viewer = ViewerProcess(home, self.server, self.key, dict(os.environ))
        out = viewer.run("--login", "alice", stdin=PASSWORD + "\n")
        self.assertEqual(out.returncode, 1)
        self.assertIn("signed in, but cannot keep the token in", out.stderr)
        self.assertNotIn("Traceback", out.stderr)

    def test_no_password(self) -> None:
        out = self.viewer.run("--login", "alice", stdin="")
        self.assertEqual(out.returncode, 1)
        self.assertIn("no password on standard input", out.stderr)


@requires("Xvfb")
class RequireLoginEndToEndTests(TestCase):
    """Server with --require-login, a real host agent on Xvfb, the viewer CLI."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.xvfb = Xvfb(640, 480, 24).start()
        self.addCleanup(self.xvfb.stop)
        self.port = free_port_pair()
        data = self.dir / "server"
        data.mkdir(mode=0o700)
        made = litedesk_admin(data, "user", "add", "alice", stdin=PASSWORD + "\n")
        self.assertEqual(made.returncode, 0, made.stderr)
        self.relay = RelayProcess(
            data, self.port, self.dir / "relay.log", "--key", "-", "--require-login"
        )
        self.addCleanup(self.relay.stop)
        self.key = (data / "id_ed25519.pub").read_text().strip()
        self.server_pk = server_key_bytes(self.key)
        self.peer_id = "731902846"
        self.start_host()
        self.viewer = ViewerProcess(
            self.dir / "viewer-home", f"127.0.0.1:{self.port}", self.key, self.xvfb.env
        )

    def start_host(self) -> None:
        pwfile = self.dir / "host.pw"
        pwfile.write_text(HOST_PASSWORD)
        log = self.dir / "host.log"
        with open(self.dir / "host.out", "wb") as out:
            host = subprocess.Popen(
                [
                    *TWISTD,
                    "-n",
                    "--pidfile=",
                    "--logfile",
                    str(log),
                    "litedesk-host",
                    "--config-dir",
                    str(self.dir / "host"),
                    "--rendezvous",
                    f"127.0.0.1:{self.port}",
                    "--key",
                    self.key,
                    "--id",
                    self.peer_id,
                    "--password-file",
                    str(pwfile),
                    "--display",
                    str(self.xvfb.display),
                ],
                env=self.xvfb.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,
            )
        self.addCleanup(stop_all, [host])
        wait_until(
            lambda: log.exists() and f"as id {self.peer_id}" in log.read_text(),
            30,
            0.1,
            lambda: f"host to register; see {log}",
        )

    def stats(self, out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        self.assertEqual(out.returncode, 0, out.stderr)
        stats: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return stats

    def test_told_to_sign_in_then_gets_through(self) -> None:
        """Without a token: 'login required' and the command; --login USER ID signs in and
        connects; the next run sends the stored token, on the relay path too."""
        refused = self.viewer.run(self.peer_id, "--headless", "--stats-json")
        self.assertEqual(refused.returncode, 1)
        self.assertIn(f"login required: {NO_TOKEN}", refused.stderr)
        self.assertIn(
            f"litedesk-viewer --login USER --rendezvous 127.0.0.1:{self.port}", refused.stderr
        )

        first = self.viewer.run(
            "--login", "alice", self.peer_id, "--headless", "--stats-json", stdin=PASSWORD + "\n"
        )
        self.assertIn(self.stats(first)["path"], ("lan", "direct", "relay"))
        self.assertTrue(self.viewer.logins.exists())

        relayed = self.viewer.run(self.peer_id, "--headless", "--stats-json", "--force-relay")
        self.assertEqual(self.stats(relayed)["path"], "relay")

    def test_websocket_requests_carry_the_token(self) -> None:
        """Over WebSocket (ws://127.0.0.1:P+2) the same sign-in is sent, and the hint
        names the server as given."""
        ws = ("--headless", "--stats-json", "--websocket")
        refused = self.viewer.run(self.peer_id, *ws)
        self.assertEqual(refused.returncode, 1)
        self.assertIn(f"login required: {NO_TOKEN}", refused.stderr)
        self.assertIn(f"--login USER --rendezvous 127.0.0.1:{self.port} ", refused.stderr)
        signed = self.viewer.run("--login", "alice", stdin=PASSWORD + "\n")
        self.assertEqual(signed.returncode, 0, signed.stderr)
        self.assertEqual(self.stats(self.viewer.run(self.peer_id, *ws))["path"], "relay")

    async def test_token_never_crosses_in_clear(self) -> None:
        """The punch request with the token goes on a keyed connection (as RustDesk's
        secure_tcp): a recording proxy in front of the server never sees the token."""
        signed = self.viewer.run("--login", "alice", stdin=PASSWORD + "\n")
        self.assertEqual(signed.returncode, 0, signed.stderr)
        token = TokenStore(self.viewer.logins).token(f"127.0.0.1:{self.port}")

        async def through_proxy(token: str) -> tuple[Any, bytes]:
            proxy = RecordingProxy(("127.0.0.1", self.port))
            self.addCleanup(proxy.close)
            server = ("127.0.0.1", proxy.port)
            try:
                route: Any = await find_host(
                    reactor, server, self.key, self.peer_id, nat_test=False, token=token
                )
            except ConnectError as e:
                route = e
            return route, proxy.snapshot()

        # Without a token the request is plaintext, as for any RustDesk client.
        refused, clear = await through_proxy("")
        self.assertEqual(failure_reason(refused), FailureReason.LOGIN_REQUIRED)
        self.assertIn(self.peer_id.encode(), clear)
        route, sealed = await through_proxy(token)
        self.assertEqual(route.path, "lan")  # the host is on this machine
        self.assertNotIn(token.encode(), sealed)
        self.assertNotIn(self.peer_id.encode(), sealed)  # the whole request is sealed

    async def test_request_relay_carries_the_token(self) -> None:
        """The viewer's own RequestRelay (sent when a punch fails) is refused without a
        token and reaches the host with the stored one: the host names the relay."""
        signed = self.viewer.run("--login", "alice", stdin=PASSWORD + "\n")
        self.assertEqual(signed.returncode, 0, signed.stderr)
        token = TokenStore(self.viewer.logins).token(f"127.0.0.1:{self.port}")
        server = ("127.0.0.1", self.port)
        with self.assertRaises(ConnectError) as caught:
            await request_relay(reactor, server, self.peer_id, b"", "", 10.0)
        self.assertEqual(failure_reason(caught.exception), FailureReason.LOGIN_REQUIRED)
        route = await request_relay(
            reactor, server, self.peer_id, b"", "", 10.0, token=token, server_pk=self.server_pk
        )
        self.assertEqual(route.path, "relay")
        self.assertEqual(route.relay, ("127.0.0.1", self.port + 1))
