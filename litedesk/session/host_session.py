"""The host's side of a session: login, then screen out and input in.

Runs over the pinned TLS stream (the host is the TLS server).  After the
handshake the host sends C{Hash{salt, challenge}}; the viewer must answer
with a C{LoginRequest} whose password is SHA256(SHA256(pw||salt)||challenge)
(docs/protocol.rst §8.2).  Then the host sends
C{LoginResponse{peer_info}} and streams C{VideoFrame}s, C{CursorPosition}s
and clipboard changes; it applies C{MouseEvent}/C{KeyEvent}s and answers
C{TestDelay} pings.  Nothing is accepted before the login succeeds.

Before the login the peer is anyone who can open a TCP connection, so what
it can make the host hold is bounded (issue 9): frames of at most
L{PRELOGIN_MAX_FRAME} bytes (L{MAX_FRAME_LENGTH} once logged in), a TLS
handshake within L{HANDSHAKE_TIMEOUT} seconds, a login within
L{LOGIN_TIMEOUT}, C{TestDelay} echoes only as fresh messages with the known
fields and only while little is queued for the peer (a peer that never
reads is closed once L{PRELOGIN_MAX_BACKLOG} bytes wait for it), and the
number of such sessions per source and in total (L{HostContext.admission}).

What all sessions of one host share is in L{litedesk.session.host_context};
the messages the host builds are in L{litedesk.session.host_messages}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.proto import message_pb2 as pb
from litedesk.screen.backpressure import send_without_delay, transport_buffered
from litedesk.screen.codec import EncodedFrame
from litedesk.session.framing import MAX_FRAME_LENGTH, MessageProtocol
from litedesk.session.host_context import HostContext, StreamerLike
from litedesk.session.host_files import HostFileSession
from litedesk.session.host_forward import HostForwardSession
from litedesk.session.host_messages import (
    peer_info,
    pick_codec,
    session_summary,
    video_frame,
)
from litedesk.session.login_errors import (
    ERROR_NO_FILE_TRANSFER,
    ERROR_NO_FORWARD,
    ERROR_TRY_LATER,
)
from litedesk.session.viewer_requests import ViewerRequests

VERSION = "1.4.9"
SESSION_IDLE_TIMEOUT = 30.0  # RustDesk hosts close a session silent for 30 s
TEST_DELAY_INTERVAL = 1.0
LOGIN_TIMEOUT = 30.0
# A TLS handshake takes a few round trips; 10 s covers slow links, and the
# deadline is absolute, so trickling bytes cannot stretch it.
HANDSHAKE_TIMEOUT = 10.0
# The largest message before login is a LoginRequest (a few hundred bytes,
# RustDesk's with all options well under 4 KiB); 64 KiB leaves ample room.
PRELOGIN_MAX_FRAME = 64 * 1024
# Before login the host only replies to what it reads (Hash, TestDelay,
# LoginResponse): with more than this queued the peer is not reading...
PRELOGIN_QUIET_BACKLOG = 16 * 1024
# ...and with this much it is closed (it can make the host queue at most
# about this much plus one reply).
PRELOGIN_MAX_BACKLOG = 64 * 1024
# A viewer sends a LoginRequest and perhaps a few TestDelays (and another
# LoginRequest after a wrong password) before it is in; a peer sending
# thousands only makes the host work for nothing.
PRELOGIN_MAX_MESSAGES = 64


def _now_ms(clock: IReactorTime) -> int:
    return int(clock.seconds() * 1000)


@implementer(IHandshakeListener)
class HostSession(HostFileSession, HostForwardSession, ViewerRequests, MessageProtocol):
    """One viewer's session on this host.

    @ivar relayed: the session runs over a relay leg the host opened (its
        peer address is the relay's, shared by every relayed viewer).
    @ivar rustdesk: the peer is a stock RustDesk client (inside RustDesk's
        secure channel) rather than a LiteDesk viewer: its codec, key codes,
        wheel direction, clipboard encoding and view-only notice follow
        RustDesk (docs/protocol.rst §8.3).
    @ivar state: C{"handshake"}, C{"login"}, C{"active"}, C{"refused"} or
        C{"closed"}; leaving the first two ends the session's unauthenticated
        accounting (L{HostContext.admission}).
    """

    _log = Logger()
    idle_timeout = SESSION_IDLE_TIMEOUT
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT
    max_frame_length = PRELOGIN_MAX_FRAME
    _state = "handshake"
    _prelogin_messages = 0
    # "desktop", "file_transfer" or "port_forward": the LoginRequest's kind.
    kind = "desktop"
    #: How the viewer reached us (the viewer's --stats-json names it alike:
    #: udp, natpmp, direct, ipv6, lan, upnp, relay, listen) and over what
    #: (quic or tcp); set by whoever builds the session, named in its summary.
    path = "?"
    carrier = "tcp"

    def __init__(
        self,
        ctx: HostContext,
        default_codec: str = "h264",
        direct: bool = False,
        relayed: bool = False,
        rustdesk: bool = False,
    ) -> None:
        self.ctx = ctx
        self.rustdesk = rustdesk
        # From the LoginRequest: what the client can read (multi_clipboards).
        self.peer_version = ""
        self.peer_platform = ""
        # Direct (--listen) viewers name the host by the address they dialled,
        # as RustDesk's direct IP access does, not by its id.
        self.direct = direct
        self.relayed = relayed
        self.clock = ctx.clock
        self.default_codec = default_codec
        self.state = "handshake"
        self.challenge = ""
        self.streamer: StreamerLike | None = None
        self._ping: LoopingCall | None = None
        self._ping_outstanding: int | None = None
        self.last_delay = 0
        self.peer = "?"
        self.viewer_id = ""
        self._told_view_only = False
        self._login_timer: Any = None
        self.display_index = 0
        self.codec = default_codec
        self._rtts: list[int] = []
        self._started = ctx.clock.seconds()

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        # Hooked here rather than in _login so that every way out of the
        # unauthenticated states (login, refusal, close) is covered at once.
        self._state = value
        if value == "active":
            # Logged in: video, clipboard and file messages may be large.
            self.set_max_frame_length(MAX_FRAME_LENGTH)
        if value not in ("handshake", "login") and self.ctx.admission is not None:
            self.ctx.admission.leave(self)

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        assert self.transport is not None
        self.peer = str(getattr(self.transport.getPeer(), "host", "?"))
        admission = self.ctx.admission
        if admission is not None and not admission.admit(self, self.peer, shared=self.relayed):
            # Refused before anything was read or sent; the admission logs it
            # (rate-limited), so no per-connection line here.
            self.abort()

    def evict(self, reason: str) -> None:
        """Called by the admission to make room: drop at once, send nothing."""
        self.abort()

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        if self.closing:
            return
        challenge = self.ctx.verifier.new_challenge()
        self.challenge = challenge.challenge
        self.state = "login"
        self.send_message(
            pb.Message(hash=pb.Hash(salt=challenge.salt, challenge=challenge.challenge))
        )
        self._login_timer = self.ctx.clock.callLater(LOGIN_TIMEOUT, self._login_timeout)

    def _login_timeout(self) -> None:
        self._login_timer = None
        if self.state == "login":
            self.close("no login within 30 s")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None
        was_active = self in self.ctx.sessions
        self._end_file_transfer()
        self._end_port_forward()
        self.ctx.sessions.discard(self)
        if self._ping is not None and self._ping.running:
            self._ping.stop()
        stats = getattr(self.streamer, "stats", None)
        if self.streamer is not None:
            self.streamer.stop()
            self.streamer = None
        if was_active:
            if self.ctx.input is not None and not self.ctx.sessions:
                # Nothing may stay pressed on the host once the viewers are
                # gone.  The injector is shared, so while another viewer is
                # still connected its held keys are left alone.
                self.ctx.input.release_all()
            duration = max(1e-6, self.ctx.clock.seconds() - self._started)
            self._log.info(
                "Session with {viewer} ({peer}) over {path}/{carrier} ended after "
                "{duration:.0f} s: {reason}; "
                "{frames} frames ({fps:.1f} fps), {mbps:.2f} Mb/s, {dropped} dropped, "
                "round trip avg {rtt_avg} ms max {rtt_max} ms",
                viewer=self.viewer_id or "viewer",
                peer=self.peer,
                path=self.path,
                carrier=self.carrier,
                reason=reason.getErrorMessage(),
                session_summary=True,
                **session_summary(stats, self._rtts, duration),
            )
        self.state = "closed"

    def timed_out(self) -> None:
        if not self.handshake_pending:
            # Before the handshake there is no one to tell (and anything
            # queued there would only wait for a handshake that never comes).
            self._misc_close("Timeout")
        self.close("Timeout", idle_timeout=self.idle_timeout)

    def _backlog_allows_reply(self) -> bool:
        """Before login: whether a reply may be queued now.

        A peer that does not read must not make the host queue replies for
        it: above L{PRELOGIN_QUIET_BACKLOG} nothing more is queued, and above
        L{PRELOGIN_MAX_BACKLOG} the peer is closed.
        """
        backlog = transport_buffered(self.transport)
        if backlog > PRELOGIN_MAX_BACKLOG:
            self.close("peer does not read before login", backlog=backlog)
            return False
        return backlog <= PRELOGIN_QUIET_BACKLOG

    def _misc_close(self, reason: str) -> None:
        self.send_message(pb.Message(misc=pb.Misc(close_reason=reason)))

    # -- messages ----------------------------------------------------------

    def message_received(self, msg: pb.Message) -> None:
        kind = msg.WhichOneof("union")
        if self.state == "login":
            self._prelogin_message(kind, msg)
            return
        if self.state != "active":
            return
        if self.kind != "desktop" and kind not in _ANY_KIND:
            return  # no input or screen messages in a file or forward session
        handler = _ACTIVE_HANDLERS.get(kind) if kind is not None else None
        if handler is not None:
            handler(self, msg)

    def _prelogin_message(self, kind: str | None, msg: pb.Message) -> None:
        """Before login only a LoginRequest and the viewer's TestDelay are answered."""
        self._prelogin_messages += 1
        if self._prelogin_messages > PRELOGIN_MAX_MESSAGES:
            # Parsing and answering costs the host CPU that logged-in
            # viewers need; a real client sends a handful of messages.
            self.close("too many messages before login", limit=PRELOGIN_MAX_MESSAGES)
            return
        if kind == "login_request":
            self._login(msg.login_request)
        elif kind == "test_delay" and msg.test_delay.from_client and self._backlog_allows_reply():
            self._echo_test_delay(msg.test_delay)

    # A relayed login waiting for its slot in the host-wide throttle: one
    # password check per session, so LoginRequests after it are ignored.
    _login_queued = False

    def _login(self, req: pb.LoginRequest, slot: bool = False) -> None:
        if self._login_queued and not slot:
            return
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None
        kind = req.WhichOneof("union")
        self.kind = kind or "desktop"
        refusal = self._kind_refusal(req)
        if refusal is not None:
            self._refuse(*refusal)
            return
        if req.username != self.ctx.peer_id and not self.direct:
            # RustDesk answers a login for another id with "Offline".
            self._refuse("Offline", "login for another id")
            return
        if self.relayed and not slot:
            # Our peer address is the relay's, everyone's: no per-source lock,
            # the check waits for a host-wide slot instead (login.py's doc).
            self._login_queued = True
            if not self.ctx.verifier.relayed_throttle.submit(
                lambda: self._relayed_slot(req),
                lambda: self.state == "login" and not self.closing,
                self.peer,
            ):
                self._refuse(ERROR_TRY_LATER, "too many relayed logins waiting")
            return
        result = self.ctx.verifier.verify(
            self.peer, self.challenge, req.password, relayed=self.relayed
        )
        if not result.ok:
            self._refuse(result.error, "login refused")
            return
        if self.ctx.max_viewers and len(self.ctx.sessions) >= self.ctx.max_viewers:
            self._refuse("Too many viewers", "max viewers reached")
            return
        self.viewer_id = req.my_id or req.my_name
        self.peer_version = req.version
        self.peer_platform = req.my_platform
        if kind == "port_forward":
            # The answer waits for the target's connection (host_forward.py).
            self.state = "active"
            self._log_login(result.method, "port forward")
            self._start_port_forward(req.port_forward)
            return
        self.state = "active"
        self._started = self.ctx.clock.seconds()
        if kind == "file_transfer":
            self.send_message(
                pb.Message(login_response=pb.LoginResponse(peer_info=self._peer_info(False)))
            )
            self._log_login(result.method, "file transfer")
            self._start_file_transfer(req.file_transfer)
            self._start_pings()
            return
        self.ctx.sessions.add(self)
        self.send_message(pb.Message(login_response=pb.LoginResponse(peer_info=self._peer_info())))
        self._log_login(result.method, "view only" if self.ctx.view_only else "")
        self._start_streaming(req.option)

    def _log_login(self, method: str, what: str) -> None:
        self._log.info(
            "Viewer {viewer} logged in from {peer} ({method} password{what})",
            viewer=self.viewer_id or "(no id)",
            peer=self.peer,
            method=method,
            what=f", {what}" if what else "",
            session_kind=what or "desktop",
        )

    def _kind_refusal(self, req: pb.LoginRequest) -> tuple[str, str] | None:
        """RustDesk checks the connection type's permission before the password."""
        kind = req.WhichOneof("union")
        if kind is None:
            return None
        if kind == "file_transfer":
            if self.ctx.file_root is None or self.ctx.view_only:
                return ERROR_NO_FILE_TRANSFER, "file transfer disabled"
            return None
        if kind == "port_forward":
            if self.ctx.view_only or not self._forward_allowed(req.port_forward):
                return ERROR_NO_FORWARD, "forward not allowed"
            return None
        return "Connection not allowed", "unsupported session type"

    def _start_streaming(self, option: pb.OptionMessage) -> None:
        """After a login: the screen with the viewer's options, cursor, clipboard, pings."""
        codec = pick_codec(option, self.default_codec, rustdesk=self.rustdesk)
        self.codec = codec
        self.streamer = self.ctx.make_streamer(self._send_frame, self._buffered, codec)
        # Small changes as lossless tiles beside the video, for a LiteDesk
        # viewer that draws them (litedesk.screen.tiles); never for a stock
        # client, which would show nothing for them.
        self.streamer.set_tiles(not self.rustdesk and option.supported_decoding.litedesk_tiles > 0)
        # Small frames (a typed character, a click's effect) go out at once
        # instead of waiting behind the previous frame's ACK (see
        # send_without_delay); QUIC has no TCP socket and needs nothing.
        send_without_delay(self.transport)
        self._send_permissions()
        if option.image_quality:
            self.streamer.set_quality(option.image_quality)
        if option.custom_fps:
            self.streamer.set_custom_fps(option.custom_fps)
        self.streamer.start()
        # The input path's display connection opens now rather than at the
        # viewer's first click (InputWorker.prepare; test doubles lack it).
        prepare = getattr(self.ctx.input, "prepare", None)
        if callable(prepare) and not self.ctx.view_only:
            prepare()
        if self.ctx.cursor_shape is not None:
            self.send_cursor_shape(self.ctx.cursor_shape)
        if self.ctx.cursor_position is not None:
            self.send_cursor_position(*self.ctx.cursor_position)
        self._send_current_clipboard()
        self._start_pings()

    def _start_pings(self) -> None:
        self._ping = LoopingCall(self._send_ping)
        self._ping.clock = self.ctx.clock
        self._ping.start(TEST_DELAY_INTERVAL, now=True)

    def _relayed_slot(self, req: pb.LoginRequest) -> None:
        # The throttle runs this later, outside dataReceived's safety net.
        if self.state != "login" or self.closing:
            return  # gone while waiting: never answered nor counted
        try:
            self._login(req, slot=True)
        except Exception:
            self._log.failure("Handling a relayed login failed; closing the session")
            self.close("internal error")

    def _refuse(self, error: str, why: str) -> None:
        self._log.info(
            "Login from {peer} refused: {error} ({why})", peer=self.peer, error=error, why=why
        )
        self.send_message(pb.Message(login_response=pb.LoginResponse(error=error)))
        self.state = "refused"
        self.close(why)

    def _peer_info(self, desktop: bool = True) -> pb.PeerInfo:
        return peer_info(
            username=self.ctx.username,
            hostname=self.ctx.hostname,
            version=VERSION,
            current_display=self.display_index,
            displays=self.ctx.refresh_displays() if desktop else [],
        )

    # -- streaming ---------------------------------------------------------

    def _buffered(self) -> int:
        return transport_buffered(self.transport)

    def _send_frame(self, frame: EncodedFrame) -> None:
        if self.state != "active":
            return
        self.send_message(video_frame(frame, self.display_index))

    def _send_ping(self) -> None:
        # Like RustDesk: one outstanding ping at a time; the echo gives the RTT.
        if self._ping_outstanding is not None:
            return
        now = _now_ms(self.ctx.clock)
        self._ping_outstanding = now
        self.send_message(
            pb.Message(
                test_delay=pb.TestDelay(time=now, from_client=False, last_delay=self.last_delay)
            )
        )

    def _echo_test_delay(self, td: pb.TestDelay) -> None:
        # A fresh message with the fields LiteDesk knows: echoing the peer's
        # message would send back (and queue) whatever unknown fields it
        # stuffed into it.
        self.send_message(
            pb.Message(
                test_delay=pb.TestDelay(
                    time=td.time,
                    from_client=td.from_client,
                    last_delay=td.last_delay,
                    target_bitrate=td.target_bitrate,
                )
            )
        )

    def _test_delay(self, td: pb.TestDelay) -> None:
        if td.from_client:
            self._echo_test_delay(td)
            return
        if self._ping_outstanding is not None and td.time == self._ping_outstanding:
            rtt = max(0, _now_ms(self.ctx.clock) - td.time)
            self.last_delay = rtt
            self._ping_outstanding = None
            self._rtts.append(rtt)
            if len(self._rtts) > 3600:
                del self._rtts[:1800]
            if self.streamer is not None:
                self.streamer.on_rtt(rtt / 1000.0)


# What a file-transfer session may send besides its FileActions.
_ANY_KIND = frozenset({"test_delay", "misc", "file_action", "file_response"})

# A logged-in viewer's messages the host acts on, by Message union field; the
# rest are ignored.  (Lambdas call through the instance so subclasses can override.)
_ACTIVE_HANDLERS: dict[str, Callable[[HostSession, pb.Message], None]] = {
    "test_delay": lambda s, m: s._test_delay(m.test_delay),
    "mouse_event": lambda s, m: s._mouse_event(m.mouse_event),
    "key_event": lambda s, m: s._key_event(m.key_event),
    "clipboard": lambda s, m: s._clipboard(m.clipboard),
    "multi_clipboards": lambda s, m: s._multi_clipboards(m.multi_clipboards),
    "misc": lambda s, m: s._misc(m.misc),
    "file_action": lambda s, m: s._file_action(m.file_action),
    # An upload's digests, blocks and done come from the viewer as FileResponses.
    "file_response": lambda s, m: s._file_response(m.file_response),
}
