"""Synthetic desktop images for tests, benchmarks and viewer self-checks.

A flat "wallpaper" gradient, windows with title bars and lines of small black
text on white, a coloured bar chart and a noisy "photo": the mix of sharp
text edges, flat areas and texture that a desktop stream has to carry.
Everything is drawn with Pillow and is the same for the same arguments.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

__all__ = ["desktop_image", "image_to_bgra", "moving_window_frames"]

_TEXT = (
    "The quick brown fox jumps over the lazy dog 0123456789",
    "def encode(self, frame): return self._ctx.encode(frame)",
    "LiteDesk remote desktop - host 123 456 789 - connected",
)


def _window(width: int, height: int, title: str, seed: int) -> Image.Image:
    win = Image.new("RGB", (width, height), (250, 250, 250))
    d = ImageDraw.Draw(win)
    d.rectangle([0, 0, width - 1, 23], fill=(52, 101, 164))
    d.text((8, 6), title, fill=(255, 255, 255))
    d.rectangle([0, 0, width - 1, height - 1], outline=(30, 30, 30))
    rnd = random.Random(seed)
    y = 32
    while y < height - 14:
        d.text((10, y), rnd.choice(_TEXT), fill=(0, 0, 0))
        y += 15
    return win


def desktop_image(width: int = 1920, height: int = 1080, seed: int = 1) -> Image.Image:
    """A desktop-like RGB test image of the given size."""
    img = Image.new("RGB", (width, height))
    d = ImageDraw.Draw(img)
    for y in range(0, height, 4):  # vertical gradient wallpaper, 4-px bands
        c = 60 + (120 * y) // max(1, height)
        d.rectangle([0, y, width, y + 3], fill=(20, c // 2 + 20, c))
    rnd = random.Random(seed)
    # A "photo": noise is the worst case for any codec, keep it small.
    pw, ph = max(1, width // 8), max(1, height // 6)
    photo = Image.frombytes("RGB", (pw, ph), rnd.randbytes(pw * ph * 3))
    photo = photo.resize((pw * 2, ph * 2), Image.Resampling.BILINEAR)
    img.paste(photo, (width - pw * 2 - width // 40, height // 20))
    # A bar chart with saturated colours (hard for 4:2:0 chroma).
    colours = [(230, 40, 40), (40, 180, 60), (40, 80, 230), (240, 200, 30)]
    bx, by = width // 20, height - height // 4
    for i in range(8):
        bar = rnd.randrange(height // 20, height // 6)
        d.rectangle([bx + i * 28, by - bar, bx + i * 28 + 20, by], fill=colours[i % len(colours)])
    for i, (fx, fy, fw, fh) in enumerate(
        [(0.05, 0.06, 0.45, 0.5), (0.3, 0.3, 0.4, 0.45), (0.55, 0.6, 0.4, 0.35)]
    ):
        win = _window(max(40, int(fw * width)), max(40, int(fh * height)), f"Window {i}", seed + i)
        img.paste(win, (int(fx * width), int(fy * height)))
    return img


def image_to_bgra(img: Image.Image) -> bytes:
    """An RGB image as BGRA bytes (alpha 255), the layout mss produces."""
    return img.convert("RGB").tobytes("raw", "BGRX")


def moving_window_frames(
    n: int, width: int = 1920, height: int = 1080, step: int = 12, seed: int = 1
) -> list[bytes]:
    """C{n} BGRA frames of a text window sliding across a static desktop."""
    base = desktop_image(width, height, seed)
    win = _window(width // 3, height // 2, "Moving", seed + 7)
    span_x = max(1, width - win.width)
    span_y = max(1, height - win.height)
    frames = []
    for i in range(n):
        img = base.copy()
        img.paste(win, ((i * step) % span_x, (i * step // 3) % span_y))
        frames.append(image_to_bgra(img))
    return frames
