"""Sans-IO screen policies (pacer, drop policy, adaptive controller, quality
mapping) and the ScreenStreamer loop, driven by task.Clock and a synchronous
worker pool.  No X needed: frames come from a scripted source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.trial import unittest

from litedesk.screen.capture import DisplayInfo, Frame
from litedesk.screen.codec import EncodedFrame
from litedesk.screen.decode import VideoDecoder
from litedesk.screen.pipeline import (
    AdaptiveController,
    DropPolicy,
    FramePacer,
    ImageQuality,
    base_bitrate,
    clamp_fps,
    quality_profile,
)
from litedesk.screen.streamer import ScreenStreamer
from litedesk.screen.testpattern import moving_window_frames

from .support.fakes import StreamerReactor


class PacerTests(unittest.TestCase):
    def test_paces_at_target_rate_without_bursts(self) -> None:
        """Frames are due every 1/fps s; after a stall the pacer does not burst to catch up."""
        clock = task.Clock()
        pacer = FramePacer(clock, fps=10)
        self.assertEqual(pacer.delay(), 0.0)
        pacer.tick()
        self.assertAlmostEqual(pacer.delay(), 0.1)
        clock.advance(0.1)
        pacer.tick()
        self.assertAlmostEqual(pacer.delay(), 0.1)
        clock.advance(1.0)  # a long stall
        pacer.tick()
        self.assertAlmostEqual(pacer.delay(), 0.1)
        pacer.set_fps(2)
        self.assertAlmostEqual(pacer.fps, 2)
        self.assertLessEqual(pacer.delay(), 0.5)

    def test_a_slot_that_sent_nothing_gives_its_period_back(self) -> None:
        """A slot that found no change does not count against the rate, but
        the next one comes no sooner than half a period after it."""
        clock = task.Clock()
        pacer = FramePacer(clock, fps=10)
        pacer.tick()
        clock.advance(0.1)
        pacer.tick()  # this slot finds nothing
        pacer.refund()
        self.assertAlmostEqual(pacer.delay(), 0.05)
        clock.advance(0.05)
        pacer.tick()
        self.assertAlmostEqual(pacer.delay(), 0.1)


class DropPolicyTests(unittest.TestCase):
    def test_drops_when_buffer_full_with_hysteresis(self) -> None:
        """Frames are skipped above the high-water mark until the buffer drains below low water."""
        policy = DropPolicy(high_water=1000, low_water=400)
        self.assertTrue(policy.should_send(0))
        self.assertTrue(policy.should_send(1000))
        self.assertFalse(policy.should_send(1001))
        self.assertFalse(policy.should_send(800))  # still draining
        self.assertEqual(policy.consecutive, 2)
        self.assertTrue(policy.should_send(400))
        self.assertEqual((policy.drops, policy.consecutive), (2, 0))
        # Skipping before encoding breaks no reference: no key frame needed.
        self.assertFalse(policy.take_keyframe_request())

    def test_lost_encoded_frame_requests_key_frame(self) -> None:
        """Discarding an already-encoded frame makes the next frame a key frame, once."""
        policy = DropPolicy()
        policy.frame_lost()
        self.assertTrue(policy.take_keyframe_request())
        self.assertFalse(policy.take_keyframe_request())


class QualityTests(unittest.TestCase):
    def test_quality_and_fps_mapping(self) -> None:
        """image_quality orders bitrate and quality floor; custom_fps is clamped to 1..60."""
        low, bal, best = (quality_profile(q) for q in (2, 3, 4))
        self.assertLess(low.bitrate_1080p30, bal.bitrate_1080p30)
        self.assertLess(bal.bitrate_1080p30, best.bitrate_1080p30)
        self.assertGreater(low.qmax_h264, best.qmax_h264)
        self.assertEqual(quality_profile(ImageQuality.NOT_SET), bal)
        self.assertEqual(quality_profile(99), bal)
        self.assertEqual(clamp_fps(0), 30.0)
        self.assertEqual(clamp_fps(None), 30.0)
        self.assertEqual(clamp_fps(500), 60.0)
        self.assertEqual(clamp_fps(15), 15.0)
        self.assertLess(base_bitrate(3, 1280, 720, 30), base_bitrate(3, 1920, 1080, 30))
        self.assertLess(base_bitrate(3, 1920, 1080, 15), base_bitrate(3, 1920, 1080, 30))


class AdaptiveControllerTests(unittest.TestCase):
    def run_for(
        self, clock: task.Clock, ctl: AdaptiveController, seconds: int, rtt: float, buf: int = 0
    ) -> None:
        for _ in range(seconds * 4):
            clock.advance(0.25)
            ctl.on_rtt(rtt)
            ctl.on_buffer(buf)
            ctl.update()

    def test_backs_off_on_high_rtt_and_recovers(self) -> None:
        """Rising round trips lower fps and bitrate; after a healthy spell they climb back."""
        clock = task.Clock()
        ctl = AdaptiveController(clock, max_fps=30, bitrate=2_000_000)
        self.run_for(clock, ctl, 5, 0.02)
        self.assertEqual((ctl.fps, ctl.bitrate), (30, 2_000_000))
        self.run_for(clock, ctl, 4, 0.5)  # queueing delay builds up
        self.assertLess(ctl.fps, 10)
        self.assertLess(ctl.bitrate, 700_000)
        low = ctl.bitrate
        self.assertGreaterEqual(ctl.fps, ctl.min_fps)
        self.run_for(clock, ctl, 2, 0.02)
        self.assertLessEqual(ctl.bitrate, low * 1.2)  # raises slowly, not at once
        self.run_for(clock, ctl, 30, 0.02)
        self.assertEqual((ctl.fps, ctl.bitrate), (30, 2_000_000))

    def test_long_but_steady_rtt_is_healthy(self) -> None:
        """A constant 300 ms round trip (a far link, no queue) does not lower quality."""
        clock = task.Clock()
        ctl = AdaptiveController(clock)
        self.run_for(clock, ctl, 10, 0.3)
        self.assertEqual(ctl.level, 1.0)

    def test_full_buffer_and_drops_back_off(self) -> None:
        """A transport buffer above the high-water mark, or drops, lower the level."""
        clock = task.Clock()
        ctl = AdaptiveController(clock, high_water=1000)
        self.run_for(clock, ctl, 2, 0.02, buf=1500)
        self.assertLess(ctl.level, 1.0)
        level = ctl.level
        for _ in range(3):
            ctl.on_drop()
        clock.advance(1.0)
        ctl.update()
        self.assertAlmostEqual(ctl.level, level * 0.5)


# -- the streamer loop --------------------------------------------------------


class SyncPool:
    """Runs 'worker' jobs immediately, in the calling thread."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except BaseException as e:
            from twisted.python.failure import Failure

            onResult(False, Failure(e))
        else:
            onResult(True, result)


