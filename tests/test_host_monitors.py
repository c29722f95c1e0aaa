"""The host's monitor list and its answers to SwitchDisplay, without X.

L{HostContext.refresh_displays} (re-reads the monitors at each login and switch, so a
monitor added after start-up is offered) is driven with listers that change, fail, find
nothing or are flooded, on a C{task.Clock}.  A logged-in L{HostSession} on a string
transport gets SwitchDisplay requests for any display number (hypothesis): a monitor the
host has is streamed and answered with its geometry, any other number is logged and
ignored, and the session stays open and keeps switching.  The screen streamer never sends
a frame grabbed before a switch once the switch is made (the session has answered it with
the new monitor's geometry by then).  The input injector clamps moves to a desktop that
may have grown since it was read (a monitor added), for any point (hypothesis).  The same
on real X is in tests/test_multimonitor.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from litedesk.input import mouse
from litedesk.input.inject import InputInjector
from litedesk.input.mouse import MouseButton, Rect
from litedesk.input.validation import KeyRef
from litedesk.proto import message_pb2 as pb
from litedesk.screen.capture import DisplayInfo, Frame
from litedesk.screen.codec import EncodedFrame
from litedesk.screen.streamer import ScreenStreamer
from litedesk.session.framing import MAX_FRAME_LENGTH, parse_message
from litedesk.session.host_context import DISPLAYS_REUSED_FOR, Display, HostContext
from litedesk.session.host_session import HostSession
from litedesk.session.login import LoginVerifier
from litedesk.session.password import StoredPassword, login_password
from litedesk.wire.bytescodec import FrameDecoder, encode_frame

from .support.fakes import FakeStreamer, StreamerReactor

PASSWORD = "monitors-pw-4711"
HOST_ID = "123456789"


def _context(clock: Clock, displays: list[Display], lister: Any) -> HostContext:
    """A host context whose monitors are C{displays} until C{lister} (if any) says otherwise."""
    return HostContext(
        peer_id="123456789",
        verifier=LoginVerifier(clock, StoredPassword.create(PASSWORD), one_time=False),
        clock=clock,
        make_streamer=lambda deliver, buffered, codec: FakeStreamer(),
        displays=displays,
        list_displays=lister,
    )


ONE = [Display(0, 0, 3840, 1080, "screen", True)]
TWO = [Display(0, 0, 1920, 1080, "A", True), Display(1920, 0, 1920, 1080, "B")]


class RefreshDisplaysTests(SynchronousTestCase):
    """L{HostContext.refresh_displays}: what PeerInfo and SwitchDisplay answers are built from."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.events = EventLoggingObserver()
        globalLogPublisher.addObserver(self.events)
        self.addCleanup(globalLogPublisher.removeObserver, self.events)

    def messages(self) -> list[tuple[LogLevel, str]]:
        return [(e["log_level"], formatEvent(e)) for e in self.events]

    def test_without_a_lister_the_start_up_list_stays(self) -> None:
        ctx = _context(self.clock, list(ONE), None)
        self.assertEqual(ctx.refresh_displays(), ONE)
        self.assertEqual(self.messages(), [])

    def test_a_changed_layout_replaces_the_list_and_is_logged(self) -> None:
        ctx = _context(self.clock, list(ONE), lambda: list(TWO))
        self.assertEqual(ctx.refresh_displays(), TWO)
        self.assertEqual(ctx.displays, TWO)
        self.assertEqual(
            self.messages(),
            [(LogLevel.info, "Monitors changed: 3840x1080+0+0 -> 1920x1080+0+0, 1920x1080+1920+0")],
        )
        # The same layout again: nothing new to say.
        self.clock.advance(DISPLAYS_REUSED_FOR)
        self.assertEqual(ctx.refresh_displays(), TWO)
        self.assertEqual(len(self.messages()), 1)

    def test_a_listing_is_reused_for_a_while(self) -> None:
        """A viewer flooding SwitchDisplay costs one listing per interval, not one each."""
        calls: list[int] = []

        def lister() -> list[Display]:
            calls.append(1)
            return list(TWO if len(calls) > 1 else ONE)

        ctx = _context(self.clock, list(ONE), lister)
        for _ in range(100):
            self.assertEqual(ctx.refresh_displays(), ONE)
            self.clock.advance(DISPLAYS_REUSED_FOR / 200)
        self.assertEqual(len(calls), 1)
        self.clock.advance(DISPLAYS_REUSED_FOR)
        self.assertEqual(ctx.refresh_displays(), TWO)
        self.assertEqual(len(calls), 2)

    def test_a_failing_or_empty_listing_keeps_the_last_list(self) -> None:
        def fails() -> list[Display]:
            raise OSError("X connection refused")

        ctx = _context(self.clock, list(TWO), fails)
        self.assertEqual(ctx.refresh_displays(), TWO)
        self.assertEqual(
            self.messages(),
            [
                (
                    LogLevel.warn,
                    "Cannot list the monitors, keeping the last list: X connection refused",
                )
            ],
        )
        ctx.list_displays = list
        self.clock.advance(DISPLAYS_REUSED_FOR)
        self.assertEqual(ctx.refresh_displays(), TWO)


