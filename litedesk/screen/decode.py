"""Video decoding on the viewer over PyAV: encoded frames to decoded pictures.

A LiteDesk host sends H.264 or VP9; a stock RustDesk host (1.2 to 1.4) sends
whichever of VP9, VP8, AV1, H.264 and H.265 its encoder negotiation picked
from the viewer's C{SupportedDecoding} (RustDesk's libs/scrap codec.rs), and
may switch mid-session.  L{decodable_codecs} says which of them this PyAV
build decodes, so that the viewer announces exactly those; L{VideoDecoder}
decodes any of them and switches when the codec changes.

Pictures stay as decoded (YUV) until the window converts them to RGB at the
size it shows (L{litedesk.screen.decoded}).  The decoder crops the padding
column or row of an odd-sized LiteDesk stream (the encoder pads to even, see
L{litedesk.screen.codec.pad_to_even}).  It is
separate from the encoder (L{litedesk.screen.encode}): the viewer needs only
this half.  L{KeyFrameRequests} decides, without I/O, when the viewer asks
the host for a key frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import av
from twisted.logger import Logger

from litedesk.screen.codec import Codec, EncodedFrame, is_key_frame
from litedesk.screen.decoded import DecodedFrame

__all__ = [
    "CODECS",
    "MAX_DECODE_FAILURES",
    "MAX_PIXELS",
    "DecodedFrame",
    "KeyFrameRequests",
    "VideoDecoder",
    "decodable_codecs",
    "key_frame",
]

_log = Logger()

#: Every codec a host may send, named as the C{VideoFrame} union member
#: without its trailing C{s} (C{vp9s}, C{h265s}, ...).
CODECS: Final = ("vp9", "vp8", "av1", "h264", "h265")

# PyAV decoder names per codec, best first.  FFmpeg's native VP8/VP9 decoders
# are faster than libvpx's; its native "av1" decoder only drives hardware, so
# AV1 needs libdav1d (in PyAV's wheels) or libaom; h264 and hevc are the only
# H.264/H.265 software decoders FFmpeg has.
_CANDIDATES: Final = {
    "vp9": ("vp9", "libvpx-vp9"),
    "vp8": ("vp8", "libvpx"),
    "av1": ("libdav1d", "libaom-av1"),
    "h264": ("h264",),
    "h265": ("hevc",),
}

#: The largest picture, in pixels, a decoder will allocate (FFmpeg's and
#: dav1d's own check, before any buffer exists): 8192 x 4608, a little more
#: than an 8K display.  A host that claims more in a frame header gets a
#: decode error, so it can make the viewer hold at most this times the
#: codec's reference frames.
MAX_PIXELS: Final = 8192 * 4608

#: RustDesk's client gives up on a decoder after this many frames in a row
#: fail (client.rs MAX_DECODE_FAIL_COUNTER), or at once when the first frame
#: of a new decoder fails, and tells the host it cannot decode that codec.
MAX_DECODE_FAILURES: Final = 3


def _find_decoders() -> dict[str, str]:
    found: dict[str, str] = {}
    for codec, names in _CANDIDATES.items():
        for name in names:
            try:
                av.codec.Codec(name, "r")
            except Exception:  # UnknownCodecError, or a build without it
                continue
            found[codec] = name
            break
    return found


_DECODERS: Final = _find_decoders()


def decodable_codecs() -> frozenset[str]:
    """The codecs of L{CODECS} this PyAV build can decode."""
    return frozenset(_DECODERS)


def key_frame(codec: str, data: bytes) -> bool:
    """Whether C{data} starts a decodable sequence, from the bitstream alone.

    H.264 and VP9 as L{litedesk.screen.codec.is_key_frame}; VP8, AV1 and
    H.265 here.  Garbage and unknown codecs are not key frames; never raises.
    """
    if codec in (Codec.H264, Codec.VP9):
        return is_key_frame(codec, data)
    check = _KEY_FRAME_CHECKS.get(codec)
    return check is not None and check(data)


def _vp8_key_frame(data: bytes) -> bool:
    # RFC 6386 9.1: bit 0 of the 3-byte frame tag is 0 on key frames, which
    # then carry the start code 9d 01 2a and two 16-bit sizes.
    return len(data) >= 10 and data[0] & 1 == 0 and data[3:6] == b"\x9d\x01\x2a"


def _h265_key_frame(data: bytes) -> bool:
    # An Annex-B access unit with an IRAP picture (NAL types 16-21: BLA, IDR,
    # CRA); the type is bits 1-6 of the 2-byte NAL header.
    i = data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        if 16 <= (data[i + 3] >> 1) & 0x3F <= 21:
            return True
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


_OBU_SEQUENCE_HEADER = 1
_OBU_FRAME_HEADER = 3
_OBU_FRAME = 6


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    """AV1's leb128 at C{pos}: (value, position after it); -1 if cut short."""
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            return -1, pos
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    return -1, pos


