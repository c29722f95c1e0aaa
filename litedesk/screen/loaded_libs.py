"""Shared libraries already mapped into this process, for calls no binding offers.

PyAV wheels carry their own copies of libavutil, libswscale and the rest
(renamed, in C{av.libs/}); a PyAV built from source links the system's.  Tk
is linked by C{_tkinter}.  Either way the copy to call is the one already
mapped, so it is found by name in C{/proc/self/maps} rather than by the
loader's search path, which could find a second, different copy.  Import
the module that maps a library (C{av}, C{tkinter}) before looking for it.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["loaded_library", "typed"]


def loaded_library(name: str, *symbols: str) -> ctypes.CDLL | None:
    """The loaded shared library whose file name starts with C{name} and that
    has all C{symbols}, or C{None}.

    @param name: e.g. C{"libtk"}, C{"libX11."}, C{"libavutil"}.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if f"/{name}" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if all(hasattr(lib, s) for s in symbols):
            return lib
    return None


def typed(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
    """C{lib}'s function C{name} with its result and argument types set
    (ctypes would otherwise pass and return C ints, truncating pointers)."""
    f = getattr(lib, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f
