"""The encoders' settings, and the measurements that chose them.

L{litedesk.screen.encode.VideoEncoder} applies these; they are apart so that
each setting sits next to the figures that justify it.  Everything was
measured with bench/screen_pipeline.py C{--compare} (bench/session.py's
typing, scrolling and moving window, captured once at 1080p, then encoded by
each candidate with the streamer's Balanced settings; tables in
bench/README.rst).

H.264 (libx264 through FFmpeg): C{ultrafast} and C{zerolatency} (no
look-ahead, no B-frames, sliced threads: every frame comes straight back out,
see L{litedesk.screen.encode}), IDR key frames, the image quality's cap as
a constant quantizer (L{X264_SETTINGS}; average bitrate from L{h264_qmin}
to the cap for a caller without one), and the damage path's changed
rectangles as hints (C{mb_info}).  Over C{ultrafast}, three motion
and mode settings for scrolled text (L{X264_SETTINGS}).  Measured and not
taken (issue 15): one thread, three threads, C{superfast}, C{subme=2},
CABAC (0.86 x the bytes for 1.05 x the CPU, 1.32 x with a window moving),
capped CRF; for scrolling, C{me=hex}, a longer range with C{dia} or
C{hex}, two or three reference frames, C{subme=1}, weighted prediction,
the 8x8 transform, C{p8x8} partitions (0.79 x the moving window's bytes
with the others, but 1.04-1.12 x the CPU), deblocking, adaptive
quantization, intra refresh, and no fast P-skip (1.5 x the bytes).

VP9 (libvpx called directly, L{VP9_SETTINGS} by FFmpeg's option names):
  - realtime, no lag, key frames on request only, profile 0;
  - C{tune-content=screen}: libvpx's screen tools find the motion of
    scrolled text (without them scrolling took 4.8 times the bytes);
  - a quantizer floor (L{vp9_qrange}): without one a frame that changed
    little spent its budget sharpening a static desktop (typing took 5.4
    times the bytes);
  - CBR: VBR sent 22 % more bytes on the moving window;
  - speed 9: 20-30 % less CPU than speed 8 for 9 % more bytes;
  - one tile column, two threads with row multi-threading: libvpx's default
    four columns at 1080p sent 13 % more bytes for a worse picture; one
    thread saved 7 % of the CPU but took 1.3 times as long per frame;
  - no loop filter: 7-15 % less CPU, for a picture 0.1 dB worse;
  - a rate-control buffer that starts one second full (libvpx's default:
    four): the first key frame is then about as large as H.264's (on the
    scrolling desktop 221 kB and 228 kB; 329 kB with the default), below
    the streamer's 256 KiB high-water mark, which a larger one crossed and
    so cost the session a fifth of its frame rate for seconds;
  - no frame dropping (a dropped frame would reach the viewer as nothing);
    cyclic-refresh AQ, error resilience and a static threshold measured no
    better;
  - the damage path's changed rectangles as libvpx's active map (blocks
    outside them skipped without analysis; figures at L{VP9_SETTINGS}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "H264_QMIN",
    "H264_QMIN_BELOW_CAP",
    "VP9_QMIN",
    "VP9_QMIN_BELOW_CAP",
    "VP9_SETTINGS",
    "X264_SETTINGS",
    "h264_qmin",
    "vp9_qrange",
    "x264_rate",
]

# libx264's options before the per-context ones (rate, VBV).  C{forced-idr}:
# a requested key frame is an IDR, not an open-GOP I-frame that later frames
# could reach across.
#
# Scrolling (issue 15: <= 1 Mb/s at Balanced).  bench/session.py's text
# window scrolls one 19 px line per changed frame, 21 changed frames a
# second; 93 % of the changed rows are rows of the frame before moved up
# 19 px (bench/screen_motion.py).  ultrafast's motion search (C{dia}, a
# small diamond that stops at the first local minimum, range 16) leaves
# 5.7 % of the changed area predicted inexactly or intra-coded, text coded
# as residual with the quantizer at its cap (7 kB a frame, 1.1-1.2 Mb/s).
# The uneven multi-hexagon search (C{umh}) with a range of 24 leaves 3.2 %
# (3.4 kB a frame, the quantizer 0.3 under the cap): in seven runs of
# bench/screen_pipeline.py C{--compare} the scrolling phase sent 0.48-0.56 x
# the bytes, PSNR 0.2 dB better; a scroll of two or three lines a frame
# (C{--thin}) 0.07-0.15 x (ultrafast sent 6-9 Mb/s there); all three phases
# 0.57-0.71 x the bytes for 0.98-1.06 x the encoder's CPU per frame (mean
# 1.02 x; the same encoder measured twice in one run differs by up to 8 %
# in a phase); the whole streamer on the damage path, three live runs:
# 0.57-0.64 x the bytes, 0.94-1.10 x the process's CPU.
# C{partitions=i4x4} lets a P-frame code the new line of text as intra 4x4
# blocks (typing 0.95 x the bytes).  Range 48: 0.42-0.45 x the scrolling
# bytes but 1.04-1.12 x the CPU (1.08-1.26 x while a window moves); C{umh}
# at range 16: 0.76-0.90 x.  All of it stays Constrained Baseline (no
# CABAC, no 8x8 transform, no B-frames; the SPS says profile 66).
#
# A constant quantizer, the image quality's cap (X264_CONSTANT_QP; applied
# in litedesk.screen.encode): with a floor 2 under the cap, the average
# bitrate control only ever chose between three quantizers, and for that it
# ran libx264's half-resolution analysis of every frame.  In three rounds of
# bench/screen_pipeline.py --compare against it, a constant 32 (Balanced's
# cap) took 0.86-0.89 x the encoder's CPU per frame for 1.04-1.07 x the
# bytes, PSNR +0.5 dB (the moving window 0.94 x the bytes, scrolling as
# video 1.16-1.25 x, though a LiteDesk viewer gets most scrolls as tile
# copies); 33 took 1.01 x the bytes, +0.3 dB.  The key frame comes out
# 2.9 under the cap (libx264's I/P ratio), as it did.  The encoder's
# bitrate then no longer bounds the stream; the cap bounded it before too
# (the average-bitrate control could not go above it), and the streamer's
# frame rate and drop policy answer congestion either way.
#
# C{mb_info}: FFmpeg passes the frame's AVVideoHint side data (the changed
# rectangles, litedesk.screen.video_hint) to libx264, which codes the
# macroblocks outside them as skipped without analysis.  libx264 only does
# so where the reference was coded at a quantizer no coarser than the
# frame's, which a constant quantizer always meets.  The moving window over
# a repainting desktop (about 330,000 changed pixels a frame), encoder CPU
# per frame: average bitrate 7.8-8.1 ms, with hints 6.6-7.1 ms, constant
# quantizer 5.6-6.0 ms, both 5.0-5.8 ms.
X264_SETTINGS: Final[Mapping[str, str]] = {
    "preset": "ultrafast",
    "tune": "zerolatency",
    "forced-idr": "1",
    "motion-est": "umh",
    "me_range": "24",
    "partitions": "i4x4",
    "mb_info": "1",
}

# Without a quantizer cap the floor is H264_QMIN; with one (every image
# quality has one) the floor sits H264_QMIN_BELOW_CAP under it.  A floor far
# below the cap let libx264's average-bitrate control, with budget to spare on
# a still screen, re-code the whole desktop at finer quantizers over the
# seconds after a key frame (frames of 13-19 kB between typed characters of
# 100 B): the key frame lands about 2 under the cap (I-frames get a finer
# quantizer than P-frames), so a floor there leaves a still screen at the
# key frame's quality.  At Balanced (cap 32) floor 24 -> 30 sent 0.24 x the
# bytes while typing and 0.67 x with the window moving, for the same CPU; the
# typing picture stays at its key frame's 31.9 dB PSNR instead of being
# sharpened to 33.0 dB.  Floor 24 without a cap: qmin 24 cut captured typing
# from 0.39 to 0.23 Mb/s against none, mean pixel error 2.05 -> 2.12.
H264_QMIN: Final = 24
H264_QMIN_BELOW_CAP: Final = 2

# libvpx's quantizer scale is 0-63.  At 24 the session benchmark's desktop
# decoded as well as H.264's at its qmin 24 (PSNR 32.0 dB both, over the
# three phases) for 1.2 times the bytes; 28 saved 9 % of the bytes for
# 0.25 dB, 20 cost 5 % more for 0.1 dB, and no floor at all 1.4 times the
# bytes (typing 5.4 times).  RustDesk's own host has 24 too at Balanced (its
# range 24-50).  As with H.264, a floor far under the cap re-coded a still
# screen finer than its key frame: with a cap the floor is now
# VP9_QMIN_BELOW_CAP under it (Balanced: 34-44): typing 0.26 x the bytes,
# scrolling 0.68 x, the moving window 0.86 x, the same CPU; PSNR over the
# three phases 31.9 -> 31.1 dB (H.264's 31.3), typing still above its key
# frame's.  A floor of 40 (4 under the cap) was 1.6 dB worse than H.264.
VP9_QMIN: Final = 24
VP9_QMIN_BELOW_CAP: Final = 10

# What VP9 is given unless the encoder's vp9_options say otherwise (FFmpeg's
# option names; see the module docstring).  FFmpeg's wrapper, the fallback:
# speed 8 is its maximum; the quantizer floor is added per context (it
# depends on the cap).
#
# Not an option: libvpx called directly also gets the damage path's changed
# rectangles as its active map (litedesk.screen.vpx_active_map; FFmpeg's
# wrapper has no way to pass one).  A 640x480 window moving over a
# repainting 1080p desktop (about 328,000 changed pixels a frame), at
# Balanced, the same frames to a second encoder without the map, four runs
# of 100 frames: libvpx's CPU per frame 9.8-10.1 ms against 11.5-11.8 ms
# (0.85-0.88 x), 1.01 x the bytes (the segment ids).  bench/session.py
# --quick, before and after, two pairs, the RustDesk client's host CPU over
# all phases against LiteDesk's H.264 in the same run: 1.93 and 1.91 x ->
# 1.77 and 1.81 x (typing 18.8 and 17.8 % -> 15.4 and 11.8 %, the moving
# window 65.4 and 63.0 % -> 56.4 and 48.8 %).
VP9_SETTINGS: Final[Mapping[str, str]] = {
    "deadline": "realtime",
    "cpu-used": "9",
    "lag-in-frames": "0",
    "end-usage": "cbr",
    "row-mt": "1",
    "tile-columns": "0",
    "tune-content": "screen",
    "disable-loopfilter": "2",
    "buffer-initial-ms": "1000",
}


def x264_rate(
    qmax: int | None, *, maxrate: float, bufsize: float
) -> tuple[dict[str, str], int | None]:
    """libx264's rate-control options, and the quantizer floor to set (or
    C{None}: a constant quantizer, no bitrate).

    With a cap, the cap is the constant quantizer (see L{X264_SETTINGS});
    without one, average bitrate with a VBV of C{maxrate} and C{bufsize}
    (bits per second, bits) and the floor L{h264_qmin}: without a floor
    x264 spends any unused budget on near-lossless frames (typing in a
    static window sent 8-23 kB frames every few keystrokes).
    """
    if qmax is not None:
        return {"qp": str(qmax)}, None
    rate = {"maxrate": str(max(1, int(maxrate))), "bufsize": str(max(1, int(bufsize)))}
    return rate, h264_qmin(None)


def h264_qmin(qmax: int | None) -> int:
    """libx264's quantizer floor for a cap (L{H264_QMIN_BELOW_CAP})."""
    if qmax is None:
        return H264_QMIN
    return max(0, qmax - H264_QMIN_BELOW_CAP)


def vp9_qrange(qmax: int | None) -> tuple[int, int]:
    """libvpx's quantizer range for a cap: the floor never above the cap."""
    if qmax is None:
        return VP9_QMIN, 63
    return max(min(VP9_QMIN, qmax), qmax - VP9_QMIN_BELOW_CAP), qmax
