"""Saving the remote screen: Screenshot (a timestamped name) and Screenshot as….

The picture saved is the last decoded frame at the host's full resolution,
not the scaled one on the canvas.
"""

from __future__ import annotations

import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog

from twisted.logger import Logger

from litedesk.screen.decode import DecodedFrame

_log = Logger(namespace="litedesk.viewer.window")


def screenshot_dir(configured: str | None) -> Path:
    if configured:
        return Path(configured).expanduser()
    pictures = Path.home() / "Pictures"
    return pictures if pictures.is_dir() else Path.home()


def free_name(d: Path, peer: str, stamp: str) -> Path:
    """C{litedesk-PEER-STAMP.png} in C{d}, numbered if it exists."""
    peer = peer.replace("/", "_").replace(":", "_")
    path = d / f"litedesk-{peer}-{stamp}.png"
    n = 1
    while path.exists():
        n += 1
        path = d / f"litedesk-{peer}-{stamp}-{n}.png"
    return path


class Screenshots:
    def __init__(
        self,
        root: tk.Misc,
        directory: Callable[[], Path],
        notify: Callable[[str], None],
        fail: Callable[[str, str], None],
    ) -> None:
        self.root = root
        self.directory = directory
        self.notify = notify  # a passing notice in the status bar
        self.fail = fail  # an error dialog (title, detail)

    def save_auto(self, frame: DecodedFrame | None, peer: str) -> Path | None:
        """Save C{frame} with a timestamped name."""
        if frame is None:
            self.notify("No picture yet")
            return None
        d = self.directory()
        d.mkdir(parents=True, exist_ok=True)
        return self.save(frame, free_name(d, peer, time.strftime("%Y%m%d-%H%M%S")))

    def save_as(self, frame: DecodedFrame | None) -> None:
        if frame is None:
            self.notify("No picture yet")
            return
        # The one blocking dialog: the reactor waits while it is open.
        name = filedialog.asksaveasfilename(
            parent=self.root,
            defaultextension=".png",
            initialdir=str(self.directory()),
            filetypes=[("PNG", "*.png"), ("JPEG", "*.jpg")],
        )
        if name:
            self.save(frame, Path(name))

    def save(self, frame: DecodedFrame, path: Path) -> Path | None:
        try:
            frame.image.save(path)
        except (OSError, ValueError) as e:
            self.fail("cannot save screenshot", f"{path}: {e}")
            return None
        _log.info("Screenshot saved to {path}", path=str(path))
        self.notify(f"Screenshot saved to {path}")
        return path
