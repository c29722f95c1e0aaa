"""The relay's tunables: one frozen L{RelaySettings}.

Separate from the protocol and the controller so that the service, the
benchmarks and the tests can build settings without importing either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from litedesk.relay.limiter import BandwidthSettings
from litedesk.relay.table import ConnectionLimits, Deadlines

# How a paired leg reads (RelaySettings.read_mode), as the leg stores it.
MODE_TWISTED = 0
MODE_INTO = 1
MODE_SPLICE = 2
MODE_AUTO = 3
MODES = {"twisted": MODE_TWISTED, "recv_into": MODE_INTO, "splice": MODE_SPLICE, "auto": MODE_AUTO}


@dataclass(frozen=True)
class RelaySettings:
    """Everything that tunes the relay (see L{litedesk.relay.service} for the options).

    @ivar read_size: bytes per C{recv} and the write-buffer size at which a
        leg pauses its partner; the relay holds at most about twice this per
        direction.
    @ivar early_buffer: bytes kept from a waiting connection before it is
        paused until its partner arrives (RustDesk and LiteDesk peers send at
        most a TLS ClientHello or a few messages before that).
    @ivar early_budget: early bytes all unpaired legs together may hold beyond
        their reserves; a leg that would exceed it is paused until it frees
        (0: no limit).
    @ivar early_reserve: early bytes every unpaired leg may hold whatever the
        budget: its first frame and a ClientHello get through a flood.
    @ivar unpaired_read: bytes per C{recv} until a leg is paired (also the
        size of each grant from the budget); small so that a waiting leg never
        allocates a C{read_size} buffer.
    @ivar max_first_frame: largest first-frame payload accepted.
    @ivar fast_write: send straight to the socket when its buffer is empty
        instead of waiting a reactor turn.
    @ivar read_mode: how a paired TCP leg reads: C{"twisted"} (the transport's
        C{recv} and C{dataReceived}), C{"recv_into"} (one process-wide buffer,
        no allocation per read) or C{"splice"} (kernel-side copy through one
        process-wide pipe) or C{"auto"} (C{recv_into} while reads are small,
        C{splice} once a read fills C{bulk_read} bytes, back when one is
        small: interactive traffic keeps the cheaper small-message path, bulk
        transfers skip the user-space copy).  All but C{"twisted"} need
        C{fast_write}.
    @ivar splice_max: in splice mode, move up to this many bytes per call
        when the partner's socket has room for them (0: C{read_size}); pairs
        under a bandwidth limit keep their fitted read size.  1 MiB by
        default: bench/relay.py measured one 256 KiB move per readiness event
        at about 1,600-1,900 MB per relay CPU-second with 16 pairs, 1 MiB
        moves at 3,000-3,300 (fewer splices, epoll turns and larger TCP sends,
        so the receivers also wake less: about 1.3 MiB per receive instead of
        280 KiB).  Moves up to 4 MiB measured the same as 1 MiB.
    @ivar reads_per_turn: in splice mode, how many full reads one readiness
        event may move before returning to the reactor.
    """

    deadlines: Deadlines = field(default_factory=Deadlines)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    bandwidth: BandwidthSettings = field(default_factory=BandwidthSettings)
    read_size: int = 256 * 1024
    early_buffer: int = 64 * 1024
    early_budget: int = 16 * 1024 * 1024
    early_reserve: int = 4 * 1024
    unpaired_read: int = 16 * 1024
    max_first_frame: int = 64 * 1024
    fast_write: bool = True
    read_mode: str = "auto"
    reads_per_turn: int = 1
    splice_max: int = 1 << 20