class ScriptedSource:
    """A capturer whose screen content the test sets."""

    W, H = 320, 240

    def __init__(self) -> None:
        self.frames = moving_window_frames(20, self.W, self.H, step=16)
        self.screen = self.frames[0]
        self.previous: Frame | None = None
        self.current: Frame | None = None
        self.seq = 0
        self.grabs = 0
        self.selected = 0

    def grab(self) -> Frame:
        self.grabs += 1
        self.seq += 1
        self.previous, self.current = self.current, Frame(self.screen, self.W, self.H, self.seq)
        return self.current

    def select(self, index: int) -> None:
        self.selected = index
        self.previous = self.current = None

    def displays(self) -> list[DisplayInfo]:
        return [DisplayInfo(0, 0, 0, self.W, self.H, "fake", True)]

    def close(self) -> None:
        pass


class StreamerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = StreamerReactor()
        self.source = ScriptedSource()
        self.sent: list[EncodedFrame] = []
        self.buffered = 0
        self.streamer = ScreenStreamer(
            self.reactor,
            self.sent.append,
            lambda: self.buffered,
            source=self.source,
            custom_fps=10,
            pool_factory=SyncPool,  # type: ignore[arg-type]
        )
        self.streamer.start()
        self.addCleanup(self.streamer.stop)

    def ticks(self, n: int) -> None:
        for _ in range(n):
            self.reactor.advance(0.1)

    def test_static_screen_sends_only_first_frame(self) -> None:
        """An unchanging screen produces one key frame, then nothing over many ticks."""
        self.ticks(30)
        self.assertEqual(len(self.sent), 1)
        self.assertTrue(self.sent[0].key)
        # Comparing whole frames: one grab a slot, at the rate, no more.
        self.assertGreaterEqual(self.source.grabs, 30)
        self.assertLessEqual(self.source.grabs, 31)
        self.assertGreaterEqual(self.streamer.stats.unchanged, 29)

    def test_changes_are_sent_as_decodable_deltas(self) -> None:
        """Each screen change yields one delta frame that the viewer decodes."""
        dec = VideoDecoder()
        self.ticks(1)
        for i in range(1, 5):
            self.source.screen = self.source.frames[i]
            self.ticks(1)
        self.ticks(5)
        self.assertEqual(len(self.sent), 5)
        self.assertEqual([f.key for f in self.sent], [True, False, False, False, False])
        self.assertTrue(all(dec.decode_frame(f) for f in self.sent))
        self.assertEqual(dec.errors, 0)

    def test_input_injected_captures_at_once(self) -> None:
        """After an injected click the changed screen is grabbed and sent without
        waiting for the next frame slot (here 100 ms away), so the click's
        effect is in the very next frame."""
        self.ticks(3)
        self.assertEqual(len(self.sent), 1)
        self.reactor.advance(0.02)  # mid-slot: the next one is 80 ms away
        self.source.screen = self.source.frames[1]
        self.streamer.input_injected()
        self.reactor.advance(0.01)
        self.assertEqual(len(self.sent), 2)
        self.assertFalse(self.sent[1].key)

    def test_input_boost_stays_within_the_frame_rate(self) -> None:
        """Frames sent at once after a click are taken from the frame rate's
        budget, not added to it: with a click every 250 ms on a screen that
        changes all the time, the viewer still gets at most custom_fps (10)
        frames a second."""
        for step in range(300):  # 3 s in 10 ms steps
            self.source.screen = self.source.frames[step % 20]
            if step % 25 == 5:
                self.streamer.input_injected()
            self.reactor.advance(0.01)
        self.assertLessEqual(len(self.sent), 31)
        self.assertGreaterEqual(len(self.sent), 27)

    def test_frame_just_handed_over_is_not_a_backlog(self) -> None:
        """A frame above the high-water mark that the transport still holds
        at the next slot, because the reactor has not written it yet, is not
        congestion: no frame is skipped and the frame rate holds.  What is
        left of it a slot later is."""
        self.streamer.drop_policy.high_water = self.streamer.controller.high_water = 100
        self.streamer.drop_policy.low_water = 50

        # The transport holds exactly the last frame handed over.
        def deliver(f: EncodedFrame) -> None:
            self.sent.append(f)
            self.buffered = len(f.data)

        self.streamer._deliver = deliver
        for i in range(1, 30):
            self.source.screen = self.source.frames[i % 20]
            self.ticks(1)
        self.assertEqual(self.streamer.stats.dropped, 0)
        self.assertEqual(self.streamer.controller.level, 1.0)
        self.assertGreaterEqual(len(self.sent), 29)  # every change
        # The same bytes still there at the slot after: skipped.
        self.buffered += 200
        self.source.screen = self.source.frames[5]
        self.ticks(2)
        self.assertGreaterEqual(self.streamer.stats.dropped, 1)

    def test_force_keyframe_on_static_screen(self) -> None:
        """A refresh/new-viewer request sends a key frame even when nothing changed."""
        self.ticks(3)
        self.streamer.force_keyframe()
        self.ticks(3)
        self.assertEqual([f.key for f in self.sent], [True, True])
        late = VideoDecoder()
        self.assertIsNotNone(late.decode_frame(self.sent[1]))

    def test_drops_when_backed_up_and_next_frame_decodes(self) -> None:
        """With the transport backed up, changed frames are skipped rather than
        queued; once it drains, the next frame decodes from what the viewer has."""
        dec = VideoDecoder()
        self.ticks(1)
        self.assertEqual(len(self.sent), 1)
        self.buffered = 10**6
        grabs = self.source.grabs
        for i in range(1, 6):
            self.source.screen = self.source.frames[i]
            self.ticks(1)
        self.assertEqual(len(self.sent), 1)
        self.assertEqual(self.source.grabs, grabs)  # skipped before any work
        self.assertGreaterEqual(self.streamer.stats.dropped, 5)
        self.buffered = 0
        self.ticks(1)
        self.assertEqual(len(self.sent), 2)
        for f in self.sent:
            out = dec.decode_frame(f)
            self.assertIsNotNone(out)
        self.assertEqual(dec.errors, 0)
        # The frame shows the screen as it is now, not a stale queued one.
        ref = VideoDecoder()
        self.assertEqual(self.sent[1].width, 320)
        self.assertIsNotNone(ref.decode_frame(self.sent[0]))

    def test_lost_frame_forces_key_frame(self) -> None:
        """If the session discards a delivered frame, the next frame is a key frame."""
        self.ticks(1)
        self.source.screen = self.source.frames[1]
        self.ticks(1)
        self.streamer.frame_lost()
        self.source.screen = self.source.frames[2]
        self.ticks(1)
        self.assertEqual([f.key for f in self.sent], [True, False, True])

    def test_switch_display_and_quality_send_key_frames(self) -> None:
        """Switching monitor or image quality restarts the stream with a key frame."""
        self.ticks(2)
        self.streamer.switch_display(1)
        self.ticks(1)
        self.assertEqual(self.source.selected, 1)
        self.streamer.set_quality(ImageQuality.BEST)
        self.ticks(1)
        self.assertEqual([f.key for f in self.sent], [True, True, True])

    def test_the_quality_it_has_is_no_key_frame(self) -> None:
        """A viewer naming the quality the stream already has (a LiteDesk viewer
        does at login) costs no second key frame."""
        self.ticks(1)
        self.streamer.set_quality(ImageQuality.BALANCED)
        self.source.screen = self.source.frames[1]
        self.ticks(1)
        self.assertEqual([f.key for f in self.sent], [True, False])

    def test_high_rtt_lowers_frame_rate(self) -> None:
        """Round trips reported by TestDelay slow the stream down (fewer slots)."""
        for _ in range(20):
            self.streamer.on_rtt(0.01)
            self.ticks(1)
        slots = self.streamer.stats.slots
        for _ in range(40):
            self.streamer.on_rtt(1.0)
            self.ticks(1)
        self.assertLess(self.streamer.stats.slots - slots, 30)
        self.assertLess(self.streamer.controller.bitrate, self.streamer.controller.max_bitrate)

    def test_capture_error_is_retried(self) -> None:
        """A failing grab is logged and retried; the stream resumes with a key frame."""
        real = self.source.grab
        calls = [0]

        def flaky() -> Frame:
            calls[0] += 1
            if calls[0] == 2:
                raise RuntimeError("monitor unplugged")
            return real()

        self.source.grab = flaky  # type: ignore[method-assign]
        self.ticks(1)
        self.source.screen = self.source.frames[1]
        self.ticks(15)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.streamer.stats.errors, 1)
        self.assertEqual([f.key for f in self.sent], [True, True])
