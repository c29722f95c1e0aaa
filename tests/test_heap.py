"""litedesk.heap: freed buffers stay in the heap for the next block.

Each check runs in a fresh interpreter (the thresholds are per process and
cannot be set back): one with the tuning, one without, the same allocations.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

# Twenty buffers of 1 MiB, as a burst of blocks in flight: how many MiB of
# them got mappings of their own.
_PROGRAM = """
import sys
from litedesk.heap import keep_freed_memory
if sys.argv[1] == "tuned" and not keep_freed_memory():
    sys.exit("mallopt refused")

def mapped():
    # Bytes in anonymous mappings other than the heap (neighbours merge, so
    # count bytes rather than mappings).
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 5:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                total += hi - lo
    return total

size = int(sys.argv[2])
before = mapped()
kept = [bytearray(size) for _ in range(20 if size < (4 << 20) else 4)]
print((mapped() - before) >> 20)
"""


def _new_mappings(mode: str, size: int = 1 << 20) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode, str(size)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise AssertionError(out.stderr)
    return int(out.stdout)


class KeepFreedMemoryTests(SynchronousTestCase):
    def test_block_sized_buffers_come_from_the_heap(self) -> None:
        """Without the tuning every 1 MiB buffer is a mapping of its own (made and
        unmade, page faults and all, for each block); with it they come from
        the heap, whose freed pages the next buffers reuse."""
        self.assertGreaterEqual(_new_mappings("default"), 19)
        self.assertEqual(_new_mappings("tuned"), 0)

    def test_screen_sized_buffers_come_from_the_heap(self) -> None:
        """A whole 1080p grab (8 MB) and an RGB picture (6 MB) come from the heap
        too: as mappings of their own they were faulted in page by page on
        every frame of a moving window."""
        grab = 1920 * 1080 * 4
        self.assertEqual(_new_mappings("tuned", grab), 0)
        self.assertEqual(_new_mappings("tuned", 1920 * 1080 * 3), 0)
