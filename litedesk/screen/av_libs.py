"""FFmpeg's libraries as PyAV loaded them, for the calls PyAV does not offer.

PyAV wheels carry their own copies of libavutil, libswscale and the rest
(renamed, in C{av.libs/}); a PyAV built from source links the system's.
Either way the copy to call is the one already mapped into this process, so
it is found by name in C{/proc/self/maps} rather than by the loader's search
path, which could find a second, different copy.
"""

from __future__ import annotations

import ctypes
import re

import av

__all__ = ["loaded_library"]


def loaded_library(stem: str, symbol: str) -> ctypes.CDLL | None:
    """The mapped C{lib<stem>} that has C{symbol}, or C{None}.

    @param stem: e.g. C{"avutil"}, C{"swscale"}.
    """
    av.VideoFrame  # noqa: B018 - PyAV maps its libraries when it is imported
    pattern = rf"(/\S*/lib{re.escape(stem)}[^/\s]*\.so[^/\s]*)$"
    try:
        with open("/proc/self/maps") as maps:
            paths = set(re.findall(pattern, maps.read(), re.M))
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, symbol):
            return lib
    return None
