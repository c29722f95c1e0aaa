"""Waiting for a state instead of sleeping a fixed time.

A fixed sleep is either too short on a loaded 2-core CI box (a flaky test)
or too long everywhere else (a slow suite).  These helpers check a
predicate until it holds or a deadline passes, and then fail with a message
that says what was awaited.  L{wait_until} blocks (for tests that drive
real processes from a L{SynchronousTestCase}); L{until} returns a Deferred
and lets the reactor run between checks (for tests that run servers in the
test process).  The deadline is a safety net, not a timing assertion.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

__all__ = ["WaitTimeout", "pause", "until", "wait_until"]

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The awaited state did not come before the deadline."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Call C{predicate} until it returns something truthy, and return that.

    Blocks the calling thread; raises L{WaitTimeout} after C{timeout}
    seconds.  C{message} (or what calling it returns) names what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeout(f"timed out after {timeout} s waiting for {text}")
        time.sleep(interval)


def pause(seconds: float, clock: IReactorTime | None = None) -> Deferred[None]:
    """A Deferred that fires after C{seconds} of reactor time.

    For the few waits that are the behaviour under test (time must pass);
    C{pause(0)} lets the reactor run one iteration.
    """
    return deferLater(clock or cast(IReactorTime, reactor), seconds, lambda: None)


@inlineCallbacks
def until(
    predicate: Callable[[], object],
    timeout: float = 30.0,
    interval: float = 0.01,
    message: str = "condition",
    clock: IReactorTime | None = None,
) -> Generator[Deferred[Any], Any, object]:
    """Fire with C{predicate()}'s first truthy value, letting the reactor run
    in between; fail with L{WaitTimeout} after C{timeout} seconds.

    Time is C{clock}'s (the global reactor by default), so a test on a
    L{twisted.internet.task.Clock} decides when the deadline passes.
    """
    clk = clock or cast(IReactorTime, reactor)
    deadline = clk.seconds() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if clk.seconds() >= deadline:
            raise WaitTimeout(f"timed out after {timeout} s waiting for {message}")
        yield pause(interval, clk)