class SwitchingStreamer(FakeStreamer):
    """A streamer that remembers which monitors it was told to capture."""

    def __init__(self) -> None:
        super().__init__()
        self.switches: list[int] = []

    def switch_display(self, index: int) -> None:
        self.switches.append(index)


class LoggedIn:
    """A LiteDesk-protocol host session after a good login, on a string transport."""

    def __init__(self, displays: list[Display]) -> None:
        self.clock = Clock()
        self.streamers: list[SwitchingStreamer] = []

        def make(deliver: object, buffered: object, codec: str) -> SwitchingStreamer:
            self.streamers.append(SwitchingStreamer())
            return self.streamers[-1]

        ctx = _context(self.clock, displays, None)
        ctx.make_streamer = make
        self.session = HostSession(ctx)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4000))
        self.session.makeConnection(self.transport)
        self.session.handshakeCompleted()
        self._decoder = FrameDecoder(MAX_FRAME_LENGTH)
        hash_msg = self.replies()[0].hash
        req = pb.LoginRequest(
            username=HOST_ID,
            password=login_password(PASSWORD, hash_msg.salt, hash_msg.challenge),
            my_id="987654321",
        )
        self.send(pb.Message(login_request=req))
        responses = [m.login_response for m in self.replies() if m.HasField("login_response")]
        assert responses and responses[0].HasField("peer_info"), responses
        self.peer_info = responses[0].peer_info

    def replies(self) -> list[pb.Message]:
        out = []
        for payload in self._decoder.feed(self.transport.value()):
            msg = parse_message(payload)
            assert msg is not None
            out.append(msg)
        self.transport.clear()
        return out

    def send(self, msg: pb.Message) -> None:
        self.session.dataReceived(encode_frame(msg.SerializeToString()))

    def switch(self, display: int) -> list[tuple[int, int, int, int, int]]:
        """Ask for C{display}; the host's SwitchDisplay answers as tuples."""
        self.send(pb.Message(misc=pb.Misc(switch_display=pb.SwitchDisplay(display=display))))
        return [
            (sd.display, sd.x, sd.y, sd.width, sd.height)
            for sd in (m.misc.switch_display for m in self.replies() if m.HasField("misc"))
        ]


class SwitchDisplayTests(SynchronousTestCase):
    """What a viewer's SwitchDisplay gets from a logged-in host session."""

    def test_login_offers_both_monitors_and_a_switch_answers_with_geometry(self) -> None:
        h = LoggedIn(list(TWO))
        self.assertEqual(
            [(d.x, d.y, d.width, d.height) for d in h.peer_info.displays],
            [(0, 0, 1920, 1080), (1920, 0, 1920, 1080)],
        )
        self.assertEqual(h.peer_info.current_display, 0)
        self.assertEqual(h.switch(1), [(1, 1920, 0, 1920, 1080)])
        self.assertEqual(h.switch(0), [(0, 0, 0, 1920, 1080)])
        self.assertEqual(h.streamers[0].switches, [1, 0])

    @settings(max_examples=200, deadline=None)
    @given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
    def test_any_display_number(self, display: int) -> None:
        """A monitor the host lacks is ignored with a reason in the log; the session stays
        open and a later switch works."""
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        try:
            h = LoggedIn(list(TWO))
            answers = h.switch(display)
        finally:
            globalLogPublisher.removeObserver(events)
        if display in (0, 1):
            self.assertEqual([a[0] for a in answers], [display])
            self.assertEqual(h.streamers[0].switches, [display])
        else:
            self.assertEqual(answers, [])
            self.assertEqual(h.streamers[0].switches, [])
            self.assertIn(
                f"asked for monitor {display}; there are 2: ignored",
                " ".join(formatEvent(e) for e in events),
            )
        self.assertFalse(h.transport.disconnecting)
        self.assertEqual(h.switch(1), [(1, 1920, 0, 1920, 1080)])


class LatePool:
    """A thread pool whose jobs run at once but report back only on L{finish}: a frame
    grabbed and encoded, then still on its way to the reactor thread."""

    def __init__(self) -> None:
        self.waiting: list[Callable[[], None]] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        result = f(*a, **kw)
        self.waiting.append(lambda: on_result(True, result))

    def finish(self) -> None:
        waiting, self.waiting = self.waiting, []
        for report in waiting:
            report()