def _av1_key_frame(data: bytes) -> bool:
    """A temporal unit (AV1 spec 5.3, low-overhead OBUs) that holds a sequence
    header and whose first frame header is a shown KEY_FRAME."""
    pos = 0
    reduced_still_picture = None
    while pos < len(data):
        header = data[pos]
        obu_type = (header >> 3) & 0x0F
        start = pos + 1 + ((header >> 2) & 1)  # the extension byte, if any
        if header & 0x80 or start > len(data):  # forbidden bit, or cut short
            return False
        if header & 0x02:  # obu_has_size_field
            size, start = _leb128(data, start)
            if size < 0:
                return False
        else:  # the last OBU runs to the end
            size = len(data) - start
        end = start + size
        if end > len(data):
            return False
        if obu_type == _OBU_SEQUENCE_HEADER and size:
            # seq_profile (3 bits), still_picture, reduced_still_picture_header
            reduced_still_picture = bool(data[start] & 0x08)
        elif obu_type in (_OBU_FRAME_HEADER, _OBU_FRAME):
            if reduced_still_picture is None or not size:
                return False  # no sequence header first: not an entry point
            if reduced_still_picture:
                return True  # such a sequence has key frames only
            # show_existing_frame = 0, then frame_type (2 bits) = KEY_FRAME (0)
            return data[start] & 0xE0 == 0
        pos = end
    return False


_KEY_FRAME_CHECKS: Final[dict[str, Callable[[bytes], bool]]] = {
    "vp8": _vp8_key_frame,
    "av1": _av1_key_frame,
    "h265": _h265_key_frame,
}


class VideoDecoder:
    """Decode encoded frames of any of L{CODECS} to L{DecodedFrame}s.

    Never raises on bad input: a frame that does not decode is counted in
    L{errors}, described in L{last_error}, logged, and the decoder then
    ignores everything until the next key frame (frames predicted from a
    broken picture would only spread the damage).  It also waits for a key
    frame at the start and after a codec switch, so a viewer that joins
    mid-stream shows nothing rather than grey smears.  Pictures larger than
    L{MAX_PIXELS} are refused before they are allocated.

    @ivar errors: frames that failed to decode (all codecs, all time).
    @ivar skipped: frames ignored while waiting for a key frame.
    @ivar waiting_for_key: the next non-key frame will be skipped.
    @ivar failures_in_a_row: frames of the current codec that failed since
        the last picture; L{MAX_DECODE_FAILURES} when the first frame a new
        decoder tried failed (see L{gave_up}).
    """

    def __init__(
        self, codec: str = Codec.H264, on_error: Callable[[str], None] | None = None
    ) -> None:
        self._codec = _known(codec)
        self._on_error = on_error
        self._ctx: Any = None
        self.errors = 0
        self.skipped = 0
        self.last_error: str | None = None
        self.waiting_for_key = True
        self.failures_in_a_row = 0
        self._tried = False
        self._first_try = False

    @property
    def codec(self) -> str:
        return self._codec

    @property
    def gave_up(self) -> bool:
        """The current codec failed as RustDesk's client gives up on a decoder:
        L{MAX_DECODE_FAILURES} frames in a row, or the first one tried."""
        return self.failures_in_a_row >= MAX_DECODE_FAILURES

    def _new_ctx(self) -> Any:
        name = _DECODERS.get(self._codec)
        if name is None:
            raise ValueError(f"no {self._codec} decoder in this PyAV build")
        ctx = av.CodecContext.create(name, "r")
        ctx.options = {
            # Fail loudly on damaged input instead of concealing it: a
            # concealed frame looks like a valid one and poisons the frames
            # that follow.
            "err_detect": "crccheck+bitstream+buffer+explode",
            # One picture out per frame in: dav1d would otherwise hold frames
            # back for its frame threads.
            "flags": "+low_delay",
            "max_pixels": str(MAX_PIXELS),
        }
        ctx.thread_count = 1  # frame threading would add a frame of delay
        ctx.open()
        return ctx

    def reset(self, codec: str | None = None) -> None:
        """Forget all decoder state (new stream, display switch, codec change).

        @raise ValueError: C{codec} is not one of L{CODECS}.
        """
        if codec is not None:
            self._codec = _known(codec)
        self._ctx = None
        self.waiting_for_key = True
        self.failures_in_a_row = 0
        self._tried = False

    def decode_frame(self, frame: EncodedFrame) -> DecodedFrame | None:
        """Decode one L{EncodedFrame} (switching codec if it changed)."""
        if frame.codec != self._codec:
            try:
                self.reset(frame.codec)
            except ValueError:
                self._fail(f"unknown codec {frame.codec!r}")
                return None
        return self.decode(frame.data, frame.key, frame.pts, frame.width, frame.height)

    def decode(
        self,
        data: bytes,
        key: bool | None = None,
        pts: int = 0,
        width: int | None = None,
        height: int | None = None,
    ) -> DecodedFrame | None:
        """Decode one frame's data; C{None} when nothing can be shown (yet).

        @param key: the sender's key-frame flag; C{None} to look at the data.
            A frame the flag calls key but whose data says otherwise is not
            trusted as an entry point.
        @param width: the captured width: a picture one pixel wider (the
            even padding of an odd-sized display) is cropped to it.  Any
            other difference is the host's current size, shown as it is.
        """
        try:
            return self._decode(data, key, pts, width, height)
        except Exception as e:  # PyAV raises many types; none may escape
            self._fail(f"{type(e).__name__}: {e}")
            return None

    def _decode(
        self, data: bytes, key: bool | None, pts: int, width: int | None, height: int | None
    ) -> DecodedFrame | None:
        is_key = key is not False and key_frame(self._codec, data)
        if self.waiting_for_key:
            if not is_key:
                self.skipped += 1
                return None
            self._ctx = None  # start from clean state at the key frame
        self._first_try = not self._tried
        self._tried = True
        if self._ctx is None:
            self._ctx = self._new_ctx()
        frames = self._ctx.decode(av.Packet(data)) if data else []
        if not frames:
            # Zero-delay streams give one picture per frame (and an empty
            # packet would drain the decoder): nothing here means the decoder
            # could not make sense of it.
            self._fail("no picture in frame")
            return None
        picture = frames[-1]
        if getattr(picture, "is_corrupt", False):
            self._fail("corrupt picture")
            return None
        self._first_try = False
        if self.failures_in_a_row:
            _log.info(
                "{codec} decoding again after {failures} failed frames",
                codec=self._codec,
                failures=self.failures_in_a_row,
            )
        self.waiting_for_key = False
        self.failures_in_a_row = 0
        # The picture stays YUV: the window converts it to RGB at the size it
        # shows (see L{litedesk.screen.decoded}), screenshots at full size.
        w = _unpadded(picture.width, width)
        h = _unpadded(picture.height, height)
        return DecodedFrame(picture, pts, w, h)

    def _fail(self, reason: str) -> None:
        self.errors += 1
        self.last_error = reason
        self.waiting_for_key = True
        self._ctx = None
        # As RustDesk's VideoHandler: a decoder whose very first frame fails
        # is as good as one that failed three times.
        if self._first_try:
            self.failures_in_a_row = max(self.failures_in_a_row, MAX_DECODE_FAILURES)
        else:
            self.failures_in_a_row += 1
        self._first_try = False
        # The first failure of a run, the one that gives up, then every
        # 100th: a host sending garbage cannot flood the log.
        if self.failures_in_a_row in (1, MAX_DECODE_FAILURES) or self.failures_in_a_row % 100 == 0:
            _log.warn(
                "{codec} frame did not decode ({reason}); waiting for a key frame"
                " ({failures} failed in a row)",
                codec=self._codec,
                reason=reason,
                failures=self.failures_in_a_row,
            )
        if self._on_error is not None:
            self._on_error(reason)


