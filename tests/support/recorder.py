"""Helpers for the input tests: a private Xvfb and an X event recorder.

This module holds no tests.  It is also the recorder program itself:
C{python tests/support/recorder.py} opens a Tk window (an Entry on top of a
Canvas) at the root window's top-left corner, forces the X input focus onto
it, and writes every key, button, motion and wheel event as one JSON line on
stdout.  It reads commands, one per line, on stdin: C{state} (reply with the
entry text and selection), C{clear} (empty the entry) and C{quit}.

The X server itself comes from the shared L{tests.support.xvfb.Xvfb}; the input
tests start one per test so that no keymap change, held key or focus leaks
from one test into the next.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .xvfb import Xvfb

RECORDER_TITLE = "litedesk-input-recorder"
#: The recorder's window geometry: the canvas starts below the entry.
WINDOW_W, WINDOW_H = 1000, 800


def start_xvfb() -> Xvfb:
    """A fresh 1920x1080 Xvfb (shared helper; C{-displayfd}, C{-noreset})."""
    return Xvfb(1920, 1080).start()


class Recorder:
    """Runs the recorder program on a display and reads its events."""

    def __init__(self, env: dict[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self._buf = b""
        self._proc = subprocess.Popen(
            # As a module of the tests package: its relative imports need it.
            [sys.executable, "-m", "tests.support.recorder"],
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.ready = self.wait_for(lambda e: e["ev"] == "ready", timeout=20)

    def _read(self, timeout: float) -> bool:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        if not select.select([fd], [], [], timeout)[0]:
            return False
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError("the recorder exited")
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        self.events.extend(json.loads(line) for line in lines if line)
        return True

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0, start: int = 0
    ) -> dict[str, Any]:
        """The first event from index C{start} on that matches C{pred}."""
        deadline = time.monotonic() + timeout
        checked = start
        while True:
            for i in range(checked, len(self.events)):
                if pred(self.events[i]):
                    return self.events[i]
            checked = max(checked, len(self.events))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event; got {self.events[start:]!r}")
            self._read(left)

    def command(self, cmd: str, timeout: float = 5.0) -> dict[str, Any]:
        """Send a command and wait for its reply.

        The reply comes after every X event the recorder had received, so
        it also works as a barrier: injected events are in C{events} then.
        """
        assert self._proc.stdin is not None
        start = len(self.events)
        self._proc.stdin.write(cmd.encode() + b"\n")
        self._proc.stdin.flush()
        return self.wait_for(lambda e: e["ev"] == cmd, timeout, start)

    def sync(self, settle: float = 0.15) -> dict[str, Any]:
        """Let X deliver what was injected, then ask for the state.

        The settle time stays: events injected by another X client (the
        injector) carry no marker the recorder could wait for, and a test
        that expects I{nothing} (a refused key) has no state to poll.  Tests
        that expect a given text should poll L{command}C{("state")} instead.
        """
        time.sleep(settle)
        return self.command("state")

    def mark(self) -> int:
        """An index to pass as C{start} to L{wait_for} / L{since}."""
        return len(self.events)

    def since(self, start: int, ev: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events[start:] if ev is None or e["ev"] == ev]

    def stop(self) -> None:
        try:
            if self._proc.poll() is None and self._proc.stdin is not None:
                self._proc.stdin.write(b"quit\n")
                self._proc.stdin.flush()
                self._proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for f in (self._proc.stdin, self._proc.stdout):
            if f is not None:
                f.close()


def _xlib_display(name: str | None) -> Any:
    # importlib: python-xlib has no type stubs in this environment.
    return importlib.import_module("Xlib.display").Display(name)


def pressed_keycodes(display: str | None) -> list[int]:
    """Keycodes the X server currently considers held down."""
    d = _xlib_display(display)
    try:
        bits = d.query_keymap()
    finally:
        d.close()
    return [i * 8 + b for i, byte in enumerate(bits) for b in range(8) if byte & (1 << b)]


def pointer_position(display: str | None) -> tuple[int, int]:
    d = _xlib_display(display)
    try:
        p = d.screen().root.query_pointer()
        return int(p.root_x), int(p.root_y)
    finally:
        d.close()


# --- the recorder program ----------------------------------------------------


# The recorder is one Tk program whose event handlers are closures over its
# widgets; the complexity check counts them all as this one function.
def _recorder_main() -> None:  # noqa: C901  # pragma: no cover - runs in a subprocess
    import tkinter as tk

    def emit(**fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    root = tk.Tk()
    root.title(RECORDER_TITLE)
    root.geometry(f"{WINDOW_W}x{WINDOW_H}+0+0")
    entry = tk.Entry(root)
    entry.pack(fill="x")
    canvas = tk.Canvas(root, background="white", highlightthickness=0)
    canvas.pack(fill="both", expand=True)

    def key(e: Any) -> None:
        # send_event: synthetic (XSendEvent) events, which xterm and others
        # ignore; injected input must arrive as real (XTEST) events.
        emit(
            ev=e.type.name,
            keysym=e.keysym,
            char=e.char,
            state=int(e.state),
            synthetic=bool(e.send_event),
        )

    def button(e: Any) -> None:
        emit(ev=e.type.name, num=e.num, x_root=e.x_root, y_root=e.y_root, state=int(e.state))

    def motion(e: Any) -> None:
        # Only drags: plain motion would flood the log.
        if int(e.state) & 0x1F00:
            emit(ev="Motion", x_root=e.x_root, y_root=e.y_root, state=int(e.state))

    def select_all(e: Any) -> str:
        entry.select_range(0, "end")
        entry.icursor("end")
        emit(ev="selectall", selection=entry.selection_get())
        return "break"

    def submit(e: Any) -> None:
        emit(ev="submit", text=entry.get())

    def state() -> None:
        sel = entry.selection_get() if entry.selection_present() else ""
        emit(ev="state", text=entry.get(), selection=sel, focus=str(root.focus_get()))

    def command(*_: Any) -> None:
        line = sys.stdin.readline().strip()
        if line == "state" or not line:
            if not line:
                root.destroy()
                return
            state()
        elif line == "clear":
            entry.delete(0, "end")
            entry.focus_force()
            emit(ev="clear")
        elif line == "quit":
            root.destroy()

    # A tag of our own, first in the focus widget's list: in Tk's "all" tag
    # more specific bindings (<Alt-Key> for menus, Shift-Tab traversal) would
    # win over a plain <KeyPress>, and class bindings that run first (Insert
    # pastes PRIMARY, a nested event loop) would reorder the log.
    root.bind_class("Recorder", "<KeyPress>", key)
    root.bind_class("Recorder", "<KeyRelease>", key)
    for w in (root, entry, canvas):
        w.bindtags(("Recorder", *w.bindtags()))
    for seq in ("<ButtonPress>", "<ButtonRelease>"):
        canvas.bind(seq, button)
        entry.bind(seq, button, add="+")
    canvas.bind("<Motion>", motion)
    entry.bind("<Control-a>", select_all)
    entry.bind("<Return>", submit)
    root.tk.createfilehandler(sys.stdin, tk.READABLE, command)

    def ready() -> None:
        # No window manager: focus_force sets the X input focus, which then
        # stays on this window whatever the pointer does.
        entry.focus_force()
        root.update()
        emit(
            ev="ready",
            canvas_x=canvas.winfo_rootx(),
            canvas_y=canvas.winfo_rooty(),
            entry_height=entry.winfo_height(),
        )

    root.wait_visibility()
    root.after(50, ready)
    root.mainloop()


if __name__ == "__main__":
    _recorder_main()
