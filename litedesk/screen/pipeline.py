"""Sans-IO policies of the screen stream: pacing, dropping, adapting.

Nothing here touches the reactor, a socket or a thread.  Time comes from an
injected C{IReactorTime} (its C{seconds()}), so tests drive everything with
C{task.Clock}.

  - L{FramePacer}: when the next frame is due at the target rate;
    L{InputBoost}: which frames may skip it right after injected input.
  - L{DropPolicy}: whether to produce a frame now, given how many bytes the
    transport still holds.  The decision is made I{before} capturing and
    encoding.  A frame that is never encoded is never referenced by later
    frames, so the next encoded frame is an ordinary P-frame that the viewer
    can decode from what it already has; no key frame is needed, which
    matters because a key frame is 5-50 times larger than a P-frame and would
    make the congestion that caused the drop worse.  Only a frame that was
    encoded and then discarded (L{DropPolicy.frame_lost}) breaks the
    reference chain, and then the next frame must be a key frame.
  - L{AdaptiveController}: frame rate and bitrate from C{TestDelay} round
    trips, the transport's buffer level and drops, in the manner of
    RustDesk's video QoS: back off multiplicatively as soon as the queueing
    delay or the buffer grows, recover additively and only after a healthy
    spell.
  - L{ImageQuality}, L{quality_profile}, L{clamp_fps}: the viewer's
    C{OptionMessage.image_quality} and C{custom_fps}.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from twisted.internet.interfaces import IReactorTime

__all__ = [
    "AdaptiveController",
    "DropPolicy",
    "FramePacer",
    "ImageQuality",
    "InputBoost",
    "QualityProfile",
    "base_bitrate",
    "clamp_fps",
    "quality_profile",
]

DEFAULT_FPS = 30.0
MIN_FPS = 1.0
MAX_FPS = 60.0


class ImageQuality(IntEnum):
    """C{OptionMessage.ImageQuality} values (RustDesk numbering)."""

    NOT_SET = 0
    LOW = 2
    BALANCED = 3
    BEST = 4


@dataclass(frozen=True, slots=True)
class QualityProfile:
    """What an image-quality setting means for the encoder.

    @ivar bitrate_1080p30: target bits/s for 1920x1080 at 30 fps; scaled by
        area and frame rate (L{base_bitrate}).
    @ivar qmax_h264: libx264 quantizer cap (quality floor, 0-51).
    @ivar qmax_vp9: libvpx quantizer cap (0-63).
    """

    bitrate_1080p30: int
    qmax_h264: int
    qmax_vp9: int


# Chosen from measurements of a synthetic 1080p desktop (see encode.py):
# Balanced keeps small text readable (key frame MAE about 3.6 of 255) while a
# window dragged across the screen stays near 1 Mb/s.
_PROFILES = {
    ImageQuality.LOW: QualityProfile(750_000, 38, 52),
    ImageQuality.BALANCED: QualityProfile(1_500_000, 32, 44),
    ImageQuality.BEST: QualityProfile(3_000_000, 26, 36),
}


def quality_profile(quality: int) -> QualityProfile:
    """The profile for an C{image_quality} value; unknown or unset → Balanced."""
    try:
        q = ImageQuality(quality)
    except ValueError:
        q = ImageQuality.BALANCED
    return _PROFILES.get(q, _PROFILES[ImageQuality.BALANCED])


def base_bitrate(quality: int, width: int, height: int, fps: float) -> int:
    """Target bits/s for a display size and frame rate at a quality setting.

    Scales with area, and with the square root of the frame rate: at a higher
    rate consecutive frames differ less, so each needs fewer bits.
    """
    area = max(1, width * height) / (1920 * 1080)
    rate = (max(MIN_FPS, fps) / 30.0) ** 0.5
    return max(100_000, int(quality_profile(quality).bitrate_1080p30 * area * rate))


def clamp_fps(custom_fps: int | float | None) -> float:
    """C{OptionMessage.custom_fps}: 0/None means the default, else 1..60."""
    if not custom_fps or custom_fps <= 0:
        return DEFAULT_FPS
    return float(min(MAX_FPS, max(MIN_FPS, custom_fps)))


class FramePacer:
    """Ticks at a target frame rate without drifting and without bursts.

    Each frame is due one period after the previous one was due; if the
    producer fell more than a period behind (a slow encode, a busy reactor)
    the schedule restarts from now instead of firing a burst to catch up.
    """

    def __init__(self, clock: IReactorTime, fps: float = DEFAULT_FPS) -> None:
        self._clock = clock
        self._period = 1.0 / max(MIN_FPS, fps)
        self._due: float | None = None
        self._ticked = float("-inf")

    @property
    def fps(self) -> float:
        return 1.0 / self._period

    def set_fps(self, fps: float) -> None:
        """Change the rate; a due time already set moves no later than now + period.

        The same rate again changes nothing.  The streamer sets the rate at
        every slot, and frames sent at once after a click (L{InputBoost})
        tick the pacer early, pushing the due time a period further each:
        pulling it back to now + period there gave every click a frame on
        top of the rate (33 frames a second at 30 with four clicks a second).
        """
        period = 1.0 / max(MIN_FPS, min(MAX_FPS * 2, fps))
        if period == self._period:
            return
        self._period = period
        if self._due is not None:
            self._due = min(self._due, self._clock.seconds() + period)

    def delay(self) -> float:
        """Seconds until the next frame is due (0 if it is already)."""
        if self._due is None:
            return 0.0
        return max(0.0, self._due - self._clock.seconds())

    def tick(self) -> None:
        """Record that a frame slot was used (or skipped) now."""
        now = self._clock.seconds()
        self._ticked = now
        if self._due is None or now - self._due > self._period:
            self._due = now + self._period
        else:
            self._due += self._period

    def refund(self) -> None:
        """The slot just ticked sent nothing: give its period back.

        The next slot may then come half a period after that one, not
        sooner: a slot that finds damage but no change (a toolkit redrawing
        what is there, a click's damage before its effect) would otherwise
        take a frame from the rate (29.5 frames/s at a 30 cap with a window
        moving and clicks), and a screen redrawn unchanged without pause
        gets at most twice the rate's slots, each a grab and a compare.
        """
        if self._due is not None:
            self._due = max(self._due - self._period, self._ticked + self._period / 2)


class InputBoost:
    """Right after injected input, let the next frames skip the pacer.

    A click's effect should reach the viewer in the next frame, not at the
    next slot of the frame rate (up to 33 ms later at 30 fps).  After
    L{injected}, the next C{frames} frames within C{window} seconds start as
    soon as there is something to send, no closer than C{gap} to the frame
    before.  Two frames, not one: the first damage after a click may be
    something else (a moving window) drawn just before the click's own
    repaint.  A budget per event rather than a rate: clicks every 0.2 s must
    not lift a busy screen to 120 frames/s.
    """

    def __init__(
        self, clock: IReactorTime, *, window: float = 0.25, frames: int = 2, gap: float = 1 / 120
    ) -> None:
        self._clock = clock
        self.window = window
        self.frames = frames
        self.gap = gap
        self._at = float("-inf")
        self._left = 0
        self._last_start = float("-inf")

    def injected(self) -> None:
        """An input event was injected now."""
        self._at = self._clock.seconds()
        self._left = self.frames

    def frame_started(self) -> None:
        """A frame is being produced now (uses one boosted frame, if any)."""
        self._last_start = self._clock.seconds()
        if self._left:
            self._left -= 1

    def delay(self, paced: float) -> float:
        """Seconds until the next frame: C{paced} (the pacer's) unless boosted."""
        now = self._clock.seconds()
        if self._left and now - self._at < self.window:
            return min(paced, max(0.0, self._last_start + self.gap - now))
        return paced


class DropPolicy:
    """Skip frames while the transport is backed up, with hysteresis.

    Above C{high_water} buffered bytes frames are skipped; once skipping,
    they stay skipped until the buffer drains below C{low_water}, so the
    stream does not flap around one threshold, sending a frame each time a
    few bytes leave.

    @ivar drops: frames skipped since creation.
    @ivar consecutive: frames skipped since the last one sent.
    """

    def __init__(self, high_water: int = 256 * 1024, low_water: int | None = None) -> None:
        self.high_water = high_water
        self.low_water = high_water // 2 if low_water is None else low_water
        self.drops = 0
        self.consecutive = 0
        self._dropping = False
        self._key_needed = False

    def should_send(self, buffered: int) -> bool:
        """Decide, before capturing, whether to produce a frame now."""
        limit = self.low_water if self._dropping else self.high_water
        if buffered > limit:
            self._dropping = True
            self.drops += 1
            self.consecutive += 1
            return False
        self._dropping = False
        self.consecutive = 0
        return True

    def frame_lost(self) -> None:
        """An I{encoded} frame was discarded: the next one must be a key frame."""
        self.drops += 1
        self._key_needed = True

    def take_keyframe_request(self) -> bool:
        """Whether the next frame must be a key frame (resets the request)."""
        need, self._key_needed = self._key_needed, False
        return need


class AdaptiveController:
    """Frame rate and bitrate from round trips, buffer levels and drops.

    The round-trip time that matters is the part queueing adds: the smoothed
    RTT minus the lowest RTT seen recently (a 300 ms satellite link with no
    queue is healthy; a 5 ms LAN link whose RTT climbs to 150 ms is not).
    Every C{interval} seconds L{update} classifies the last interval:

      - severe (queueing delay > C{severe_delay}, buffer above twice the high
        water mark, or several drops): halve the level;
      - congested (delay > C{congested_delay}, buffer above the high water
        mark, or any drop): level × 0.8;
      - healthy (delay < C{healthy_delay}, buffer nearly empty, no drop) for
        C{recover_after} seconds: level + C{step_up};
      - otherwise hold.

    The level (C{min_level}..1) scales both the frame rate (floor
    C{min_fps}) and the bitrate, so each frame keeps roughly the same number
    of bits and its quality holds while motion gets choppier first.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_fps: float = DEFAULT_FPS,
        bitrate: int = 1_500_000,
        min_fps: float = 5.0,
        min_level: float = 0.1,
        high_water: int = 256 * 1024,
        interval: float = 1.0,
        congested_delay: float = 0.1,
        severe_delay: float = 0.3,
        healthy_delay: float = 0.05,
        recover_after: float = 3.0,
        step_up: float = 0.1,
    ) -> None:
        self._clock = clock
        self.max_fps = max_fps
        self.max_bitrate = bitrate
        self.min_fps = min_fps
        self.min_level = min_level
        self.high_water = high_water
        self.interval = interval
        self.congested_delay = congested_delay
        self.severe_delay = severe_delay
        self.healthy_delay = healthy_delay
        self.recover_after = recover_after
        self.step_up = step_up
        self.level = 1.0
        self._srtt: float | None = None
        self._rtts: deque[tuple[float, float]] = deque()
        self._peak_buffer = 0
        self._drops = 0
        self._last_update = clock.seconds()
        self._healthy_since: float | None = None

    # -- inputs -------------------------------------------------------------

    def on_rtt(self, rtt: float) -> None:
        """A C{TestDelay} round trip, in seconds."""
        now = self._clock.seconds()
        self._srtt = rtt if self._srtt is None else 0.7 * self._srtt + 0.3 * rtt
        self._rtts.append((now, rtt))
        while self._rtts and now - self._rtts[0][0] > 30.0:
            self._rtts.popleft()

    def on_buffer(self, nbytes: int) -> None:
        """The transport's buffered bytes, sampled at each frame slot."""
        self._peak_buffer = max(self._peak_buffer, nbytes)

    def on_drop(self) -> None:
        """A frame was skipped or lost because the transport was backed up."""
        self._drops += 1

    def set_limits(self, *, max_fps: float | None = None, bitrate: int | None = None) -> None:
        """New ceilings (viewer's custom_fps / image_quality); keeps the level."""
        if max_fps is not None:
            self.max_fps = max_fps
        if bitrate is not None:
            self.max_bitrate = bitrate

    # -- outputs ------------------------------------------------------------

    @property
    def queue_delay(self) -> float:
        """Smoothed RTT above the recent minimum, in seconds (0 if unknown)."""
        if self._srtt is None or not self._rtts:
            return 0.0
        return max(0.0, self._srtt - min(r for _, r in self._rtts))

    @property
    def fps(self) -> float:
        return max(min(self.min_fps, self.max_fps), self.max_fps * self.level)

    @property
    def bitrate(self) -> int:
        return int(self.max_bitrate * self.level)

    def update(self) -> bool:
        """Adjust the level if an interval has passed; C{True} if it changed."""
        now = self._clock.seconds()
        if now - self._last_update < self.interval:
            return False
        self._last_update = now
        delay = self.queue_delay
        peak, self._peak_buffer = self._peak_buffer, 0
        drops, self._drops = self._drops, 0
        old = self.level
        if delay > self.severe_delay or peak > 2 * self.high_water or drops >= 3:
            self.level = max(self.min_level, self.level * 0.5)
            self._healthy_since = None
        elif delay > self.congested_delay or peak > self.high_water or drops:
            self.level = max(self.min_level, self.level * 0.8)
            self._healthy_since = None
        elif delay < self.healthy_delay and peak < self.high_water // 4:
            if self._healthy_since is None:
                self._healthy_since = now
            elif now - self._healthy_since >= self.recover_after:
                self.level = min(1.0, self.level + self.step_up)
        else:
            self._healthy_since = None
        return self.level != old
