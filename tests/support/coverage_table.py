"""Line coverage per package, from the data tests/run.sh collected.

C{python -m tests.support.coverage_table DATA_FILE} prints one row per
package of C{litedesk} (its modules and subpackages together) and a total:
a figure for the reader of a CI log, not a threshold.  coverage's own report
lists files; with some 150 modules a per-file list hides the picture.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import defaultdict

import coverage

__all__ = ["by_package", "main"]


def by_package(files: dict[str, dict[str, dict[str, int]]]) -> dict[str, tuple[int, int]]:
    """(statements, covered) per package from coverage's JSON C{files} map.

    A module directly in C{litedesk/} counts under C{litedesk}; anything
    below C{litedesk/X/} under C{litedesk.X}.
    """
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path, info in files.items():
        parts = os.path.normpath(path).split(os.sep)
        top = parts.index("litedesk") if "litedesk" in parts else 0
        rest = parts[top + 1 :]
        package = "litedesk" if len(rest) <= 1 else f"litedesk.{rest[0]}"
        summary = info["summary"]
        totals[package][0] += summary["num_statements"]
        totals[package][1] += summary["covered_lines"]
    return {name: (n, c) for name, (n, c) in sorted(totals.items())}


def _table(rows: dict[str, tuple[int, int]]) -> str:
    lines = [f"{'package':<20} {'lines':>7} {'covered':>8} {'cover':>6}"]
    all_n = all_c = 0
    for name, (n, c) in rows.items():
        if n == 0:  # only generated or empty modules (omitted in setup.cfg)
            continue
        all_n += n
        all_c += c
        lines.append(f"{name:<20} {n:>7} {c:>8} {100.0 * c / max(n, 1):>5.1f}%")
    lines.append(f"{'total':<20} {all_n:>7} {all_c:>8} {100.0 * all_c / max(all_n, 1):>5.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cov = coverage.Coverage(data_file=args[0] if args else None)
    cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "coverage.json")
        cov.json_report(outfile=out)
        with open(out) as f:
            files = json.load(f)["files"]
    print(_table(by_package(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
