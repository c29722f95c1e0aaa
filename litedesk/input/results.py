"""What became of one input event, and the exceptions that carry a refusal.

Validation, the injector and the X backends all refuse events for reasons a
peer should hear about; they share these types so that a refusal raised deep
in a backend reaches the session as the same L{InjectResult}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["OK", "InjectResult", "InputUnavailable", "Refused", "invalid", "unsupported"]


@dataclass(frozen=True, slots=True)
class InjectResult:
    """What happened to one event.

    @ivar code: C{"ok"}, or why it was not injected: C{"view-only"},
        C{"invalid"} (malformed values), C{"unsupported"} (valid, but not
        possible on this host), C{"backend"} (X failed), C{"unavailable"}
        (no usable display), C{"overloaded"} (a move dropped under backlog).
    """

    ok: bool
    code: str = "ok"
    reason: str = ""


OK: Final = InjectResult(True)


class InputUnavailable(Exception):
    """No usable X display (none configured, unreachable, or no XTEST)."""


class Refused(Exception):
    """An event refused; C{result} says why."""

    def __init__(self, result: InjectResult) -> None:
        super().__init__(result.reason)
        self.result = result


def invalid(reason: str) -> Refused:
    """A refusal of malformed values."""
    return Refused(InjectResult(False, "invalid", reason))


def unsupported(reason: str) -> Refused:
    """A refusal of a valid event this host cannot perform."""
    return Refused(InjectResult(False, "unsupported", reason))
