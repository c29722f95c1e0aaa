"""The host's messages to a viewer, built from plain values.

Which codec a viewer gets (L{pick_codec}) and how a login answer, a video
frame and a cursor shape are put into C{hbb.Message}s.  These are pure
functions, apart from the session's state machine, so that they can be read
and tested without a connection.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from typing import Any

from litedesk.proto import message_pb2 as pb
from litedesk.screen.codec import EncodedFrame
from litedesk.screen.cursor import CursorShape, shape_colors
from litedesk.session.host_context import Display

__all__ = [
    "cursor_data",
    "peer_info",
    "pick_codec",
    "session_summary",
    "switch_display",
    "video_frame",
]

_CODEC_FIELD = {"h264": "h264s", "vp9": "vp9s", "h265": "h265s", "vp8": "vp8s", "av1": "av1s"}


def pick_codec(option: pb.OptionMessage, default: str) -> str:
    """The viewer's preference if it can decode it, else what it can decode."""
    dec = option.supported_decoding
    prefer = dec.prefer
    if prefer == pb.SupportedDecoding.H264 and dec.ability_h264 > 0:
        return "h264"
    if prefer == pb.SupportedDecoding.VP9 and dec.ability_vp9 > 0:
        return "vp9"
    if default == "vp9" and dec.ability_vp9 > 0:
        return "vp9"
    if dec.ability_h264 > 0:
        return "h264"
    if dec.ability_vp9 > 0:
        return "vp9"
    return default


def peer_info(
    *,
    username: str,
    hostname: str,
    version: str,
    current_display: int,
    displays: Iterable[Display],
) -> pb.PeerInfo:
    """The C{PeerInfo} of a successful C{LoginResponse}."""
    info = pb.PeerInfo(
        username=username,
        hostname=hostname,
        platform=platform.system(),
        current_display=current_display,
        version=version,
        encoding=pb.SupportedEncoding(h264=True),
    )
    for d in displays:
        info.displays.append(
            pb.DisplayInfo(x=d.x, y=d.y, width=d.width, height=d.height, name=d.name, online=True)
        )
    return info


def video_frame(frame: EncodedFrame, display: int) -> pb.Message:
    """One encoded frame as a C{VideoFrame} in the union member of its codec."""
    frames = pb.EncodedVideoFrames(
        frames=[pb.EncodedVideoFrame(data=frame.data, key=frame.key, pts=frame.pts)]
    )
    vf = pb.VideoFrame(display=display)
    getattr(vf, _CODEC_FIELD.get(str(frame.codec), "h264s")).CopyFrom(frames)
    return pb.Message(video_frame=vf)


def cursor_data(shape: CursorShape) -> pb.Message:
    """A cursor shape as C{CursorData}."""
    data = pb.CursorData(
        id=shape.serial,
        hotx=shape.hotx,
        hoty=shape.hoty,
        width=shape.width,
        height=shape.height,
        colors=shape_colors(shape),
    )
    return pb.Message(cursor_data=data)


def switch_display(index: int, display: Display) -> pb.Message:
    """The answer to a viewer's C{SwitchDisplay}: the monitor now streamed."""
    d = display
    return pb.Message(
        misc=pb.Misc(
            switch_display=pb.SwitchDisplay(
                display=index, x=d.x, y=d.y, width=d.width, height=d.height
            )
        )
    )


def session_summary(stats: Any, rtts: Sequence[int], duration: float) -> dict[str, Any]:
    """The fields of the host's end-of-session log line.

    @param stats: the streamer's counters (C{frames}, C{bytes}, C{dropped}),
        or None when nothing was streamed.
    @param rtts: the round trips measured, in milliseconds.
    @param duration: seconds since login (more than zero).
    """
    frames = getattr(stats, "frames", 0)
    return {
        "duration": duration,
        "frames": frames,
        "fps": frames / duration,
        "mbps": getattr(stats, "bytes", 0) * 8 / duration / 1e6,
        "dropped": getattr(stats, "dropped", 0),
        "rtt_avg": round(sum(rtts) / len(rtts)) if rtts else None,
        "rtt_max": max(rtts) if rtts else None,
    }
