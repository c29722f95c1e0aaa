"""What each phase of the session benchmark's desktop changes, frame by frame.

Run from the repository root::

    .venv/bin/python bench/screen_motion.py [--seconds 4] [--phases scrolling] [--frames]

Captures the phases of bench/session.py exactly as C{screen_pipeline.py
--compare} does (bench/session_workload.py on its own Xvfb, 30 frames/s,
changed frames only, with the clicks) and says, per phase, what an encoder
is given: changed frames per second, the rows and the bounding box that
changed from one frame to the next, and how far the content moved
vertically (the shift that explains most changed rows: a row of the new
frame equal to a row some pixels lower in the frame before).  It explains
the scrolling phase's bytes (issue 15: scrolling <= 1 Mb/s): how much of
each frame is moved text that motion compensation could reuse, and how
much is new.  C{--frames} prints every frame.

C{--encode h264,h264-umh,...} then encodes each phase with those candidates
of C{screen_pipeline.py} and decodes it with FFmpeg's motion vectors and
quantizers exported: per candidate, the bytes and quantizer of the frames
after the key frame, and how the area that changed was coded: predicted
from exactly the same pixels of the frame before (in the source), predicted
by a vector whose pixels differ (a residual to code), or intra (no vector).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av
from av.sidedata.encparams import VideoEncParams
from av.sidedata.motionvectors import MotionVectors

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from screen_pipeline import (  # noqa: E402
    PHASES,
    H,
    Sequence,
    W,
    capture_sequences,
    make_encoder,
)

from litedesk.screen import ImageQuality, base_bitrate  # noqa: E402
from tests.support.xvfb import Xvfb  # noqa: E402

STRIDE = W * 4
MAX_SHIFT = 80  # pixels: four lines of the workload's text and more


@dataclass
class FrameChange:
    pts: int
    rows: int  # rows that differ from the frame before
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the change
    shift: int  # rows moved up by this many pixels (0: none found)
    moved_rows: int  # changed rows explained by that shift
    new_rows: int  # changed rows the shift does not explain


def _columns(a: bytes, b: bytes) -> tuple[int, int]:
    """First and last+1 pixel column where two equal-length rows differ."""
    n = len(a)
    lo, hi = 0, n  # a[:lo] == b[:lo]; a[:hi] != b[:hi] unless hi == n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    first = lo
    lo, hi = 0, n - first  # the same from the end
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[n - mid :] == b[n - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return first // 4, (n - lo + 3) // 4


def frame_change(prev: bytes, cur: bytes, pts: int) -> FrameChange:
    """How C{cur} differs from C{prev} (two BGRA frames of W x H)."""
    rows = [
        y
        for y in range(H)
        if prev[y * STRIDE : (y + 1) * STRIDE] != cur[y * STRIDE : (y + 1) * STRIDE]
    ]
    if not rows:
        return FrameChange(pts, 0, (0, 0, 0, 0), 0, 0, 0)
    x0, x1 = W, 0
    for y in rows[:: max(1, len(rows) // 64)]:
        lo, hi = _columns(prev[y * STRIDE : (y + 1) * STRIDE], cur[y * STRIDE : (y + 1) * STRIDE])
        x0, x1 = min(x0, lo), max(x1, hi)
    y0, y1 = rows[0], rows[-1] + 1
    # Rows as bytes, across the columns that changed in the middle changed
    # row (the scrolled window's, also when a click flipped the target in
    # the same frame): a row of cur equal to a row of prev lower down is
    # content that moved up by the difference.
    mid = rows[len(rows) // 2] * STRIDE
    lo, hi = _columns(prev[mid : mid + STRIDE], cur[mid : mid + STRIDE])
    seg = slice(lo * 4, hi * 4)
    old: dict[bytes, list[int]] = {}
    for y in range(y0, min(H, y1 + MAX_SHIFT)):
        old.setdefault(prev[y * STRIDE : (y + 1) * STRIDE][seg], []).append(y)
    votes: Counter[int] = Counter()
    for y in rows:
        for yy in old.get(cur[y * STRIDE : (y + 1) * STRIDE][seg], ()):
            if 0 < yy - y <= MAX_SHIFT:
                votes[yy - y] += 1
    shift = 0
    if votes:
        # Blank rows match anywhere: the shift is the one most rows agree on.
        shift = votes.most_common(1)[0][0]
    moved = 0
    if shift:
        moved = sum(
            1
            for y in rows
            if y + shift < H
            and cur[y * STRIDE : (y + 1) * STRIDE][seg]
            == prev[(y + shift) * STRIDE : (y + shift + 1) * STRIDE][seg]
        )
    return FrameChange(pts, len(rows), (x0, y0, x1, y1), shift, moved, len(rows) - moved)


def describe(phase: str, frames: list[tuple[int, bytes]], seconds: float, every: bool) -> None:
    changes = [frame_change(a, b, pts) for (_, a), (pts, b) in itertools.pairwise(frames)]
    if every:
        for c in changes:
            print(
                f"  {phase} {c.pts:5d} ms: {c.rows:4d} rows changed, box {c.box}, "
                f"shift {c.shift:2d} px, moved {c.moved_rows}, new {c.new_rows}"
            )
    if not changes:
        print(f"{phase}: no change")
        return
    shifts = Counter(c.shift for c in changes)
    areas = [(c.box[2] - c.box[0]) * (c.box[3] - c.box[1]) for c in changes]
    print(
        f"{phase}: {len(frames) / seconds:.1f} changed frames/s; per frame "
        f"{statistics.fmean(c.rows for c in changes):.0f} rows changed, box "
        f"{statistics.median(areas) / 1e3:.0f} kpx median ({statistics.fmean(areas) / (W * H):.1%} "
        f"of the screen), moved rows {statistics.fmean(c.moved_rows for c in changes):.0f}, "
        f"new rows {statistics.fmean(c.new_rows for c in changes):.0f}; shifts (px: frames) "
        + ", ".join(f"{s}: {n}" for s, n in sorted(shifts.items()))
    )


@dataclass
class Coded:
    frames: int = 0
    nbytes: int = 0
    qp_sum: float = 0.0
    area: int = 0  # pixels of the changed boxes (frames after the key frame)
    exact: int = 0  # of those, predicted from exactly the same pixels
    inexact: int = 0  # predicted by a vector whose source differs: residual
    by_shift: int = 0  # predicted with the frame's vertical shift (scrolling)


def _mean_qp(params: VideoEncParams) -> float:
    blocks = params.nb_blocks
    if not blocks:
        return float(params.qp)
    return float(params.qp + sum(params.block_params(i).delta_qp for i in range(blocks)) / blocks)


def _overlap(box: tuple[int, int, int, int], x: int, y: int, w: int, h: int) -> int:
    x0, y0, x1, y1 = box
    return max(0, min(x + w, x1) - max(x, x0)) * max(0, min(y + h, y1) - max(y, y0))


def _same(prev: bytes, cur: bytes, x: int, y: int, w: int, h: int, dx: int, dy: int) -> bool:
    """Whether cur's block at (x, y) equals prev's at (x + dx, y + dy), in the source."""
    if not (x + dx >= 0 and x + dx + w <= W and y + dy >= 0 and y + dy + h <= H):
        return False
    return all(
        cur[(y + r) * STRIDE + 4 * x : (y + r) * STRIDE + 4 * (x + w)]
        == prev[(y + dy + r) * STRIDE + 4 * (x + dx) : (y + dy + r) * STRIDE + 4 * (x + dx + w)]
        for r in range(h)
    )


def _add_vectors(
    out: Coded, vectors: MotionVectors, change: FrameChange, prev: bytes, cur: bytes
) -> None:
    for k in range(len(vectors)):
        mv = vectors[k]
        x, y = mv.dst_x - mv.w // 2, mv.dst_y - mv.h // 2
        a = _overlap(change.box, x, y, mv.w, mv.h)
        if not a:
            continue
        scale = mv.motion_scale or 1
        dx, dy = mv.motion_x / scale, mv.motion_y / scale
        whole = dx == int(dx) and dy == int(dy)
        if whole and _same(prev, cur, x, y, mv.w, mv.h, int(dx), int(dy)):
            out.exact += a
        else:
            out.inexact += a
        if change.shift and dx == 0 and dy == change.shift:
            out.by_shift += a


def code_sequence(name: str, seq: Sequence, changes: list[FrameChange]) -> Coded:
    """Encode C{seq} with candidate C{name}; how the decoder sees the changes coded."""
    enc = make_encoder(name, base_bitrate(ImageQuality.BALANCED, W, H, 30))
    dec = av.CodecContext.create("h264", "r")
    dec.options = {"export_side_data": "mvs+venc_params"}
    out = Coded()
    for i, (pts, data) in enumerate(seq.frames):
        ef = enc.encode(data, W, H, pts)
        for frame in dec.decode(av.Packet(ef.data)):
            if not i:
                continue  # the key frame: no motion
            change = changes[i - 1]
            out.frames += 1
            out.nbytes += len(ef.data)
            out.area += _overlap(change.box, 0, 0, W, H)
            for sd in frame.side_data:
                if isinstance(sd, VideoEncParams):
                    out.qp_sum += _mean_qp(sd)
                elif isinstance(sd, MotionVectors):
                    _add_vectors(out, sd, change, seq.frames[i - 1][1], data)
    return out


def report_coding(names: list[str], seq: Sequence) -> None:
    changes = [frame_change(a, b, pts) for (_, a), (pts, b) in itertools.pairwise(seq.frames)]
    for name in names:
        c = code_sequence(name, seq, changes)
        area = c.area or 1
        print(
            f"  {seq.phase} {name:22} {c.nbytes * 8 / seq.seconds / 1e6:6.3f} Mb/s after the key "
            f"frame, {c.nbytes / max(1, c.frames) / 1e3:5.1f} kB/frame, mean quantizer "
            f"{c.qp_sum / max(1, c.frames):4.1f}; of the changed boxes {c.exact / area:5.1%} "
            f"predicted exactly, {c.inexact / area:5.1%} inexactly (residual), "
            f"{1 - (c.exact + c.inexact) / area:5.1%} intra; {c.by_shift / area:5.1%} by the "
            "vertical shift"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--frames", action="store_true", help="print every frame")
    ap.add_argument("--encode", help="encode with these screen_pipeline.py candidates too")
    args = ap.parse_args(argv)
    with Xvfb(W, H, 24) as xvfb:
        assert xvfb.display is not None
        seqs = capture_sequences(
            xvfb.display, xvfb.env, args.seconds, tuple(args.phases.split(","))
        )
    for seq in seqs:
        describe(seq.phase, seq.frames, seq.seconds, args.frames)
        if args.encode:
            report_coding(args.encode.split(","), seq)
    return 0


if __name__ == "__main__":
    sys.exit(main())
