"""Converted pictures into a Tk photo image with one copy, Tk's own.

C{ImageTk.PhotoImage.paste} first copies every picture into a Pillow
memory block of the photo's mode (Pillow 10+ images are not single blocks,
and the window's pictures are libswscale's buffers, read in place), then
hands that block to C{Tk_PhotoPutBlock}, which copies it again into the
photo.  At 1200x675 the first copy cost the viewer about 1.8 ms a frame,
some 5 % of a core at 30 fps (bench/viewer_window.py, bench/README.rst).

L{PhotoWriter} calls C{Tk_PhotoPutBlock} itself on the converted frame's
buffer, as Pillow's C{_imagingtk} does on its block: libtk is already loaded
by C{_tkinter}, and the interpreter is the one of the window's C{Tk}.  The
block says "4 bytes a pixel, R G B, no alpha" (the alpha offset equal to the
red one, as Pillow does for RGB), so Tk takes every pixel as opaque and
keeps no transparency region.  Where libtk cannot be found (a Python whose
Tk is linked in statically), C{available} is false and the frame view keeps
Pillow's way.  Tk thread only, as every Tk call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

from twisted.logger import Logger

__all__ = ["PhotoWriter"]

_log = Logger()

#: C{TK_PHOTO_COMPOSITE_SET} (tk.h): the block replaces the photo's pixels.
_COMPOSITE_SET = 1


class _PhotoImageBlock(ctypes.Structure):
    """C{Tk_PhotoImageBlock} (tk.h, unchanged since Tk 8.3)."""

    _fields_ = (
        ("pixelPtr", ctypes.c_void_p),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("pitch", ctypes.c_int),
        ("pixelSize", ctypes.c_int),
        ("offset", ctypes.c_int * 4),
    )


def _loaded_libtk() -> ctypes.CDLL | None:
    """The libtk C{_tkinter} loaded, or C{None}.

    Read from this process's memory map: a library of the same name found
    elsewhere on the search path could be another copy, whose photo images
    are not the window's.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libtk" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "Tk_PhotoPutBlock") and hasattr(lib, "Tk_FindPhoto"):
            return lib
    return None


class PhotoWriter:
    """Puts RGBA frames (PyAV C{VideoFrame}s, one plane) into Tk photo images.

    @ivar available: C{Tk_PhotoPutBlock} was found; when false, L{put}
        must not be called (use C{ImageTk.PhotoImage.paste}).
    """

    def __init__(self, widget: Any) -> None:
        """
        @param widget: any widget of the window (its Tcl interpreter is used).
        """
        import _tkinter  # noqa: F401 (libtk is loaded with it)

        self._interp = ctypes.c_void_p(widget.tk.interpaddr())
        lib = _loaded_libtk()
        self.available = lib is not None
        if lib is None:
            _log.info("libtk not found in this process: pictures go through Pillow")
            return
        find = lib.Tk_FindPhoto
        find.restype = ctypes.c_void_p
        find.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
        put = lib.Tk_PhotoPutBlock
        put.restype = ctypes.c_int
        put.argtypes = (
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(_PhotoImageBlock),
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
        )
        self._find = find
        self._put = put

    def put(self, photo: object, frame: Any) -> bool:
        """Copy C{frame}'s pixels into the photo named C{str(photo)} at 0,0.

        @param frame: an RGBA (or RGB0) C{av.VideoFrame} no larger than the
            photo is meant to be shown; Tk grows the photo to its size.
        @return: C{False} if Tk has no such photo or refused the block
            (out of memory); nothing was changed then.
        """
        handle = self._find(self._interp, str(photo).encode())
        if not handle:
            return False
        plane = frame.planes[0]
        width, height, pitch = frame.width, frame.height, plane.line_size
        if pitch < 4 * width or plane.buffer_size < pitch * height:
            raise ValueError(f"not a packed 4-byte picture: {frame.format.name}")
        block = _PhotoImageBlock(
            plane.buffer_ptr, width, height, pitch, 4, (ctypes.c_int * 4)(0, 1, 2, 0)
        )
        ok: int = self._put(
            self._interp, handle, ctypes.byref(block), 0, 0, width, height, _COMPOSITE_SET
        )
        return ok == 0
