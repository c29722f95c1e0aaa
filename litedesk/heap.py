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
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

# glibc's malloc.h parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Allocations below this come from the heap (a block's buffers, a video
# frame's planes); larger ones are still mapped and unmapped on their own.
MMAP_THRESHOLD = 4 * 1024 * 1024
# Free memory at the top of the heap is given back to the kernel only above this.
TRIM_THRESHOLD = 32 * 1024 * 1024


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
