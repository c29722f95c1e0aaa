"""The one place that decides whether a test class can run on this machine.

Tests that need an X server, X tools, tkinter, root or network namespaces
declare it with L{requires}.  On a developer machine a missing piece skips
the class with a reason that says what to install.  In CI (C{CI=true}) the
same class fails instead: a green CI run must mean every test ran, so a
machine that lost a package cannot pass with less tested (issue 10).
tests/run.sh also fails a CI run whose trial summary reports any skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase

__all__ = ["cannot_run", "in_ci", "missing", "requires"]

_Case = TypeVar("_Case", bound=type[SynchronousTestCase])

#: What to install for each program (Debian names, see tests/apt-packages.txt).
_PACKAGE = {
    "Xvfb": "xvfb",
    "xclip": "xclip",
    "xdotool": "xdotool",
    "setxkbmap": "x11-xkb-utils",
    "display": "imagemagick",
    "import": "imagemagick",
    "ip": "iproute2",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "nft": "nftables",
}


def in_ci() -> bool:
    """True when the C{CI} environment variable is set to anything but a "no"."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _tkinter() -> str | None:
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return "tkinter is not available (Debian: apt-get install python3-tk tk)"
    return None


def _root() -> str | None:
    return None if os.geteuid() == 0 else "needs root"


def _netns() -> str | None:
    reason = _root() or missing("ip", "iptables", "ip6tables")
    if reason:
        return f"the NAT lab needs network namespaces: {reason}"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"'ip netns' is not available: {e}"
    return None


def _miniupnpd() -> str | None:
    # Debian installs it in /usr/sbin, which a non-root PATH lacks.
    if shutil.which("miniupnpd") or os.path.exists("/usr/sbin/miniupnpd"):
        return None
    return "miniupnpd not installed (Debian: apt-get install miniupnpd)"


def _miniupnpc() -> str | None:
    try:
        import miniupnpc  # noqa: F401
    except ImportError:
        return "the miniupnpc module is missing (pip install -e .[test])"
    return None


#: Requirements that are not programs on PATH.
_CHECKS: dict[str, Callable[[], str | None]] = {
    "tkinter": _tkinter,
    "root": _root,
    "netns": _netns,
    "miniupnpd": _miniupnpd,
    "miniupnpc": _miniupnpc,
}


def missing(*needs: str) -> str | None:
    """Why C{needs} are not met here, or C{None} when they all are.

    Each need is a program on PATH (C{"Xvfb"}, C{"xclip"}, C{"xdotool"},
    ImageMagick's C{"display"} / C{"import"}, ...) or one of C{"tkinter"},
    C{"root"}, C{"netns"} (root, iproute2, iptables and C{ip netns}),
    C{"miniupnpd"} and the C{"miniupnpc"} Python module.
    """
    programs = [n for n in needs if n not in _CHECKS and shutil.which(n) is None]
    reasons = []
    if programs:
        packages = sorted({_PACKAGE.get(p, p) for p in programs})
        reasons.append(
            f"{', '.join(programs)} not installed (Debian: apt-get install "
            f"{' '.join(packages)}; see tests/apt-packages.txt)"
        )
    for need in needs:
        check = _CHECKS.get(need)
        reason = check() if check is not None else None
        if reason:
            reasons.append(reason)
    return "; ".join(reasons) or None


def cannot_run(reason: str) -> NoReturn:
    """Stop the running test because this machine cannot run it: a skip
    outside CI, a failure with C{CI=true} (for conditions found only inside
    the test, such as a version or a kernel limit)."""
    if in_ci():
        raise FailTest(f"CI=true and this test cannot run: {reason}")
    raise SkipTest(reason)


def requires(*needs: str) -> Callable[[_Case], _Case]:
    """Class decorator: run the test class only where C{needs} are met.

    Outside CI an unmet need sets trial's C{skip}; in CI every test of the
    class fails with the same reason, in C{setUp}, so the run's summary
    counts it as an error that names what is missing.
    """
    reason = missing(*needs)

    def decorate(cls: _Case) -> _Case:
        if reason is None:
            return cls
        if not in_ci():
            cls.skip = reason
            return cls

        def setUp(self: Any) -> None:
            cannot_run(reason)

        cls.setUp = setUp  # type: ignore[method-assign]
        return cls

    return decorate
