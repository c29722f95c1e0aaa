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
from litedesk.input.results import InjectResult, InputUnavailable
from litedesk.input.validation import Action, KeyAction, MouseAction

__all__ = ["InputWorker"]

_T = TypeVar("_T")


class InputWorker:
    """Serialise an injector's work onto one thread, in arrival order.

    Validation happens at once, on the caller's (reactor) thread, so refused
    events cost no thread hop.  When more than C{max_pending} events wait,
    absolute moves are dropped (the next one supersedes them).  Beyond
    C{max_backlog} (4 x C{max_pending} by default) a peer sends faster than
    the display takes events, which no person typing does: everything is
    dropped then but the release of a key or button submitted down, because
    dropping that "up" would leave the key stuck.  So the queue stays bounded
    whatever a peer sends.
    """

    _log = Logger()

    def __init__(
        self,
        injector: InputInjector,
        reactor: Any = None,
        *,
        max_pending: int = 256,
        max_backlog: int | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor: Any = reactor
        assert IReactorThreads.providedBy(reactor) and IReactorFromThreads.providedBy(reactor)
        self.injector = injector
        self._max_pending = max_pending
        self._max_backlog = 4 * max_pending if max_backlog is None else max_backlog
        self._pending = 0
        # Keys and buttons submitted down and not yet up, as this (the
        # reactor's) side has seen them: their ups are never dropped.
        self._down: set[object] = set()
        # Whether this backlog has been logged: once per backlog, not per event.
        self._backlog_logged = False
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
            if not self._pending:
                self._backlog_logged = False
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
        if self._pending >= self._max_backlog and not self._releases_held(checked):
            self.dropped += 1
            if not self._backlog_logged:
                self._backlog_logged = True
                self._log.warn(
                    "Input backlog of {pending} events: dropping all but releases until it drains",
                    pending=self._pending,
                )
            return defer.succeed(InjectResult(False, "overloaded", "event dropped: input backlog"))
        self._track(checked)
        action = checked
        return self._call(lambda: self.injector.run(action))

    def _held(self, action: Action) -> list[object]:
        if isinstance(action, KeyAction):
            return [action.key] if action.key is not None else []
        return list(action.buttons)

    def _releases_held(self, action: Action) -> bool:
        if isinstance(action, KeyAction):
            released = action.action == "up"
        else:
            released = action.kind is MouseType.UP
        return released and any(x in self._down for x in self._held(action))

    def _track(self, action: Action) -> None:
        if isinstance(action, KeyAction):
            pressed, released = action.action == "down", action.action == "up"
        else:
            pressed, released = action.kind is MouseType.DOWN, action.kind is MouseType.UP
        if pressed:
            self._down.update(self._held(action))
        elif released:
            self._down.difference_update(self._held(action))

    def prepare(self) -> defer.Deferred[None]:
        """Open the injector's display connection now, on the input thread.

        Opening it (X connection, XTEST, pynput's controllers) takes 30-125
        ms; done lazily it delayed the first click a host ever received by
        that much (bench/session.py: 42-63 ms against 2-10 ms for the rest).
        A display that cannot be opened is logged here and again, as a
        refusal, at the first event."""
        return self._call(self._open)

    def _open(self) -> None:
        try:
            self.injector.desktop()
        except InputUnavailable as e:
            self._log.info("Input injection not available yet: {reason}", reason=str(e))
        except Exception:
            self._log.failure("Opening the display for input failed")

    def release_all(self) -> defer.Deferred[None]:
        """Release held keys and buttons after everything queued so far."""
        self._down.clear()
        return self._call(self.injector.release_all)

    def stop(self) -> defer.Deferred[None]:
        """Release everything, close the display connection, stop the thread."""
        self._down.clear()
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
