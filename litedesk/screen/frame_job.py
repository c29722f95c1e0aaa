"""One frame slot's work on the streamer's worker thread: capture, then encode.

L{ScreenStreamer} decides on the reactor thread I{whether} and I{how} to
produce a frame (a L{Job}: key frame or not, rate, quality, codec); L{produce}
does it on the worker thread and returns a L{Produced}.  Two ways to know what
changed:

  - the damage path (L{DamagePath}, when the X server has DAMAGE): only the
    damaged rectangles are grabbed and converted into the persistent
    picture, which the encoder takes whole;
  - the compare path: the whole monitor is grabbed and compared with the
    last grab (one C{memcmp}), converted whole and encoded if it differs.

Nothing here touches the reactor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .capture import Capturer, DisplayInfo, Frame
from .change import Rect
from .codec import Codec, EncodedFrame
from .damage_frames import DamagePath
from .encode import VideoEncoder
from .pipeline import base_bitrate, quality_profile
from .tile_frames import as_tiles

__all__ = ["FrameSource", "Job", "Produced", "produce"]


class FrameSource(Protocol):
    """What the streamer needs from a capturer (L{Capturer} is one)."""

    @property
    def previous(self) -> Frame | None: ...

    def grab(self) -> Frame: ...

    def select(self, index: int) -> None: ...

    def displays(self) -> list[DisplayInfo]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Job:
    """What the reactor side asked for this slot."""

    keyframe: bool
    fps: float
    level: float
    max_fps: float
    quality: int
    codec: str
    # The viewer draws screen tiles (L{litedesk.screen.tiles}).
    tiles: bool = False


@dataclass(frozen=True, slots=True)
class Produced:
    """A slot's outcome.

    @ivar encoded: C{None} when nothing changed.
    @ivar size: the monitor's size.
    @ivar region: what the damage path grabbed (monitor coordinates).
    """

    encoded: EncodedFrame | None
    size: tuple[int, int]
    region: tuple[Rect, ...] = ()


def _configure(encoder: VideoEncoder, job: Job, width: int, height: int) -> None:
    # The bitrate depends on the frame size, known only here; computing it
    # here keeps the first frame from opening the encoder at a bitrate that
    # the second one would have to reopen it for.
    profile = quality_profile(job.quality)
    encoder.set_codec(job.codec)
    encoder.set_qmax(profile.qmax_h264 if job.codec == Codec.H264 else profile.qmax_vp9)
    base = base_bitrate(job.quality, width, height, job.max_fps)
    encoder.set_bitrate(int(base * job.level))
    encoder.set_fps(job.fps)


def produce(
    job: Job, pts: int, source: FrameSource, encoder: VideoEncoder, damage: DamagePath | None
) -> Produced:
    """Capture and encode one frame, or find that nothing changed.

    @param damage: the damage path, or C{None} to grab and compare.
    @raise litedesk.screen.capture.CaptureError: the grab failed.
    """
    if damage is not None and damage.usable and isinstance(source, Capturer):
        picture, (w, h), region = damage.picture(source, job.keyframe, scrolls=job.tiles)
        if picture is None:
            return Produced(None, (w, h))
        if job.tiles and not job.keyframe:
            tiles = as_tiles(picture, region, damage.scroll, pts, (w, h))
            if tiles is not None:
                return Produced(tiles, (w, h), region)
        _configure(encoder, job, w, h)
        encoded = encoder.encode_yuv(
            picture, w, h, pts, keyframe=job.keyframe, changed=damage.unencoded
        )
        damage.encoded()
        return Produced(encoded, (w, h), region)
    frame = source.grab()
    prev = source.previous
    size = (frame.width, frame.height)
    # Whether anything changed is one memcmp (0.3-0.6 ms at 1080p); the
    # encoder finds the changed regions itself, so the tile search of
    # change.detect_change (3-10 ms) would be wasted here.
    if not job.keyframe and prev is not None and prev.data == frame.data:
        return Produced(None, size)
    _configure(encoder, job, *size)
    return Produced(encoder.encode(frame.data, *size, pts, keyframe=job.keyframe), size)
