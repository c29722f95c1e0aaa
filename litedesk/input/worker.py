"""Running an injector's X calls on one thread of their own, in order.

X calls block (a round trip each; typing takes about 1.5 ms a character), so
a session validates on the reactor thread and executes here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from litedesk.input.inject import InputInjector
from litedesk.input.mouse import MouseType
from litedesk.input.results import InjectResult
from litedesk.input.validation import MouseAction

__all__ = ["InputWorker"]

_T = TypeVar("_T")


class InputWorker:
    """Serialise an injector's work onto one thread, in arrival order.

    Validation happens at once, on the caller's (reactor) thread, so refused
    events cost no thread hop.  When more than C{max_pending} events wait,
    absolute moves are dropped (the next one supersedes them); key and button
    events never are, because dropping an "up" would leave a key stuck.
    """

    _log = Logger()

    def __init__(
        self,
        injector: InputInjector,
        reactor: Any = None,
        *,
        max_pending: int = 256,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor: Any = reactor
        assert IReactorThreads.providedBy(reactor) and IReactorFromThreads.providedBy(reactor)
        self.injector = injector
        self._max_pending = max_pending
        self._pending = 0
        self._pool: ThreadPool | None = None
        self.dropped = 0

    def start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="litedesk-input")
            self._pool.start()

    def _call(self, fn: Callable[[], _T]) -> defer.Deferred[_T]:
        self.start()
        assert self._pool is not None
        self._pending += 1

        def done(result: _T) -> _T:
            self._pending -= 1
            return result

        d: defer.Deferred[_T] = deferToThreadPool(self._reactor, self._pool, fn)
        d.addBoth(done)
        return d

    def submit(self, ev: object) -> defer.Deferred[InjectResult]:
        """Validate C{ev} now and inject it on the input thread.

        The Deferred fires with the L{InjectResult}; it never fails.
        """
        checked = self.injector.check(ev)
        if isinstance(checked, InjectResult):
            return defer.succeed(checked)
        if (
            self._pending >= self._max_pending
            and isinstance(checked, MouseAction)
            and checked.kind is MouseType.MOVE
        ):
            self.dropped += 1
            return defer.succeed(InjectResult(False, "overloaded", "move dropped: input backlog"))
        action = checked
        return self._call(lambda: self.injector.run(action))

    def release_all(self) -> defer.Deferred[None]:
        """Release held keys and buttons after everything queued so far."""
        return self._call(self.injector.release_all)

    def stop(self) -> defer.Deferred[None]:
        """Release everything, close the display connection, stop the thread."""
        if self._pool is None:
            self.injector.close()
            return defer.succeed(None)
        d = self._call(self.injector.close)

        def stop_pool(result: object) -> None:
            # close() never raises, so there is no failure to report here.
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.stop()

        d.addBoth(stop_pool)
        return d
