"""The host's screen stream on Twisted: capture and encode off the reactor.

One frame slot at a time, paced by L{FramePacer}:

  1. on the reactor thread, ask L{DropPolicy} with the consumer's buffered
     byte count whether to produce a frame at all (skipping happens before
     any work, so a skipped slot costs nothing and breaks no reference);
  2. on the worker thread (a one-thread pool: mss' XShm grab and libx264
     release the GIL, so the reactor keeps turning), grab the monitor,
     compare it with the last frame, and encode it only if it changed or a
     key frame is due;
  3. back on the reactor thread, hand the L{EncodedFrame} to the delivery
     callback, then schedule the next slot.

At most one frame is being produced at any time and nothing is queued: the
only buffer is the transport's, which the drop policy watches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .capture import Capturer, DisplayInfo, Frame
from .codec import Codec, EncodedFrame
from .encode import VideoEncoder
from .pipeline import (
    AdaptiveController,
    DropPolicy,
    FramePacer,
    ImageQuality,
    base_bitrate,
    clamp_fps,
    quality_profile,
)

__all__ = ["FrameSource", "ScreenStreamer", "StreamStats"]


class FrameSource(Protocol):
    """What the streamer needs from a capturer (L{Capturer} is one)."""

    @property
    def previous(self) -> Frame | None: ...

    def grab(self) -> Frame: ...

    def select(self, index: int) -> None: ...

    def displays(self) -> list[DisplayInfo]: ...

    def close(self) -> None: ...


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


@dataclass(frozen=True, slots=True)
class _Job:
    keyframe: bool
    fps: float
    level: float
    max_fps: float
    quality: int
    codec: str


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
    """

    _log = Logger()

    # After a capture error, wait this long before trying again.
    ERROR_BACKOFF = 1.0

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
    ) -> None:
        self._reactor = reactor
        self._deliver = deliver
        self._buffered = buffered
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
        self._busy: Deferred[tuple[EncodedFrame | None, tuple[int, int]]] | None = None
        self._running = False
        self._key_wanted = True
        self._size: tuple[int, int] | None = None
        self._shutdown_trigger: Any = None
        self._epoch = 0.0
        self._error_streak = 0

    # -- control ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

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
        self._schedule(0.0)

    def stop(self) -> Deferred[None]:
        """Stop; fires once the worker thread is done and gone."""
        if not self._running:
            return succeed(None)
        self._running = False
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
        d: Deferred[None] = deferToThreadPool(self._reactor, pool, self._source.close)

        def _stop_pool(result: object) -> None:
            # Runs after close() finished, so stop() only joins an idle thread.
            pool.stop()
            if isinstance(result, Failure):
                self._log.failure("closing the capturer failed", result)

        d.addBoth(_stop_pool)
        return d

    def force_keyframe(self) -> None:
        """Make the next frame a key frame (new viewer, C{refresh_video})."""
        self._key_wanted = True

    def switch_display(self, index: int) -> None:
        """Capture monitor C{index} from the next frame on (a key frame)."""
        self._source.select(index)
        self._key_wanted = True

    def set_quality(self, quality: int) -> None:
        """Apply C{image_quality}: the screen is sent again at the new quality
        (a key frame, which the encoder's reopen needs anyway)."""
        self._quality = quality
        self._key_wanted = True
        self._update_limits()

    def set_custom_fps(self, fps: int | float | None) -> None:
        """Apply C{custom_fps}: the frame-rate ceiling."""
        self._max_fps = clamp_fps(fps)
        self._update_limits()

    def set_codec(self, codec: str) -> None:
        """Switch between H.264 and VP9; the next frame is a key frame of it."""
        self._codec = Codec(codec)
        self._key_wanted = True

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

    def _slot(self) -> None:
        self._call = None
        if not self._running or self._busy is not None:
            return
        self.stats.slots += 1
        self.pacer.tick()
        buffered = self._buffered()
        self.controller.on_buffer(buffered)
        self.controller.update()
        self.pacer.set_fps(self.controller.fps)
        if not self.drop_policy.should_send(buffered):
            self.stats.dropped += 1
            self.controller.on_drop()
            self._schedule(self.pacer.delay())
            return
        key = self._key_wanted or self.drop_policy.take_keyframe_request()
        self._key_wanted = False
        job = _Job(
            keyframe=key,
            fps=self.controller.fps,
            level=self.controller.level,
            max_fps=self._max_fps,
            quality=self._quality,
            codec=self._codec,
        )
        assert self._pool is not None
        # pts: milliseconds since start(), the slot's time (not the grab's),
        # so frames are spaced as paced.
        pts = int((self._reactor.seconds() - self._epoch) * 1000)
        d = deferToThreadPool(self._reactor, self._pool, self._work, job, pts)
        self._busy = d
        d.addCallbacks(self._done, self._failed, errbackArgs=(job,))

    def _work(self, job: _Job, pts: int) -> tuple[EncodedFrame | None, tuple[int, int]]:
        # Worker thread: nothing here may touch the reactor.
        frame = self._source.grab()
        prev = self._source.previous
        size = (frame.width, frame.height)
        # Whether anything changed is one memcmp (0.3-0.6 ms at 1080p); the
        # encoder finds the changed regions itself, so the tile search of
        # change.detect_change (3-10 ms) would be wasted here.
        if not job.keyframe and prev is not None and prev.data == frame.data:
            return None, size
        # The bitrate depends on the frame size, known only here; computing it
        # here keeps the first frame from opening the encoder at a bitrate
        # that the second one would have to reopen it for.
        profile = quality_profile(job.quality)
        enc = self._encoder
        enc.set_codec(job.codec)
        enc.set_qmax(profile.qmax_h264 if job.codec == Codec.H264 else profile.qmax_vp9)
        base = base_bitrate(job.quality, frame.width, frame.height, job.max_fps)
        enc.set_bitrate(int(base * job.level))
        enc.set_fps(job.fps)
        return enc.encode(frame.data, frame.width, frame.height, pts, keyframe=job.keyframe), size

    def _done(self, result: tuple[EncodedFrame | None, tuple[int, int]]) -> None:
        self._busy = None
        if self._error_streak:
            self._log.info(
                "screen capture recovered after {count} failed attempts",
                count=self._error_streak,
            )
            self._error_streak = 0
        encoded, size = result
        if size != self._size:
            self._size = size
            self._update_limits()
        if encoded is None:
            self.stats.unchanged += 1
        elif self._running:
            self.stats.frames += 1
            self.stats.bytes += len(encoded.data)
            self.stats.key_frames += encoded.key
            try:
                self._deliver(encoded)
            except Exception:
                self._log.failure("delivering a video frame failed")
        self._schedule(self.pacer.delay())

    def _failed(self, failure: Failure, job: _Job) -> None:
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
