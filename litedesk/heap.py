"""Keeping freed heap memory for reuse, shared by the host agent and the viewer.

A file transfer moves 128 KiB blocks, and each block is several buffers
of about that size: the bytes read, the compressed payload, the serialized
message and its frame, the TLS records.  That is glibc's default
threshold between heap and C{mmap} allocations and near its default trim
threshold, so the allocator kept giving pages back to the kernel and taking
them again: an upload of 1 GiB made 31,000 C{brk} calls and as many page
faults, and the viewer spent more time in the kernel (2.3-2.8 s) than in
Python (2.3-2.6 s).  L{keep_freed_memory} raises both thresholds once at
start: blocks then reuse the same heap pages (the kernel's share fell to
0.4-0.6 s), and what the process keeps stays bounded by the largest burst
it freed, at most L{TRIM_THRESHOLD} above what it uses.

Setting either threshold turns off glibc's own moving mmap threshold (which
would have risen to the size of the buffers freed), so the fixed one must
cover the screen's buffers too: a 1080p grab is 8 MB, an RGB picture 6 MB,
an RGBA one 8 MB.  At 4 MiB every one of them was a mapping of its own,
faulted in page by page on every frame: a window moving over the desktop
cost the host agent 21.6 ms of CPU a frame, against 13.9-17.2 ms with
glibc's default and 14.3-15.9 ms with the thresholds below (session_workload
.py's moving phase through the streamer's C{produce}, two rounds each).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

# glibc's malloc.h parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Allocations below this come from the heap (a block's buffers, a video
# frame's planes, a whole-screen grab); larger ones are still mapped and
# unmapped on their own.  32 MiB is glibc's own ceiling for its moving
# threshold on 64-bit systems.
MMAP_THRESHOLD = 32 * 1024 * 1024
# Free memory at the top of the heap is given back to the kernel only above this.
TRIM_THRESHOLD = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; whether it took effect.

    Does nothing (returns False) where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mapped: int = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trimmed: int = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return mapped == 1 and trimmed == 1