class TwoMonitorSource:
    """Two monitors of different sizes, so a frame tells which one it shows."""

    SIZES = ((320, 240), (160, 120))

    def __init__(self) -> None:
        self.selected = 0
        self.previous: Frame | None = None
        self.seq = 0

    def grab(self) -> Frame:
        w, h = self.SIZES[self.selected]
        self.seq += 1
        return Frame(bytes([40 + 80 * self.selected]) * (w * h * 4), w, h, self.seq)

    def select(self, index: int) -> None:
        self.selected = index

    def displays(self) -> list[DisplayInfo]:
        return [DisplayInfo(i, 0, 0, w, h, f"m{i}", i == 0) for i, (w, h) in enumerate(self.SIZES)]

    def close(self) -> None:
        pass


class StreamerSwitchTests(SynchronousTestCase):
    def test_no_frame_of_the_old_monitor_after_a_switch(self) -> None:
        """A frame grabbed before switch_display but done after it is not sent; the next
        frame is the new monitor's, as a key frame."""
        reactor = StreamerReactor()
        pool = LatePool()
        sent: list[EncodedFrame] = []
        streamer = ScreenStreamer(
            reactor,
            sent.append,
            lambda: 0,
            source=TwoMonitorSource(),
            custom_fps=10,
            pool_factory=lambda: pool,  # type: ignore[arg-type, return-value]
            damage=False,
        )
        streamer.start()
        self.addCleanup(streamer.stop)
        reactor.advance(0.1)
        self.assertEqual(len(pool.waiting), 1)  # monitor 0's first frame, not back yet
        streamer.switch_display(1)
        pool.finish()
        self.assertEqual(sent, [])
        for _ in range(3):
            reactor.advance(0.1)
            pool.finish()
        self.assertTrue(sent)
        self.assertEqual({(f.width, f.height) for f in sent}, {(160, 120)})
        self.assertTrue(sent[0].key)


class GrowingDesktop:
    """An input backend whose desktop the test resizes; it records the moves."""

    def __init__(self, desktop: Rect) -> None:
        self.current = desktop
        self.reads = 0
        self.pos = (0, 0)
        self.moves: list[tuple[int, int]] = []

    def desktop(self) -> Rect:
        self.reads += 1
        return self.current

    def pointer(self) -> tuple[int, int]:
        return self.pos

    def move_to(self, x: int, y: int) -> None:
        self.pos = (x, y)
        self.moves.append((x, y))

    def press_button(self, button: MouseButton) -> None: ...

    def release_button(self, button: MouseButton) -> None: ...

    def scroll(self, dx: int, dy: int) -> None: ...

    def press_key(self, key: KeyRef) -> None: ...

    def release_key(self, key: KeyRef) -> None: ...

    def type_text(self, text: str) -> None: ...

    def close(self) -> None: ...


OLD_DESKTOP = Rect(0, 0, 1920, 1080)
NEW_DESKTOP = Rect(0, 0, 3840, 1080)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


class GrowingDesktopTests(SynchronousTestCase):
    """Moves land on the desktop as it is now, not as it was at the first move."""

    def test_a_point_on_an_added_monitor_is_reached(self) -> None:
        backend = GrowingDesktop(OLD_DESKTOP)
        injector = InputInjector(backend)
        self.assertTrue(injector.apply(mouse.move(100, 100)).ok)
        backend.current = NEW_DESKTOP
        self.assertTrue(injector.apply(mouse.move(1920 + 300, 200)).ok)
        self.assertTrue(injector.apply(mouse.move(1920 + 400, 200)).ok)
        self.assertEqual(backend.moves, [(100, 100), (2220, 200), (2320, 200)])
        # Read at the first move and once for the first point off the old desktop.
        self.assertEqual(backend.reads, 2)

    def test_relative_moves_cross_onto_an_added_monitor(self) -> None:
        backend = GrowingDesktop(OLD_DESKTOP)
        injector = InputInjector(backend)
        injector.apply(mouse.move(1900, 500))
        backend.current = NEW_DESKTOP
        injector.apply(mouse.relative(50, 0))
        self.assertEqual(backend.pos, (1950, 500))

    def test_a_given_desktop_is_never_read(self) -> None:
        backend = GrowingDesktop(NEW_DESKTOP)
        injector = InputInjector(backend, desktop=OLD_DESKTOP)
        injector.apply(mouse.move(3000, 2000))
        self.assertEqual((backend.moves, backend.reads), ([(1919, 1079)], 0))

    @given(INT32, INT32, st.booleans())
    def test_any_point_lands_on_the_current_desktop(self, x: int, y: int, grow: bool) -> None:
        """Wherever a viewer points, the move is the nearest point of the desktop as it is
        now; the desktop is read again only for points off the one last read."""
        backend = GrowingDesktop(OLD_DESKTOP)
        injector = InputInjector(backend)
        injector.apply(mouse.move(0, 0))
        if grow:
            backend.current = NEW_DESKTOP
        self.assertTrue(injector.apply(mouse.move(x, y)).ok)
        self.assertEqual(backend.moves[-1], backend.current.clamp(x, y))
        self.assertEqual(backend.reads, 1 if OLD_DESKTOP.contains(x, y) else 2)
