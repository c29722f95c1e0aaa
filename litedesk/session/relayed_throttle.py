"""Host-wide pacing of the password checks of relayed viewers.

Relayed viewers all appear from the relay's address, which everyone on that
relay (or behind one NAT) shares, so a per-source lock would let one guesser
lock every relayed viewer out; this throttle spaces their checks instead (see
L{litedesk.session.login} for the numbers).  It never sees a password: it
only decides when a session's check runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["RelayedLoginThrottle"]

# Every login event, whichever piece logs it, is under one namespace so that
# an operator follows logins by one name.
_log = Logger(namespace="litedesk.session.login")


@dataclass
class _Waiter:
    check: Callable[[], object]
    alive: Callable[[], bool]
    peer: str
    since: float


class RelayedLoginThrottle:
    """Host-wide pacing of the password checks of relayed viewers.

    Every relayed check takes a slot.  Slots follow one another at least
    L{spacing} seconds apart: 0 while fewer than C{free_failures} relayed
    wrong passwords are remembered, then C{base_delay} doubling with each
    further one up to C{max_delay}.  Wrong passwords are forgotten after
    C{quiet} seconds without one, and by a right password.  At most
    C{max_waiting} checks wait for a slot; L{submit} refuses more, so a check
    that is accepted runs within C{max_waiting * max_delay} seconds however
    many wrong passwords came before it.

    The throttle does not see passwords: the session hands it a C{check}
    callable, and L{litedesk.session.login.LoginVerifier.verify} reports the outcome with L{failed}
    and L{succeeded}.  A check whose C{alive()} is false when its slot comes
    (the connection closed while it waited) is dropped without running and
    without using the slot.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        free_failures: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 4.0,
        quiet: float = 60.0,
        max_waiting: int = 4,
    ) -> None:
        self.clock = clock
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.quiet = quiet
        self.max_waiting = max_waiting
        self._failures = 0
        self._last_failure = 0.0
        self._last_check: float | None = None
        self._waiting: deque[_Waiter] = deque()
        self._timer: IDelayedCall | None = None

    @property
    def failures(self) -> int:
        """Relayed wrong passwords remembered now."""
        self._forget_if_quiet()
        return self._failures

    @property
    def waiting(self) -> int:
        """Checks waiting for a slot (including any whose connection is gone)."""
        return len(self._waiting)

    def spacing(self) -> float:
        """Seconds between the last check and the next one, as things stand."""
        return self._spacing_for(self.failures)

    def _spacing_for(self, failures: int) -> float:
        extra = failures - self.free_failures
        if extra < 0:
            return 0.0
        # Capped before exponentiating so a long attack cannot overflow.
        return float(min(self.max_delay, self.base_delay * 2.0 ** min(extra, 60)))

    def submit(self, check: Callable[[], object], alive: Callable[[], bool], peer: str) -> bool:
        """Run C{check} in the next free slot (now, if it is free).

        @param alive: whether the connection still wants its check; asked
            again when the slot comes and when counting waiting checks.
        @param peer: for the log (the relay's address, as the host sees it).
        @return: False if too many checks are waiting already: the caller
            refuses the login
            (L{litedesk.session.login_errors.ERROR_TRY_LATER}) without
            checking it.
        """
        self._drop_dead()
        if len(self._waiting) >= self.max_waiting:
            _log.warn(
                "Refused a relayed login attempt from {peer}: {waiting} already wait for a "
                "password check ({failures} recent relayed wrong passwords)",
                peer=peer,
                waiting=len(self._waiting),
                failures=self.failures,
                relayed_login="refused",
            )
            return False
        self._waiting.append(_Waiter(check, alive, peer, self.clock.seconds()))
        self._run_due()
        if self._waiting and self._waiting[-1].check is check:
            _log.info(
                "Relayed login attempt from {peer} waits up to {delay:.1f} s for a password "
                "check ({failures} recent relayed wrong passwords, {waiting} waiting)",
                peer=peer,
                delay=self._wait_for_last(),
                failures=self.failures,
                waiting=len(self._waiting),
                relayed_login="delayed",
            )
        return True

    def failed(self) -> None:
        """A relayed check found a wrong password: slow the next ones down."""
        self._forget_if_quiet()
        self._failures += 1
        self._last_failure = self.clock.seconds()

    def succeeded(self) -> None:
        """A relayed check found the right password: start over."""
        self._failures = 0

    def stop(self) -> None:
        """Cancel the pending slot and drop every waiting check (host shutdown)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._waiting.clear()

    def _forget_if_quiet(self) -> None:
        if self._failures and self.clock.seconds() - self._last_failure >= self.quiet:
            self._failures = 0

    def _drop_dead(self) -> None:
        self._waiting = deque(w for w in self._waiting if _alive(w))

    def _wait_for_last(self) -> float:
        # For the log: the newcomer's wait if every check ahead of it finds
        # a wrong password (a right one makes it shorter).
        now = self.clock.seconds()
        slot = self._last_check if self._last_check is not None else now
        failures = self.failures
        for _ in self._waiting:
            slot += self._spacing_for(failures)
            failures += 1
        return max(0.0, slot - now)

    def _next_slot(self, now: float) -> float:
        if self._last_check is None:
            return now
        return self._last_check + self.spacing()

    def _run_due(self) -> None:
        if self._timer is not None and self._timer.active():
            return
        self._timer = None
        while self._waiting:
            head = self._waiting[0]
            if not _alive(head):
                # Gone while waiting: never checked, never counted.
                self._waiting.popleft()
                continue
            now = self.clock.seconds()
            due = self._next_slot(now)
            if due > now:
                self._timer = self.clock.callLater(due - now, self._slot)
                return
            self._waiting.popleft()
            # Spacing counts from when the slot was due (or from the arrival
            # of a check that found the slot free), not from when the
            # reactor got round to it: late timers must not add up.
            self._last_check = max(due, head.since)
            try:
                head.check()
            except Exception:
                _log.failure("A relayed password check failed")

    def _slot(self) -> None:
        self._timer = None
        self._run_due()


def _alive(waiter: _Waiter) -> bool:
    try:
        return bool(waiter.alive())
    except Exception:
        return False
