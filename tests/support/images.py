"""The test screen the end-to-end tests show on a host display, and how far
a received picture is from it.

One painter for every test that compares what a viewer got with what the
host showed (end-to-end, NAT lab, viewer window): large, distinct stripes
and a disc survive scaling and H.264, and a shifted picture differs from
the original by far more than the codec's error, so a geometry bug shows.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageStat

__all__ = ["SCREEN_SIZE", "mean_error", "paint_test_screen"]

SCREEN_SIZE = (1920, 1080)


def paint_test_screen(path: Path | None = None, marker: str = "") -> Image.Image:
    """The test screen (1920x1080 RGB), saved to C{path} when given.

    C{marker} is drawn as text, for tests that look for it in logs or on
    screen.
    """
    width, height = SCREEN_SIZE
    im = Image.new("RGB", SCREEN_SIZE, (30, 60, 110))
    d = ImageDraw.Draw(im)
    for i in range(0, width, 240):
        d.rectangle([i, 0, i + 120, height], fill=(230, (i // 4) % 256, 40))
    for j in range(0, height, 180):
        d.rectangle([0, j, width, j + 40], fill=(245, 245, 245))
    d.ellipse([1300, 600, 1700, 1000], fill=(20, 200, 90))
    if marker:
        d.text((300, 300), marker, fill=(0, 0, 0))
    if path is not None:
        im.save(path)
    return im


def mean_error(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel (0-255) of two same-size images."""
    stat = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB")))
    return float(sum(stat.mean) / 3)
