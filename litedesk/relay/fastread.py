"""The paired relay leg's reads in the non-Twisted read modes (RelaySettings.read_mode).

A paired leg's C{doRead} ends here (through L{RelayServerTransport} or a
patched C{doRead}): C{recv_into} one process-wide buffer, or C{splice}
through one process-wide pipe, and write straight on to the partner.  Apart
from the leg because it is the relay's hot path and speaks to sockets, not
to the pairing logic.
"""

from __future__ import annotations

import fcntl
import socket
import sys
import termios
from typing import TYPE_CHECKING

from twisted.internet import main, tcp
from twisted.internet.error import ConnectionDone, ConnectionLost

from litedesk.relay.sharedio import SPLICE_FLAGS, shared_io, splice

if TYPE_CHECKING:
    from litedesk.relay.leg import RelayProtocol

ReadResult = ConnectionLost | ConnectionDone | None

# read_mode "auto": a read of at least _BULK_READ bytes switches a leg to
# splice, one under _SMALL_READ switches it back.
_BULK_READ = 65536
_SMALL_READ = 8192


def read_into(leg: RelayProtocol) -> ReadResult:
    """One C{recv_into} the shared buffer, written straight on to the partner."""
    partner = leg._partner
    t = leg._tcp
    sock = leg._sock
    assert t is not None and sock is not None
    if partner is None:
        return tcp.Connection.doRead(t)
    io = shared_io(leg._relay.settings.read_size)
    try:
        n = sock.recv_into(io.buf, min(t.bufferSize, len(io.buf)))
    except BlockingIOError:
        return None
    except OSError:
        return main.CONNECTION_LOST
    if not n:
        return main.CONNECTION_DONE
    if n >= _BULK_READ:
        leg._bulk = True
    partner._write_view(io.view[:n])
    leg._count(n)
    return None


def read_splice(leg: RelayProtocol) -> ReadResult:
    """Move bytes socket to pipe to the partner's socket in the kernel."""
    partner = leg._partner
    t = leg._tcp
    if partner is None or not partner._out_idle() or splice is None:
        return read_into(leg)
    assert t is not None
    settings = leg._relay.settings
    io = shared_io(settings.read_size, settings.splice_max)
    flags = SPLICE_FLAGS
    want = min(t.bufferSize, io.pipe_size)
    splice_max = settings.splice_max
    if splice_max > want and leg._limiter is None:
        # Move more per call only as far as the partner's socket can take it
        # now, so what is left over (copied to user space) stays small.  A
        # limited pair keeps the read size its rate allows (Relay._fit_reads):
        # a large move would run its bucket far into debt, a burst well above
        # its rate.
        room = send_room(partner._sock)
        if room > want:
            want = min(room, splice_max, io.pipe_size)
    sock_out = partner._sock
    assert leg._sock is not None and sock_out is not None
    fd_in = leg._sock.fileno()
    fd_out = sock_out.fileno()
    # Keep moving while the socket fills whole reads and the partner takes
    # everything: saves a trip through the reactor per read.
    for _ in range(settings.reads_per_turn):
        try:
            n = splice(fd_in, io.pipe_w, want, flags=flags)
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        if not n:
            return main.CONNECTION_DONE
        if n < _SMALL_READ:
            leg._bulk = False
        try:
            m = splice(io.pipe_r, fd_out, n, flags=flags)
        except OSError:
            m = 0
        if m < n:
            rest = io.drain(n - m)
            pt = partner._tcp
            assert pt is not None
            pt.write(rest)  # type: ignore[no-untyped-call]
        leg._count(n)
        if m < n or n < want or leg._paused or leg._partner is None:
            break
    return None


def send_room(sock: socket.socket | None) -> int:
    """Free space in C{sock}'s kernel send buffer, bytes (0 if unknown)."""
    if sock is None:
        return 0
    try:
        sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(sndbuf - int.from_bytes(raw, sys.byteorder, signed=True))
