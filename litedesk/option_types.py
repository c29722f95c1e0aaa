"""Value checks shared by the twistd plugins' C{usage.Options}."""

from __future__ import annotations

from twisted.python import usage


def port_number(value: str) -> int:
    """A TCP/UDP port for a listener that also uses the ports around it."""
    try:
        port = int(value)
    except ValueError:
        raise usage.UsageError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65534:
        raise usage.UsageError(f"port out of range: {port}")
    return port


def nonneg_int(value: str) -> int:
    """A whole number >= 0 (0 usually means "unlimited")."""
    try:
        n = int(value)
    except ValueError:
        raise usage.UsageError(f"not a whole number: {value!r}") from None
    if n < 0:
        raise usage.UsageError(f"must not be negative: {n}")
    return n