def _known(codec: str) -> str:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}")
    return str(codec)


def _unpadded(decoded: int, captured: int | None) -> int:
    # Only the one pixel pad_to_even adds is cropped: a RustDesk host sends
    # exact sizes, and after a resolution change the size the viewer knew may
    # be stale; the picture as decoded is then the truth.
    if captured is not None and decoded == captured + 1 and captured > 0:
        return captured
    return decoded


class KeyFrameRequests:
    """When the viewer asks the host for a key frame (C{Misc.refresh_video}).

    Sans-IO: the caller passes the time and sends the request.  As RustDesk's
    client (its video thread asks on every frame that fails to decode), the
    first request goes out at once; unlike it, this viewer then skips
    everything up to the next key frame instead of failing frame after frame,
    so one request stays outstanding until a picture decodes again.  If none
    has come after L{REPEAT_INTERVAL} seconds (a lost or ignored request) it
    asks again, at most L{MAX_REPEATS} times in a session: the spacing and
    the cap of RustDesk's own repeated refreshes (io_loop.rs fps_control:
    more than 10 s apart, fewer than 20).

    @ivar sent: requests made so far.
    """

    REPEAT_INTERVAL: Final = 10.0
    MAX_REPEATS: Final = 20

    def __init__(self) -> None:
        self.sent = 0
        self.repeats = 0
        self._asked_at: float | None = None

    @property
    def outstanding(self) -> bool:
        return self._asked_at is not None

    def need(self, now: float) -> bool:
        """The decoder waits for a key frame: should a request go out now?"""
        if self._asked_at is None:
            self._asked_at = now
            self.sent += 1
            return True
        if now - self._asked_at >= self.REPEAT_INTERVAL and self.repeats < self.MAX_REPEATS:
            self._asked_at = now
            self.repeats += 1
            self.sent += 1
            return True
        return False

    def picture_decoded(self) -> None:
        """A picture decoded: whatever was asked for has arrived."""
        self._asked_at = None
