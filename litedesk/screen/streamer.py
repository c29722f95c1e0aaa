"""The host's screen stream on Twisted: capture and encode off the reactor.

What changed comes from the X server's DAMAGE extension when it has one
(L{DamageWatcher}): frames are then driven by damage, paced by
L{FramePacer} and the viewer's feedback, and an idle screen costs nothing
(no timer, no grab).  Only the damaged rectangles are grabbed and converted
into a persistent picture (L{YuvCanvas}) that the encoder takes whole.
Without DAMAGE (or when its watcher fails) the streamer grabs the whole
monitor every frame slot and compares it with the last grab, as before; the
log says which path runs.  Right after an injected input event
(L{ScreenStreamer.input_injected}) damage is served at once for a short
while instead of waiting for the next slot, so a click's effect goes out
in the next frame.

One frame slot at a time, paced by L{FramePacer}:

  1. on the reactor thread, ask L{DropPolicy} with the consumer's buffered
     byte count whether to produce a frame at all (skipping happens before
     any work, so a skipped slot costs nothing and breaks no reference);
  2. on the worker thread (a one-thread pool: mss' XShm grab and libx264
     release the GIL, so the reactor keeps turning), take the damage and
     grab and convert those rectangles (or grab the monitor and compare it
     with the last grab), and encode only if something changed or a key
     frame is due;
  3. back on the reactor thread, hand the L{EncodedFrame} to the delivery
     callback, then schedule the next slot (with DAMAGE: only if damage or a
     key frame waits; otherwise the next damage schedules it).

At most one frame is being produced at any time and nothing is queued: the
only buffer is the transport's, which the drop policy watches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .capture import Capturer, DisplayInfo
from .change import Rect
from .codec import Codec, EncodedFrame
from .damage import DamageUnavailable
from .damage_frames import DamagePath
from .encode import VideoEncoder
from .frame_job import FrameSource, Job, Produced, produce
from .pipeline import (
    AdaptiveController,
    DropPolicy,
    FramePacer,
    ImageQuality,
    InputBoost,
    base_bitrate,
    clamp_fps,
)
from .tiles import TILE_CODEC

__all__ = ["FrameSource", "ScreenStreamer", "StreamStats"]


@dataclass(slots=True)
class StreamStats:
    """Counters for logs, C{--stats-json} and tests."""

    slots: int = 0
    frames: int = 0
    key_frames: int = 0
    bytes: int = 0
    unchanged: int = 0
    dropped: int = 0
    errors: int = 0
    # The damage path: rectangles grabbed for the last frame encoded (monitor
    # coordinates; the whole monitor for a key frame) and pixels grabbed and
    # converted in all.  Empty / 0 on the comparing path.
    last_region: tuple[Rect, ...] = ()
    captured_pixels: int = 0
    # Frames sent as screen tiles instead of video (counted in frames and
    # bytes too).
    tiles: int = 0


def _one_thread_pool() -> ThreadPool:
    # One thread: frames are produced strictly one after another, and the
    # mss connection and the codec context stay on the thread that made them.
    return ThreadPool(minthreads=1, maxthreads=1, name="litedesk-screen")


class ScreenStreamer:
    """Stream one monitor as L{EncodedFrame}s to a callback.

    @param deliver: called on the reactor thread with each encoded frame.
    @param buffered: returns the bytes the consumer's transport still holds,
        e.g. C{lambda: transport_buffered(transport)} or a L{PauseTracker}'s
        C{buffered} (see L{litedesk.screen.backpressure}); called on the
        reactor thread once per frame slot.
    @param source: the capturer; by default an mss L{Capturer} on
        C{display}.
    @param pool_factory: makes the (not yet started) worker pool; tests
        pass a synchronous one.
    @param damage: use X DAMAGE when the source is a L{Capturer} (it grabs
        rectangles) and the X server has the extension; C{False} always
        compares whole frames.
    @param tiles: the consumer draws screen tiles (L{set_tiles}).
    """

    _log = Logger()

    # After a capture error, wait this long before trying again.
    ERROR_BACKOFF = 1.0
    # Damage on a still screen is captured this long after its first report
    # (unless input was just injected): toolkits draw a change in a burst of
    # requests (Tk scrolls text with a copy, then draws the new line), and a
    # grab in the middle sends a half-drawn frame and then another.
    SETTLE = 0.004

    def __init__(
        self,
        reactor: Any,
        deliver: Callable[[EncodedFrame], None],
        buffered: Callable[[], int],
        *,
        display: str | None = None,
        index: int = 0,
        codec: str = Codec.H264,
        quality: int = ImageQuality.BALANCED,
        custom_fps: int | float | None = None,
        source: FrameSource | None = None,
        encoder: VideoEncoder | None = None,
        drop_policy: DropPolicy | None = None,
        controller: AdaptiveController | None = None,
        pool_factory: Callable[[], ThreadPool] | None = None,
        damage: bool = True,
        tiles: bool = False,
    ) -> None:
        self._reactor = reactor
        self._deliver = deliver
        self._buffered = buffered
        self._handed_over = 0
        self._source: FrameSource = source or Capturer(display, index)
        self._codec = Codec(codec)
        self._quality = quality
        self._max_fps = clamp_fps(custom_fps)
        self._encoder = encoder or VideoEncoder(self._codec, fps=self._max_fps)
        self.drop_policy = drop_policy or DropPolicy()
        # The bitrate ceiling depends on the display size; it is set properly
        # once the first frame's size is known.
        self.controller = controller or AdaptiveController(
            reactor, max_fps=self._max_fps, bitrate=base_bitrate(quality, 1920, 1080, 30)
        )
        self.pacer = FramePacer(reactor, self._max_fps)
        self.stats = StreamStats()
        self._pool_factory = pool_factory or _one_thread_pool
        self._pool: ThreadPool | None = None
        self._call: IDelayedCall | None = None
        self._busy: Deferred[Produced] | None = None
        self._running = False
        self._key_wanted = True
        self._size: tuple[int, int] | None = None
        self._shutdown_trigger: Any = None
        self._epoch = 0.0
        self._error_streak = 0
        # Monitor switches so far: a frame whose job began before the last
        # one is of the old monitor and is not sent (see _done).
        self._switches = 0
        # DAMAGE watches the display the capturer grabs.
        self._display = self._source.display_name if isinstance(self._source, Capturer) else display
        self._use_damage = damage and isinstance(self._source, Capturer)
        self._damage: DamagePath | None = None
        self.boost = InputBoost(reactor)
        self._tiles = tiles

    # -- control ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def damage_driven(self) -> bool:
        """Whether frames come from X DAMAGE (else: grab and compare each slot)."""
        return self._damage is not None and self._damage.usable

    @property
    def idle(self) -> bool:
        """Running and waiting for damage: no frame slot scheduled or in progress."""
        return self._running and self._busy is None and self._call is None

    def start(self) -> None:
        """Start streaming; the first frame is a key frame."""
        if self._running:
            return
        self._running = True
        self._epoch = self._reactor.seconds()
        self._key_wanted = True
        self._pool = self._pool_factory()
        self._pool.start()
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "before", "shutdown", self.stop
        )
        if self._use_damage:
            self._start_watcher()
        self._schedule(0.0)

    def _start_watcher(self) -> None:
        path = DamagePath(self._display, lambda: self._reactor.callFromThread(self._damage_arrived))
        try:
            path.start()
        except DamageUnavailable as e:
            self._log.warn(
                "X DAMAGE unavailable ({reason}): grabbing and comparing whole frames",
                reason=str(e),
            )
            return
        self._damage = path
        self._log.info("screen changes from X DAMAGE: only damaged rectangles are grabbed")

    def stop(self) -> Deferred[None]:
        """Stop; fires once the worker thread is done and gone."""
        if not self._running:
            return succeed(None)
        self._running = False
        st = self.stats
        self._log.info(
            "screen stream stopped: {slots} slots, {frames} frames ({tiles} as tiles, "
            "{key_frames} key), {unchanged} unchanged, {dropped} dropped, {bytes} bytes",
            slots=st.slots,
            frames=st.frames,
            tiles=st.tiles,
            key_frames=st.key_frames,
            unchanged=st.unchanged,
            dropped=st.dropped,
            bytes=st.bytes,
        )
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._shutdown_trigger is not None:
            # we are being called by that very trigger
            with contextlib.suppress(ValueError, KeyError):
                self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        pool, self._pool = self._pool, None
        assert pool is not None
        path, self._damage = self._damage, None
        d: Deferred[None] = deferToThreadPool(self._reactor, pool, self._close, path)

        def _stop_pool(result: object) -> None:
            # Runs after close() finished, so stop() only joins an idle thread.
            pool.stop()
            if isinstance(result, Failure):
                self._log.failure("closing the capturer failed", result)

        d.addBoth(_stop_pool)
        return d

    def _close(self, path: DamagePath | None) -> None:
        # Worker thread: the watcher's join waits for its thread, not the reactor.
        if path is not None:
            path.stop()
        self._source.close()

    def force_keyframe(self) -> None:
        """Make the next frame a key frame (new viewer, C{refresh_video})."""
        self._want_key()

    def switch_display(self, index: int) -> None:
        """Capture monitor C{index} from the next frame on (a key frame)."""
        self._source.select(index)
        self._switches += 1
        self._want_key()

    def input_injected(self) -> None:
        """An input event was injected: send its effect without waiting.

        The next few frames are captured as soon as damage arrives rather
        than at the next slot of
        the frame rate; without DAMAGE a frame is grabbed at once.  Call it on
        the reactor thread once the injection is done.
        """
        self.boost.injected()
        if not self._running or self._busy is not None:
            return  # _done schedules with the new delay
        if self._call is not None and self._call.active():
            self._call.cancel()
            self._call = None
        path = self._damage
        if path is None or not path.usable or path.pending():
            self._schedule(self._delay())

    def set_quality(self, quality: int) -> None:
        """Apply C{image_quality}: the screen is sent again at the new quality
        (a key frame, which the encoder's reopen needs anyway).  The quality
        it already has changes nothing: a LiteDesk viewer names its quality
        at login, and that cost every session a second key frame."""
        if quality == self._quality:
            return
        self._quality = quality
        self._update_limits()
        self._want_key()

    def set_custom_fps(self, fps: int | float | None) -> None:
        """Apply C{custom_fps}: the frame-rate ceiling."""
        self._max_fps = clamp_fps(fps)
        self._update_limits()

    def set_codec(self, codec: str) -> None:
        """Switch between H.264 and VP9; the next frame is a key frame of it."""
        self._codec = Codec(codec)
        self._want_key()

    def set_tiles(self, enabled: bool) -> None:
        """Whether small changes may go as screen tiles (L{litedesk.screen.tiles})
        rather than video: only for a viewer that said it draws them."""
        self._tiles = enabled

    def on_rtt(self, rtt: float) -> None:
        """Feed a C{TestDelay} round trip (seconds) to the adaptive controller."""
        self.controller.on_rtt(rtt)

    def frame_lost(self) -> None:
        """The consumer discarded a delivered frame: resynchronise with a key frame."""
        self.drop_policy.frame_lost()

    def displays(self) -> Deferred[list[DisplayInfo]]:
        """The monitors, asked on the worker thread (it owns the X connection)."""
        if self._pool is None:
            return succeed(self._source.displays())
        return deferToThreadPool(self._reactor, self._pool, self._source.displays)

    # -- the loop -----------------------------------------------------------

    def _update_limits(self) -> None:
        w, h = self._size or (1920, 1080)
        self.controller.set_limits(
            max_fps=self._max_fps, bitrate=base_bitrate(self._quality, w, h, self._max_fps)
        )

    def _schedule(self, delay: float) -> None:
        if self._running:
            self._call = self._reactor.callLater(delay, self._slot)

    def _want_key(self) -> None:
        self._key_wanted = True
        self._wake()

    def _wake(self, settle: float = 0.0) -> None:
        """Make sure a slot comes (the damage path may be idle)."""
        if self._running and self._busy is None and self._call is None:
            self._schedule(self._delay(settle))

    def _damage_arrived(self) -> None:
        # Reactor thread (callFromThread from the watcher).
        self._wake(self.SETTLE)

    def _delay(self, settle: float = 0.0) -> float:
        return self.boost.delay(max(settle, self.pacer.delay()))

    def _next(self) -> None:
        """After a slot: schedule the next one, unless the damage path may idle."""
        path = self._damage
        if (
            path is None
            or not path.usable
            or self._key_wanted
            or self.drop_policy.consecutive
            or path.pending()
        ):
            self._schedule(self._delay())

    def _slot(self) -> None:
        self._call = None
        if not self._running or self._busy is not None:
            return
        self.stats.slots += 1
        self.pacer.tick()
        # The frame handed over since the last slot is not a backlog: with
        # no reactor turn in between (the slot after a key frame that took
        # longer than a period to encode comes at once) the transport has not
        # written any of it yet, and a key frame above the high-water mark
        # then skipped the next frame and cut the frame rate to 80 % for
        # seconds.  A link that does not keep up still shows: what is left
        # of earlier frames counts.
        buffered = max(0, self._buffered() - self._handed_over)
        self._handed_over = 0
        self.controller.on_buffer(buffered)
        self.controller.update()
        self.pacer.set_fps(self.controller.fps)
        if not self.drop_policy.should_send(buffered):
            self.stats.dropped += 1
            self.controller.on_drop()
            self._schedule(self.pacer.delay())
            return
        self.boost.frame_started()
        key = self._key_wanted or self.drop_policy.take_keyframe_request()
        self._key_wanted = False
        job = Job(
            keyframe=key,
            fps=self.controller.fps,
            level=self.controller.level,
            max_fps=self._max_fps,
            quality=self._quality,
            codec=self._codec,
            tiles=self._tiles,
        )
        assert self._pool is not None
        # pts: milliseconds since start(), the slot's time (not the grab's),
        # so frames are spaced as paced.
        pts = int((self._reactor.seconds() - self._epoch) * 1000)
        d = deferToThreadPool(self._reactor, self._pool, self._work, job, pts)
        self._busy = d
        d.addCallbacks(self._done, self._failed, callbackArgs=(self._switches,), errbackArgs=(job,))

    def _work(self, job: Job, pts: int) -> Produced:
        # Worker thread: nothing here may touch the reactor.
        return produce(job, pts, self._source, self._encoder, self._damage)

    def _done(self, result: Produced, switches: int) -> None:
        self._busy = None
        if switches != self._switches:
            # Grabbed before a monitor switch: sent after the session's
            # SwitchDisplay answer, it would show the old monitor under the
            # new one's geometry.  The switch asked for a key frame.
            self._next()
            return
        if self._error_streak:
            self._log.info(
                "screen capture recovered after {count} failed attempts",
                count=self._error_streak,
            )
            self._error_streak = 0
        encoded, size = result.encoded, result.size
        if size != self._size:
            self._size = size
            self._update_limits()
        if encoded is None:
            self.stats.unchanged += 1
            if self._damage is not None and self._damage.usable:
                # Slots come only with damage here; comparing whole frames
                # they come at the rate, changed or not, and must stay there.
                self.pacer.refund()
        elif self._running:
            self.stats.frames += 1
            self.stats.bytes += len(encoded.data)
            self.stats.key_frames += encoded.key
            self.stats.tiles += encoded.codec == TILE_CODEC
            if result.region:
                self.stats.last_region = result.region
                self.stats.captured_pixels += sum(r.width * r.height for r in result.region)
            self._handed_over += len(encoded.data)
            try:
                self._deliver(encoded)
            except Exception:
                self._log.failure("delivering a video frame failed")
        self._next()

    def _failed(self, failure: Failure, job: Job) -> None:
        self._busy = None
        self.stats.errors += 1
        # The encoder may have failed half-way through a frame; restart the
        # prediction chain rather than trust its state.
        self._key_wanted = True
        self._error_streak += 1
        if self._error_streak == 1:
            # Once per streak: a monitor that is gone would otherwise log
            # a traceback every second.
            self._log.failure("screen capture/encode failed; retrying every second", failure)
        self._schedule(self.ERROR_BACKOFF)
