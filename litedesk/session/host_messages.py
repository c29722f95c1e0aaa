"""The host's messages to a viewer, built from plain values.

Which codec a viewer gets (L{pick_codec}) and how a login answer, a video
frame, a cursor shape and a clipboard are put into C{hbb.Message}s, and how a
received clipboard is read back (L{clipboard_text}).  These are pure
functions, apart from the session's state machine, so that they can be read
and tested without a connection.  Where a stock RustDesk client expects
something LiteDesk viewers do not need, the choice is explained at the
function (docs/protocol.rst §8.3).
"""

from __future__ import annotations

import io
import platform
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import zstandard

from litedesk.input.clipboard import MAX_CLIPBOARD_BYTES
from litedesk.proto import message_pb2 as pb
from litedesk.screen.codec import EncodedFrame
from litedesk.screen.cursor import CursorShape, shape_colors
from litedesk.session.host_context import Display

__all__ = [
    "MAX_CLIPBOARD",
    "clipboard_message",
    "clipboard_text",
    "cursor_data",
    "peer_info",
    "permission_info",
    "pick_codec",
    "platform_name",
    "session_summary",
    "supports_multi_clipboard",
    "switch_display",
    "version_number",
    "video_frame",
]

#: The largest clipboard text taken or sent, in UTF-8 bytes (after any
#: decompression: a small zstd frame can expand to gigabytes); the same
#: bound as the host's own clipboard.
MAX_CLIPBOARD: Final = MAX_CLIPBOARD_BYTES

_CODEC_FIELD = {
    "h264": "h264s",
    "vp9": "vp9s",
    "h265": "h265s",
    "vp8": "vp8s",
    "av1": "av1s",
    "tile": "tiles",
}


def pick_codec(option: pb.OptionMessage, default: str, *, rustdesk: bool = False) -> str:
    """The viewer's preference if it can decode it, else what it can decode.

    For a stock RustDesk client (C{rustdesk}): VP9, the codec every desktop
    client decodes in software (a RustDesk host does not even check
    C{ability_vp9}, and assumes VP9 only when C{supported_decoding} is
    absent), unless the client prefers H.264 and says it decodes it.  A
    RustDesk host picks H.264 unasked only with a hardware encoder; ours is
    software, so an unset preference stays on VP9.
    """
    dec = option.supported_decoding
    if rustdesk:
        if dec.prefer == pb.SupportedDecoding.H264 and dec.ability_h264 > 0:
            return "h264"
        return "vp9"
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
    """The C{PeerInfo} of a successful C{LoginResponse}.

    As a RustDesk host fills it (connection.rs, send_logon_response...): the
    platform name selects the client's key-code table (so it must be
    RustDesk's spelling, L{platform_name}); C{encoding} lists what the host
    can encode besides VP9, which is implied; C{features} says there is no
    privacy mode or terminal, so the client offers neither; each display has
    C{scale} 1 and its own size as original resolution, as a non-macOS
    RustDesk host sends, and the cursor is not in the picture (CursorData
    and CursorPosition carry it).
    """
    info = pb.PeerInfo(
        username=username,
        hostname=hostname,
        platform=platform_name(),
        current_display=current_display,
        version=version,
        encoding=pb.SupportedEncoding(h264=True),
        features=pb.Features(privacy_mode=False, terminal=False),
    )
    for d in displays:
        info.displays.append(
            pb.DisplayInfo(
                x=d.x,
                y=d.y,
                width=d.width,
                height=d.height,
                name=d.name,
                online=True,
                cursor_embedded=False,
                original_resolution=pb.Resolution(width=d.width, height=d.height),
                scale=1.0,
            )
        )
    return info


# platform.system() -> RustDesk's whoami::Platform names.
_PLATFORMS: Final = {"Linux": "Linux", "Darwin": "Mac OS", "Windows": "Windows"}


def platform_name(system: str | None = None) -> str:
    """This machine's platform as RustDesk spells it ("Linux", "Mac OS", "Windows")."""
    system = platform.system() if system is None else system
    return _PLATFORMS.get(system, system)


def permission_info(permission: int, enabled: bool) -> pb.Message:
    """C{Misc{permission_info}}: how a RustDesk host tells a client that
    keyboard/mouse or clipboard are off (connection.rs, send_permission), so
    that the client greys them out instead of sending input to be refused."""
    return pb.Message(
        misc=pb.Misc(
            permission_info=pb.PermissionInfo(
                permission=permission,  # type: ignore[arg-type]
                enabled=enabled,
            )
        )
    )


_VERSION_PART = re.compile(r"\d+")


def version_number(version: str) -> tuple[int, int, int]:
    """A RustDesk version string as comparable numbers; a part that is not a
    number counts as 0 (so garbage is (0, 0, 0), older than any release)."""
    nums = [0, 0, 0]
    for i, part in enumerate(version.split(".")[:3]):
        m = _VERSION_PART.match(part)
        nums[i] = int(m.group()[:9]) if m else 0
    return nums[0], nums[1], nums[2]


def supports_multi_clipboard(version: str, peer_platform: str) -> bool:
    """Whether a RustDesk peer reads C{multi_clipboards} (clipboard.rs,
    is_support_multi_clipboard): 1.3.0 and later, not iOS or an unnamed
    platform, Android from 1.3.3."""
    v = version_number(version)
    if v < (1, 3, 0) or peer_platform in ("", "iOS"):
        return False
    return not (peer_platform == "Android" and v < (1, 3, 3))


def clipboard_message(text: str, *, rustdesk: bool = False, multi: bool = False) -> pb.Message:
    """The host's clipboard text for a viewer.

    LiteDesk viewers get a plain C{Clipboard}.  RustDesk clients get the
    content zstd-compressed (level 3) with C{compress} set when that is
    shorter, as clipboard.rs builds it, inside C{multi_clipboards} for
    clients that read it (L{supports_multi_clipboard}).
    """
    data = text.encode("utf-8")
    if not rustdesk:
        return pb.Message(clipboard=pb.Clipboard(content=data, format=pb.Text))
    packed = zstandard.ZstdCompressor(level=3).compress(data)
    compress = len(packed) < len(data)
    clip = pb.Clipboard(compress=compress, content=packed if compress else data, format=pb.Text)
    if multi:
        return pb.Message(multi_clipboards=pb.MultiClipboards(clipboards=[clip]))
    return pb.Message(clipboard=clip)


def clipboard_text(clip: pb.Clipboard) -> tuple[str | None, str]:
    """The text of a received C{Clipboard}, or None and the reason it is not taken.

    Compressed content (C{compress}, a zstd frame as RustDesk clients send
    text longer than a few bytes) is decompressed to at most
    L{MAX_CLIPBOARD} bytes: like hbb_common's decompress_with_limit, one
    byte more than the limit is read to tell an oversized clipboard, so a
    small frame cannot make the host allocate its claimed size.
    """
    if clip.format != pb.Text:
        return None, f"clipboard format {clip.format} is not text"
    data = clip.content
    if clip.compress:
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(
                io.BytesIO(data), read_across_frames=True
            )
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_CLIPBOARD:
                chunk = reader.read(MAX_CLIPBOARD + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
        except zstandard.ZstdError as e:
            return None, f"clipboard is not a valid zstd frame: {e}"
    if len(data) > MAX_CLIPBOARD:
        return None, f"clipboard over {MAX_CLIPBOARD} bytes"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        return None, "clipboard text is not UTF-8"


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
