"""The one scratch buffer and kernel pipe that every paired relay leg reads through.

Kept apart from the leg protocol because it is process-wide state (one of
each per process, whatever the number of pairs) and plain OS calls with no
Twisted in them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

splice = getattr(os, "splice", None)
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_PIPE_SIZE = 1 << 20


class SharedIO:
    """A scratch buffer and an empty pipe shared by every leg of the process.

    The reactor runs one C{doRead} at a time and each leaves both empty (what
    cannot be sent at once is copied into the transport's own buffer), so one
    of each serves any number of pairs at no per-pair cost.
    """

    def __init__(self, size: int, pipe_size: int = 0) -> None:
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pipe_size = 65536
        #: the pipe size asked for (the kernel may have granted less)
        self.asked = max(size, pipe_size, _PIPE_SIZE)
        # Beyond /proc/sys/fs/pipe-max-size (1 MiB by default) only a
        # privileged process gets its size: fall back to what anyone may have.
        for want in (self.asked, _PIPE_SIZE):
            with contextlib.suppress(OSError, AttributeError):
                self.pipe_size = fcntl.fcntl(self.pipe_w, fcntl.F_SETPIPE_SZ, want)
                break

    def drain(self, n: int) -> bytes:
        """Read exactly C{n} bytes that are known to be in the pipe."""
        parts = []
        while n > 0:
            chunk = os.read(self.pipe_r, n)
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)


_shared: SharedIO | None = None


def shared_io(size: int, pipe_size: int = 0) -> SharedIO:
    """The process's L{SharedIO}, grown to C{size} bytes and a pipe of C{pipe_size}."""
    global _shared
    if _shared is None or len(_shared.buf) < size or _shared.asked < pipe_size:
        if _shared is not None:
            os.close(_shared.pipe_r)
            os.close(_shared.pipe_w)
        _shared = SharedIO(size, pipe_size)
    return _shared
