"""MouseEvent mask helpers and the viewer's coordinate mapping (no X)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from litedesk.input import mouse
from litedesk.input.mouse import (
    MouseButton,
    MouseInput,
    MouseType,
    Rect,
    ViewMapping,
    decode_mask,
    encode_mask,
)


class MaskTests(unittest.SynchronousTestCase):
    def test_known_masks(self) -> None:
        """The masks RustDesk peers send: left down 9, left up 10, right
        down 17, right up 18, middle down 33, wheel 3, move 0, relative 5,
        back/forward down 65/129."""
        self.assertEqual(encode_mask(MouseType.DOWN, MouseButton.LEFT), 9)
        self.assertEqual(encode_mask(MouseType.UP, MouseButton.LEFT), 10)
        self.assertEqual(encode_mask(MouseType.DOWN, MouseButton.RIGHT), 17)
        self.assertEqual(encode_mask(MouseType.UP, MouseButton.RIGHT), 18)
        self.assertEqual(encode_mask(MouseType.DOWN, MouseButton.MIDDLE), 33)
        self.assertEqual(encode_mask(MouseType.DOWN, MouseButton.BACK), 65)
        self.assertEqual(encode_mask(MouseType.DOWN, MouseButton.FORWARD), 129)
        self.assertEqual(encode_mask(MouseType.WHEEL), 3)
        self.assertEqual(encode_mask(MouseType.MOVE), 0)
        self.assertEqual(encode_mask(MouseType.MOVE_RELATIVE), 5)
        self.assertEqual(decode_mask(17), (MouseType.DOWN, MouseButton.RIGHT))
        self.assertEqual(decode_mask(10), (2, 1))

    @given(st.integers(0, 7), st.integers(0, 0x1F))
    def test_encode_decode_round_trip(self, kind: int, buttons: int) -> None:
        """Any type and button set survive encoding and decoding."""
        self.assertEqual(decode_mask(encode_mask(kind, buttons)), (kind, buttons))

    def test_out_of_range_parts_are_rejected(self) -> None:
        """encode_mask refuses types over 7 and unknown button bits."""
        self.assertRaises(ValueError, encode_mask, 8)
        self.assertRaises(ValueError, encode_mask, 1, 0x20)
        self.assertRaises(ValueError, encode_mask, -1)

    def test_event_builders(self) -> None:
        """The helpers build the events the viewer sends: a click is a move,
        then down and up of the button; wheel y > 0 scrolls up."""
        self.assertEqual(
            mouse.click(10, 20, MouseButton.RIGHT),
            [MouseInput(0, 10, 20), MouseInput(17, 10, 20), MouseInput(18, 10, 20)],
        )
        self.assertEqual(mouse.wheel(0, 1), MouseInput(3, 0, 1))
        self.assertEqual(mouse.relative(-5, 7), MouseInput(5, -5, 7))

    def test_x_button_numbers(self) -> None:
        """Tk/X button numbers map to buttons (1 left, 2 middle, 3 right,
        8 back, 9 forward) and 4-7 to wheel notches."""
        self.assertEqual(mouse.x_button(1), MouseButton.LEFT)
        self.assertEqual(mouse.x_button(2), MouseButton.MIDDLE)
        self.assertEqual(mouse.x_button(3), MouseButton.RIGHT)
        self.assertEqual(mouse.x_button(8), MouseButton.BACK)
        self.assertEqual(mouse.x_button(9), MouseButton.FORWARD)
        self.assertIsNone(mouse.x_button(4))
        self.assertEqual(
            [mouse.x_wheel(n) for n in (4, 5, 6, 7)], [(0, 1), (0, -1), (-1, 0), (1, 0)]
        )
        self.assertIsNone(mouse.x_wheel(1))


class ViewMappingTests(unittest.SynchronousTestCase):
    second = Rect(1920, 0, 1280, 1024)  # a monitor right of a 1080p one

    def test_scale_one_is_offset_by_the_monitor_origin(self) -> None:
        """At 100 % a window pixel is the remote pixel, offset by the
        monitor's origin in the virtual desktop."""
        m = ViewMapping(self.second)
        self.assertEqual(m.to_remote(0, 0), (1920, 0))
        self.assertEqual(m.to_remote(100, 50), (2020, 50))
        self.assertEqual(m.to_remote(1279, 1023), (3199, 1023))

    def test_half_and_double_scale(self) -> None:
        """At 50 % each window pixel covers two remote pixels; at 200 % two
        window pixels show one remote pixel."""
        half = ViewMapping(self.second, 0.5)
        self.assertEqual(half.to_remote(0, 0), (1921, 1))
        self.assertEqual(half.to_remote(100, 200), (2121, 401))
        self.assertEqual(half.to_remote(639, 511), (3199, 1023))
        double = ViewMapping(Rect(0, 0, 1920, 1080), 2.0)
        self.assertEqual([double.to_remote(x, 0)[0] for x in range(6)], [0, 0, 1, 1, 2, 2])

    def test_fit_letterboxes_and_centres(self) -> None:
        """Fitting 1920x1080 into 1000x1000 scales by 1000/1920 and centres
        vertically; the image corners map to the monitor corners."""
        remote = Rect(0, 0, 1920, 1080)
        m = ViewMapping.fit(remote, 1000, 1000)
        self.assertAlmostEqual(m.scale, 1000 / 1920)
        self.assertAlmostEqual(m.offset_x, 0)
        self.assertAlmostEqual(m.offset_y, (1000 - 1080 * 1000 / 1920) / 2)
        # The image spans window rows 218.75 to 781.25.
        self.assertEqual(m.to_remote(0, 218), (0, 0))
        self.assertEqual(m.to_remote(999, 781), (1919, 1079))
        self.assertEqual(m.to_remote(500, 500), (960, 540))
        self.assertFalse(m.inside(500, 10))
        self.assertTrue(m.inside(500, 500))

    def test_points_outside_the_image_are_clamped(self) -> None:
        """A drag that leaves the window keeps the remote pointer on the
        shown monitor's edge."""
        m = ViewMapping(self.second, 0.75, offset_x=40, offset_y=30)
        self.assertEqual(m.to_remote(-500, -500), (1920, 0))
        self.assertEqual(m.to_remote(10_000, 10_000), (3199, 1023))

    @given(
        st.sampled_from([0.25, 0.5, 0.6667, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0]),
        st.integers(0, 1279),
        st.integers(0, 1023),
    )
    def test_remote_pixels_survive_a_round_trip(self, scale: float, x: int, y: int) -> None:
        """At any scale, the window point where a remote pixel is drawn maps
        back to that pixel (to within one pixel when the pixel is smaller
        than a window pixel)."""
        m = ViewMapping(self.second, scale, offset_x=12, offset_y=-7)
        lx, ly = m.to_local(1920 + x, y)
        rx, ry = m.to_remote(round(lx), round(ly))
        tolerance = 0 if scale >= 1 else int(1 / scale)
        self.assertLessEqual(abs(rx - (1920 + x)), tolerance)
        self.assertLessEqual(abs(ry - y), tolerance)

    def test_bad_mappings_are_refused(self) -> None:
        """Zero, negative or non-finite scales and empty monitors are errors."""
        for scale in (0.0, -1.0, float("nan"), float("inf")):
            self.assertRaises(ValueError, ViewMapping, self.second, scale)
        self.assertRaises(ValueError, ViewMapping, Rect(0, 0, 0, 10))
        self.assertRaises(ValueError, ViewMapping.fit, self.second, 0, 100)

    def test_rect(self) -> None:
        """Rect.contains and clamp use half-open pixel ranges."""
        r = Rect(-100, 50, 10, 10)
        self.assertTrue(r.contains(-100, 50))
        self.assertFalse(r.contains(-90, 50))
        self.assertEqual(r.clamp(0, 0), (-91, 50))
