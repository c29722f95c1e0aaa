"""What a viewer's session counts: frames, bytes, key frames, tiles, round trip.

C{--stats-json} (L{litedesk.viewer.cli}), the status bar and the tests read
these; L{litedesk.session.viewer_session.ViewerSession} keeps one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ViewerStats"]


@dataclass
class ViewerStats:
    frames: int = 0
    key_frames: int = 0
    bytes: int = 0
    video_bytes: int = 0
    decode_errors: int = 0
    key_frame_requests: int = 0
    #: video frames of a kind this viewer does not know (RustDesk's raw modes)
    unsupported_frames: int = 0
    #: the codec of the last video frame
    codec: str | None = None
    #: screen tiles drawn, and tile messages refused (litedesk.screen.tiles)
    tiles: int = 0
    tile_errors: int = 0
    rtt_ms: float | None = None
    first_frame_at: float | None = None
    last_frame_at: float | None = None
