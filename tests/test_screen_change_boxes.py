"""changed_boxes: the changed pixels as boxes side by side, exact and complete."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.trial import unittest

from litedesk.screen.change import Rect, bounding_box, diff_box
from litedesk.screen.change_boxes import changed_boxes
from litedesk.screen.damage_frames import _slid
from litedesk.screen.yuv_canvas import YuvCanvas
from tests.support.polling import until
from tests.support.skips import requires
from tests.support.xvfb import shared_xvfb
from tests.test_screen_damage import damage_rig

W, H = 96, 48


def _frame() -> bytearray:
    return bytearray([0x40, 0x40, 0x40, 255] * (W * H))


def _paint(buf: bytearray, rect: Rect, value: int = 0xEE) -> None:
    for y in range(rect.y, rect.bottom):
        for x in range(rect.x, rect.right):
            i = (y * W + x) * 4
            buf[i : i + 3] = bytes([value, value ^ 0x55, value ^ 0xAA])


def _changed(a: bytes, b: bytes | bytearray) -> set[tuple[int, int]]:
    return {(i // 4 % W, i // 4 // W) for i in range(len(a)) if a[i] != b[i]}


def _inside(boxes: list[Rect], x: int, y: int) -> bool:
    return any(r.x <= x < r.right and r.y <= y < r.bottom for r in boxes)


class ChangedBoxesTests(unittest.TestCase):
    def test_nothing_changed_is_no_box(self) -> None:
        a = bytes(_frame())
        self.assertEqual(changed_boxes(a, bytearray(a), W, H), [])

    def test_a_window_and_a_far_click_are_two_boxes(self) -> None:
        """A window moving on the left and a button flipped on the right:
        two boxes, not one across the screen between them (which the host
        would convert and encode, on the very frame a click waits for)."""
        a = bytes(_frame())
        b = _frame()
        window, button = Rect(2, 10, 20, 30), Rect(80, 2, 10, 8)
        _paint(b, window)
        _paint(b, button, 0x11)
        self.assertEqual(changed_boxes(a, b, W, H, gap=16), [window, button])
        self.assertEqual(diff_box(a, b, W, H), window.union(button))

    def test_near_changes_stay_one_box(self) -> None:
        """Changes closer than the gap are one box: a split must be worth
        a comparison per row."""
        a = bytes(_frame())
        b = _frame()
        _paint(b, Rect(10, 10, 10, 10))
        _paint(b, Rect(30, 25, 10, 10))
        self.assertEqual(changed_boxes(a, b, W, H, gap=16), [Rect(10, 10, 30, 25)])

    def test_a_change_below_in_the_same_columns_stays_in_its_box(self) -> None:
        """Boxes are split by columns only: a change under a box joins it,
        and a box ending above the others ends where its changes do."""
        a = bytes(_frame())
        b = _frame()
        _paint(b, Rect(4, 2, 8, 4))  # a short box on the left
        _paint(b, Rect(60, 0, 20, 40))  # a tall one on the right
        _paint(b, Rect(6, 30, 2, 2))  # under the short one
        self.assertEqual(
            changed_boxes(a, b, W, H, gap=16), [Rect(4, 2, 8, 30), Rect(60, 0, 20, 40)]
        )
        b2 = _frame()
        _paint(b2, Rect(4, 2, 8, 4))
        _paint(b2, Rect(60, 0, 20, 40))
        self.assertEqual(
            changed_boxes(a, b2, W, H, gap=16), [Rect(4, 2, 8, 4), Rect(60, 0, 20, 40)]
        )

    def test_more_changes_than_boxes_join_the_nearest(self) -> None:
        a = bytes(_frame())
        b = _frame()
        for i, x in enumerate((0, 40, 80)):
            _paint(b, Rect(x, 20 + 2 * i, 4, 4))
        self.assertEqual(
            changed_boxes(a, b, W, H, gap=8, most=2), [Rect(0, 20, 4, 4), Rect(40, 22, 44, 6)]
        )
        self.assertEqual(
            changed_boxes(a, b, W, H, gap=8, most=3),
            [Rect(0, 20, 4, 4), Rect(40, 22, 4, 4), Rect(80, 24, 4, 4)],
        )

    def test_changes_that_begin_on_one_row_are_one_box(self) -> None:
        """The known limit: where no box lies between them yet, one
        comparison sees both, and they start as one box."""
        a = bytes(_frame())
        b = _frame()
        _paint(b, Rect(0, 20, 4, 4))
        _paint(b, Rect(80, 20, 4, 4))
        self.assertEqual(changed_boxes(a, b, W, H, gap=8), [Rect(0, 20, 84, 4)])

    def test_a_frame_of_another_size_is_all_changed(self) -> None:
        a = bytes(_frame())
        self.assertEqual(changed_boxes(a[:-4], a, W, H), [Rect(0, 0, W, H)])
        self.assertRaises(ValueError, changed_boxes, a, a[:-4], W, H)

    @given(
        st.lists(
            st.tuples(st.integers(0, W - 1), st.integers(0, H - 1), st.integers(0, 3)),
            min_size=1,
            max_size=16,
            unique=True,
        ),
        st.integers(0, 40),
        st.integers(1, 4),
    )
    @settings(max_examples=400, deadline=None)
    def test_boxes_are_exact_and_hold_every_change(
        self, pixels: list[tuple[int, int, int]], gap: int, most: int
    ) -> None:
        """Single bytes changed anywhere (edges too, any channel), any gap
        and number of boxes: every changed pixel is in a box (a pixel
        outside would never reach the viewer), each box is the bounding box
        of the changes in it, boxes are apart by more than the gap in
        columns, at most C{most} of them, and together they span diff_box's
        box."""
        a = bytes(_frame())
        b = bytearray(a)
        for x, y, channel in pixels:
            b[(y * W + x) * 4 + channel] ^= 0xFF
        boxes = changed_boxes(a, b, W, H, gap=gap, most=most)
        changed = _changed(a, b)
        self.assertTrue(all(_inside(boxes, x, y) for x, y in changed))
        self.assertLessEqual(len(boxes), most)
        for r in boxes:
            mine = [(x, y) for x, y in changed if r.x <= x < r.right and r.y <= y < r.bottom]
            xs, ys = [x for x, _ in mine], [y for _, y in mine]
            self.assertEqual(
                r, Rect(min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1)
            )
        for left, right in itertools.pairwise(boxes):
            self.assertGreater(right.x - (left.right - 1), gap)
        self.assertEqual(bounding_box(boxes), diff_box(a, b, W, H))


@requires("Xvfb", "display")
class DamagePathBoxesTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_whole_grab_sends_the_two_boxes_and_the_picture_is_whole(self) -> Any:
        """A repaint over most of the screen (a whole grab) that changes two
        places far apart: the damage path converts and reports two boxes,
        and the picture it keeps equals a conversion of the whole screen."""
        xvfb = shared_xvfb()
        assert xvfb.display is not None
        path, cap, win = damage_rig(self, xvfb.display, (100, 100, 1600, 900))
        win.fill(0, 0, 1600, 900, 0xFFFFFF)
        yield until(path.pending)
        path.picture(cap, keyframe=True)
        events = path.watcher.events
        win.fill(0, 0, 1600, 900, 0xFFFFFF)
        win.fill(100, 300, 200, 160, 0x2080E0)  # "the window", low on the left
        win.fill(1400, 20, 60, 40, 0xE02020)  # "the button", high on the right
        yield until(lambda: path.watcher.events >= events + 3)
        frame, _, region = path.picture(cap, keyframe=False)
        self.assertEqual(region, (Rect(200, 400, 200, 160), Rect(1500, 120, 60, 40)))
        whole = YuvCanvas()
        grab, mon = cap.grab_whole()
        whole.fill(bytes(grab), mon.width, mon.height)
        assert frame is not None and whole.frame is not None
        for mine, theirs in zip(frame.planes, whole.frame.planes, strict=True):
            self.assertEqual(bytes(mine), bytes(theirs))


class SlidTests(unittest.TestCase):
    def test_a_box_moved_sideways_is_a_window_not_a_scroll(self) -> None:
        """The scroll search is skipped for a box that moved sideways at
        about its size (a dragged window), kept for one that stays in its
        columns (a scrolled area) or changes size (something else)."""
        before = Rect(100, 200, 652, 484)
        self.assertFalse(_slid(None, before))
        self.assertTrue(_slid(before, Rect(113, 204, 653, 485)))
        self.assertFalse(_slid(before, Rect(100, 210, 652, 484)))  # scrolled, same columns
        self.assertFalse(_slid(before, Rect(113, 204, 900, 484)))  # another change
        self.assertFalse(_slid(before, Rect(113, 204, 652, 100)))
