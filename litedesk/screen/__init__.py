"""The host's screen pipeline and the viewer's video decoder.

X DAMAGE (what changed; nothing drawn, nothing done) → capture of the
damaged rectangles (mss, per monitor) converted into a persistent YUV picture
(or, without DAMAGE, whole grabs compared) → encode (H.264 via libx264, or
VP9) → deliver, dropping frames rather than queueing them when the transport
is backed up, with frame rate and bitrate adapted from round trips and
buffer levels, and frames sent at once after injected input.

  - L{capture}: L{DisplayInfo}, L{list_displays}, L{Capturer}, whose whole
    grabs go into shared memory of our own (L{shm_grab});
  - L{change}: L{detect_change}, L{changed_tiles};
  - L{damage}: L{damage.DamageWatcher} (X DAMAGE on a thread of its own),
    L{damage.merge_rects}; L{damage_frames}: L{damage_frames.DamagePath},
    the damaged rectangles grabbed into L{yuv_canvas.YuvCanvas}, the
    encoder's persistent picture;
  - L{frame_job}: one frame slot's work on the worker thread;
  - L{codec}: L{Codec}, L{EncodedFrame}, L{is_key_frame};
  - L{encode}: L{VideoEncoder}, with its settings and their measurements in
    L{encoder_settings}; L{decode}: L{VideoDecoder} (the viewer's);
  - L{pipeline}: sans-IO L{FramePacer}, L{InputBoost}, L{DropPolicy},
    L{AdaptiveController}, L{ImageQuality};
  - L{streamer}: L{ScreenStreamer}, the Twisted-facing loop;
  - L{backpressure}: L{transport_buffered}, L{PauseTracker}: what to pass
    as the streamer's C{buffered} callable; L{limit_kernel_buffering},
    L{backpressure.send_without_delay};
  - L{testpattern}: synthetic desktop images for tests and benchmarks.
"""

from __future__ import annotations

from .backpressure import PauseTracker, limit_kernel_buffering, transport_buffered
from .capture import CaptureError, Capturer, DisplayInfo, Frame, bgra_to_image, list_displays
from .change import Change, Rect, changed_tiles, detect_change
from .codec import Codec, EncodedFrame, is_key_frame
from .decode import DecodedFrame, VideoDecoder
from .encode import VideoEncoder
from .pipeline import (
    AdaptiveController,
    DropPolicy,
    FramePacer,
    ImageQuality,
    InputBoost,
    base_bitrate,
    clamp_fps,
    quality_profile,
)
from .streamer import ScreenStreamer, StreamStats

__all__ = [
    "AdaptiveController",
    "CaptureError",
    "Capturer",
    "Change",
    "Codec",
    "DecodedFrame",
    "DisplayInfo",
    "DropPolicy",
    "EncodedFrame",
    "Frame",
    "FramePacer",
    "ImageQuality",
    "InputBoost",
    "PauseTracker",
    "Rect",
    "ScreenStreamer",
    "StreamStats",
    "VideoDecoder",
    "VideoEncoder",
    "base_bitrate",
    "bgra_to_image",
    "changed_tiles",
    "clamp_fps",
    "detect_change",
    "is_key_frame",
    "limit_kernel_buffering",
    "list_displays",
    "quality_profile",
    "transport_buffered",
]
