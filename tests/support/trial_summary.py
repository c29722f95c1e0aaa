"""How many tests ran and how many were skipped, from trial's output.

tests/run.sh pipes trial's output through this module
(C{python -m tests.support.trial_summary LOG}) to print the counts, and in
CI (C{CI=true}) to fail the run when anything was skipped: the skip helper
(L{tests.support.skips}) already turns a missing tool into a failure there,
and this catches any skip that does not go through it.

trial ends its output with C{Ran N tests in T s} and a result line such as
C{PASSED (skips=2, successes=598)} or C{FAILED (failures=1, errors=2, ...)}.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from .skips import in_ci

__all__ = ["Summary", "main", "parse"]

_RAN = re.compile(r"^Ran (\d+) tests? in ", re.M)
_RESULT = re.compile(r"^(PASSED|FAILED) \(([^)]*)\)\s*$", re.M)
_COUNT = re.compile(r"(\w+)=(\d+)")


@dataclass
class Summary:
    ran: int
    passed: bool
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return self.counts.get("skips", 0)


def parse(output: str) -> Summary | None:
    """The last summary in C{output}, or C{None} when trial printed none
    (it crashed or was killed)."""
    ran = _RAN.findall(output)
    result = _RESULT.findall(output)
    if not ran or not result:
        return None
    verdict, fields = result[-1]
    counts = {name: int(n) for name, n in _COUNT.findall(fields)}
    return Summary(int(ran[-1]), verdict == "PASSED", counts)


def main(argv: list[str] | None = None) -> int:
    """Print the counts; exit 1 if there is no summary, or in CI if any test
    was skipped."""
    args = sys.argv[1:] if argv is None else argv
    with open(args[0], encoding="utf-8", errors="replace") as f:
        summary = parse(f.read())
    if summary is None:
        print("tests/run.sh: no trial summary (timeout or crash?)", file=sys.stderr)
        return 1
    print(f"==> tests: ran {summary.ran}, skipped {summary.skipped}")
    if summary.skipped and in_ci():
        print(
            f"tests/run.sh: CI is set and {summary.skipped} tests were skipped: "
            "every test must run in CI (see the SKIPPED list above)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
