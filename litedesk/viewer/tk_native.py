"""Tk's and Xlib's C functions in this process, for the two things Tkinter lacks.

The viewer window calls two C functions Tkinter does not wrap: Tk's
C{Tk_PhotoPutBlock} (a converted picture into a photo with one copy,
L{litedesk.viewer.tk_photo}) and Xlib's C{XConnectionNumber} and
C{XQLength} (whether the X server sent the window anything, so Tk's event
loop is entered only then, L{litedesk.viewer.tk_pump}).  Both libraries
are already loaded by C{_tkinter}; they are found in this process's memory
map, not on the library search path, which could name another copy whose
state is not the window's.  Where they are not found (a Python with Tk
linked in statically), callers keep Tkinter's own ways.
"""

from __future__ import annotations

import ctypes
import os
import stat
from typing import Any

from litedesk.screen.loaded_libs import loaded_library

__all__ = ["loaded_library", "x_connection"]


class XConnection:
    """The X connection of a Tk window: its socket and Xlib's event queue."""

    def __init__(self, xlib: ctypes.CDLL, display: int) -> None:
        self._display = ctypes.c_void_p(display)
        self._queued = xlib.XQLength
        self._queued.restype = ctypes.c_int
        self._queued.argtypes = (ctypes.c_void_p,)
        number = xlib.XConnectionNumber
        number.restype = ctypes.c_int
        number.argtypes = (ctypes.c_void_p,)
        #: The socket to the X server (readable: the server sent something).
        self.fd: int = number(self._display)

    def queued(self) -> int:
        """Events Xlib already read from the socket and holds (Tk not told yet)."""
        n: int = self._queued(self._display)
        return n


def x_connection(widget: Any) -> XConnection | None:
    """The X connection of C{widget}'s Tk application, or C{None}.

    Tk's C{Tk_Display(tkwin)} is a macro reading the first field of the
    window record (C{Tk_FakeWin.display}, tk.h); the main window's is the
    application's connection.
    """
    tk = loaded_library("libtk", "Tk_MainWindow")
    xlib = loaded_library("libX11.", "XConnectionNumber", "XQLength")
    if tk is None or xlib is None:
        return None
    main = tk.Tk_MainWindow
    main.restype = ctypes.c_void_p
    main.argtypes = (ctypes.c_void_p,)
    tkwin = main(ctypes.c_void_p(widget.tk.interpaddr()))
    if not tkwin:
        return None
    display = ctypes.c_void_p.from_address(tkwin).value
    if not display:
        return None
    x = XConnection(xlib, display)
    try:
        socket_fd = stat.S_ISSOCK(os.fstat(x.fd).st_mode)
    except OSError:
        socket_fd = False
    # Not a socket: not the connection this expected (another Tk layout);
    # the caller then looks for events every turn, as without this.
    return x if socket_fd else None
