"""The scripted desktop workload of bench/session.py, run as its own process.

Run on the X display under test (C{DISPLAY} set)::

    python bench/session_workload.py [--max-seconds 600] [--flip-log FILE]

It paints a desktop (a full-screen window showing
L{litedesk.screen.testpattern.desktop_image}) and a click target, prints
C{ready}, then reads one command per line on stdin and answers C{ok CMD}
once the screen shows the new phase:

  - C{typing}: an editor window (900x600 at 100,100) gets 15 characters per
    second of prose inserted at its end, like a person typing; the text
    cursor blinks;
  - C{scrolling}: a window of the same size full of text scrolls by one line
    every 50 ms (20 lines/s), like reading or a log being followed;
  - C{moving}: a 640x480 window full of text slides 375 px/s right and
    125 px/s down, bouncing inside x < 1560 (it never covers the target);
  - C{idle}: only the desktop and the target;
  - C{quit}: exit.

Every animation is a function of the time since its phase started, not of
the number of timer ticks, so a loaded machine shows the same script at the
same speed (with fewer intermediate steps), whichever remote-desktop system
is being measured.

The click target is a 160x160 window at (1720, 40).  Each left button press
on it flips its colour between pure red and pure blue; the benchmark clicks
at its top-left quarter and samples the colour at its centre (away from the
mouse pointer).  With C{--flip-log}, the wall-clock time (C{time.time()})
of every flip is appended to that file, so the benchmark can split its
latency into input (click to flip) and display (flip to pixels at the
viewer).  The process also exits after C{--max-seconds}, or when its
stdin closes, so it can never outlive the benchmark for long.
"""

from __future__ import annotations

import argparse
import io
import queue
import sys
import threading
import time
import tkinter as tk
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from litedesk.screen.testpattern import desktop_image  # noqa: E402

W, H = 1920, 1080
TARGET = (1720, 40, 160, 160)  # x, y, width, height
COLOURS = ("#ff0000", "#0000ff")
EDITOR = (100, 100, 900, 600)
MOVER_SIZE = (640, 480)
MOVER_SPEED = (375.0, 125.0)  # px/s
MOVER_MAX_X = 1560
TYPE_RATE = 15.0  # characters per second
SCROLL_PERIOD_MS = 50
TICK_MS = 16

PROSE = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen "
    "liquor jugs. How vexingly quick daft zebras jump! Sphinx of black quartz, "
    "judge my vow. 0123456789 "
)


class Workload:
    def __init__(self, root: tk.Tk, flip_log: Path | None = None) -> None:
        self.root = root
        self.flip_log = open(flip_log, "a", buffering=1) if flip_log else None  # noqa: SIM115
        self.commands: queue.Queue[str] = queue.Queue()
        self.phase = "idle"
        self.phase_started = time.monotonic()
        self.window: tk.Toplevel | None = None
        self.text: tk.Text | None = None
        self.typed = 0
        self.scrolled = 0
        self._desktop()
        self.target = self._toplevel(*TARGET)
        self.colour = 0
        self.target.configure(bg=COLOURS[self.colour])
        self.target.bind("<ButtonPress-1>", self._flip)

    def _toplevel(self, x: int, y: int, w: int, h: int) -> tk.Toplevel:
        top = tk.Toplevel(self.root)
        top.overrideredirect(True)
        top.geometry(f"{w}x{h}+{x}+{y}")
        return top

    def _desktop(self) -> None:
        self.root.overrideredirect(True)
        self.root.geometry(f"{W}x{H}+0+0")
        buf = io.BytesIO()
        desktop_image(W, H).save(buf, "PNG")
        self.photo = tk.PhotoImage(data=buf.getvalue(), format="png")
        tk.Label(self.root, image=self.photo, borderwidth=0).pack()

    def _flip(self, _event: object) -> None:
        self.colour ^= 1
        self.target.configure(bg=COLOURS[self.colour])
        if self.flip_log is not None:
            self.flip_log.write(f"{time.time():.6f}\n")

    def _text_window(self, x: int, y: int, w: int, h: int) -> tuple[tk.Toplevel, tk.Text]:
        top = self._toplevel(x, y, w, h)
        text = tk.Text(top, bg="white", fg="black", wrap="word", font=("Courier", 11))
        text.pack(fill="both", expand=True)
        return top, text

    def start(self, phase: str) -> None:
        if self.window is not None:
            self.window.destroy()
            self.window = self.text = None
        self.phase = phase
        self.typed = self.scrolled = 0
        if phase == "typing":
            self.window, self.text = self._text_window(*EDITOR)
            self.text.focus_set()
        elif phase == "scrolling":
            self.window, self.text = self._text_window(*EDITOR)
            for i in range(3000):
                self.text.insert("end", f"{i:5d}  {PROSE[(i * 7) % 60 :][:90]}\n")
            self.text.configure(wrap="none")
        elif phase == "moving":
            self.window, self.text = self._text_window(50, 50, *MOVER_SIZE)
            for i in range(40):
                self.text.insert(
                    "end", f"{i:3d} The quick brown fox jumps over the lazy dog 0123\n"
                )
        self.target.lift()
        self.root.update_idletasks()
        self.phase_started = time.monotonic()

    def tick(self) -> None:
        self._commands()
        t = time.monotonic() - self.phase_started
        if self.phase == "typing" and self.text is not None:
            due = int(t * TYPE_RATE)
            while self.typed < due:
                self.text.insert("end", PROSE[self.typed % len(PROSE)])
                self.typed += 1
                if self.typed % 70 == 0:
                    self.text.insert("end", "\n")
            self.text.see("end")
        elif self.phase == "scrolling" and self.text is not None:
            due = int(t * 1000 / SCROLL_PERIOD_MS)
            if due > self.scrolled:
                self.text.yview_scroll(due - self.scrolled, "units")
                self.scrolled = due
        elif self.phase == "moving" and self.window is not None:
            x = _bounce(50 + MOVER_SPEED[0] * t, MOVER_MAX_X - MOVER_SIZE[0])
            y = _bounce(50 + MOVER_SPEED[1] * t, H - MOVER_SIZE[1])
            self.window.geometry(f"+{x}+{y}")
        self.root.after(TICK_MS, self.tick)

    def _commands(self) -> None:
        while True:
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                return
            if cmd in ("quit", ""):
                self.root.destroy()
                raise SystemExit(0)
            if cmd in ("typing", "scrolling", "moving", "idle"):
                self.start(cmd)
                self.root.update()
                print(f"ok {cmd}", flush=True)
            else:
                print(f"error unknown command {cmd!r}", flush=True)


def _bounce(pos: float, limit: int) -> int:
    """Position bouncing between 0 and C{limit} (a triangle wave)."""
    period = 2 * limit
    p = pos % period
    return int(p if p <= limit else period - p)


def _read_stdin(commands: queue.Queue[str]) -> None:
    for line in sys.stdin:
        commands.put(line.strip())
    commands.put("quit")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--flip-log", type=Path, help="append the time of every flip here")
    args = p.parse_args()
    root = tk.Tk()
    work = Workload(root, args.flip_log)
    threading.Thread(target=_read_stdin, args=(work.commands,), daemon=True).start()
    root.after(int(args.max_seconds * 1000), root.destroy)
    root.update()
    work.target.lift()  # the desktop window was mapped last: put the target above it
    root.update()
    print("ready", flush=True)
    root.after(TICK_MS, work.tick)
    root.mainloop()


if __name__ == "__main__":
    main()
