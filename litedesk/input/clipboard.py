"""The host's text clipboard: read, write and watch the X CLIPBOARD selection.

How X clipboards work, and why this module uses xclip
--------------------------------------------------------
An X selection has no storage: the client that "owns" CLIPBOARD must answer
every paste request for as long as it owns it.  Setting the clipboard thus
needs a process that stays alive.  L{XClipboard.set_text} starts
C{xclip -quiet -i} (C{-quiet} keeps it in the foreground, so it stays our
child instead of forking away): xclip takes ownership, serves pastes, and
exits by itself as soon as another client copies something.  Outside a
session the most recent xclip keeps serving the last text the peer sent,
until the next copy; L{XClipboard.stop} ends the xclips this object started
(when the host agent stops, its clipboard text goes with it).  This works
without a window manager and under Xvfb, and xclip handles the INCR protocol
for large texts, which a hand-written python-xlib owner would have to
reimplement.  Reading runs C{xclip -o} with a timeout, so an owner that never
answers cannot hang us.

Change detection
----------------
L{ClipboardWatcher} learns about new owners from XFixes
(C{SetSelectionOwnerNotify}: every copy, even by the same window) on a
private python-xlib connection in a thread of its own, which blocks in
C{select()} and never touches the reactor; each notification schedules one
C{xclip -o} on the reactor.  Without XFixes it polls every C{poll_interval}
seconds instead.  Text is delivered only when it differs from the last text
seen in either direction, which is also the loop prevention: text that came
from the peer is recorded before it is set, so its echo is suppressed.

Text over about 1 MiB (L{MAX_CLIPBOARD_BYTES}) is neither sent nor accepted.
Text travels uncompressed (RustDesk's C{Clipboard.compress} = false; zstd
is not implemented, and a compressed clipboard from a peer is refused).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from twisted.internet import defer, error, protocol, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

#: The largest clipboard text sent or accepted, in UTF-8 bytes.
MAX_CLIPBOARD_BYTES: Final = 1 << 20
#: RustDesk's ClipboardFormat.Text.
FORMAT_TEXT: Final = 0


class ClipboardError(Exception):
    """The clipboard could not be read or written."""


class ClipboardUnavailable(ClipboardError):
    """xclip is missing or the display cannot be opened."""


def encode_clipboard(text: str, max_bytes: int = MAX_CLIPBOARD_BYTES) -> bytes:
    """The C{Clipboard.content} for C{text} (UTF-8, sent with compress=false).

    @raise ValueError: if it is larger than C{max_bytes}.
    """
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise ValueError(f"clipboard text of {len(data)} bytes exceeds {max_bytes}")
    return data


def decode_clipboard(
    content: bytes,
    *,
    compress: bool = False,
    fmt: int = FORMAT_TEXT,
    max_bytes: int = MAX_CLIPBOARD_BYTES,
) -> str:
    """The text of a peer's C{Clipboard} message.

    @raise ValueError: compressed, not text, or too large.
    """
    if compress:
        raise ValueError("compressed clipboard content is not supported")
    if fmt != FORMAT_TEXT:
        raise ValueError(f"clipboard format {fmt} is not text")
    if len(content) > max_bytes:
        raise ValueError(f"clipboard text of {len(content)} bytes exceeds {max_bytes}")
    # A peer's broken UTF-8 is shown with replacement characters rather
    # than dropped: the rest of the text is still what the user copied.
    return content.decode("utf-8", "replace")


def _default_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class _ReadProtocol(protocol.ProcessProtocol):
    """Collect C{xclip -o}'s output, up to a limit."""

    def __init__(self, limit: int) -> None:
        self.done: defer.Deferred[bytes | None] = defer.Deferred()
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self.too_large = False

    def outReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            if not self.too_large:
                self.too_large = True
                self._chunks.clear()
                self._kill()
            return
        self._chunks.append(data)

    def _kill(self) -> None:
        with contextlib.suppress(error.ProcessExitedAlready):
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]

    def processEnded(self, reason: Failure) -> None:
        ok = isinstance(reason.value, error.ProcessDone)
        self.done.callback(b"".join(self._chunks) if ok and not self.too_large else None)


class _OwnerProtocol(protocol.ProcessProtocol):
    """Feed text to C{xclip -quiet -i} and notice when it owns the selection."""

    # xclip -quiet prints this on stderr once it owns the selection.
    _READY = b"Waiting for selection request"

    def __init__(self, data: bytes) -> None:
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._data = data
        self._stderr = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._data)
        self.transport.closeStdin()

    def errReceived(self, data: bytes) -> None:
        if self.ready.called:
            return
        self._stderr = (self._stderr + data)[-4096:]
        if self._READY in self._stderr:
            self.ready.callback(None)

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            msg = self._stderr.decode("utf-8", "replace").strip() or str(reason.value)
            self.ready.errback(ClipboardError(f"xclip did not take the clipboard: {msg}"))
        self.ended.callback(None)

    def kill(self) -> None:
        with contextlib.suppress(error.ProcessExitedAlready):
            self.transport.signalProcess("TERM")  # type: ignore[union-attr]


class XClipboard:
    """Get and set the text of one X display's CLIPBOARD selection via xclip.

    @param display: X display name; C{None} uses C{$DISPLAY}.
    @param timeout: seconds to wait for xclip (reads, and taking ownership).
    """

    _log = Logger()

    def __init__(
        self,
        display: str | None = None,
        reactor: Any = None,
        *,
        selection: str = "clipboard",
        xclip: str = "xclip",
        timeout: float = 3.0,
        max_bytes: int = MAX_CLIPBOARD_BYTES,
    ) -> None:
        self._display = display
        self._reactor = reactor if reactor is not None else _default_reactor()
        self._selection = selection
        self._xclip = xclip
        self._timeout = timeout
        self.max_bytes = max_bytes
        self._owners: set[_OwnerProtocol] = set()

    def _argv(self, *args: str) -> tuple[str, list[str]]:
        exe = shutil.which(self._xclip)
        if exe is None:
            raise ClipboardUnavailable(f"{self._xclip} is not installed")
        argv = [self._xclip, "-selection", self._selection]
        if self._display:
            argv += ["-display", self._display]
        elif not os.environ.get("DISPLAY"):
            raise ClipboardUnavailable("no X display: set DISPLAY or pass a display name")
        return exe, argv + list(args)

    def _with_timeout(self, d: defer.Deferred[Any], on_timeout: Callable[[], None]) -> IDelayedCall:
        call: IDelayedCall = self._reactor.callLater(self._timeout, on_timeout)

        def cancel(result: object) -> object:
            if call.active():
                call.cancel()
            return result

        d.addBoth(cancel)
        return call

    def get_text(self) -> defer.Deferred[str | None]:
        """The clipboard's text, or C{None} when it is empty, not text,
        larger than C{max_bytes}, or its owner does not answer in time."""
        try:
            exe, argv = self._argv("-o", "-target", "UTF8_STRING")
        except ClipboardUnavailable as e:
            return defer.fail(e)
        proto = _ReadProtocol(self.max_bytes)
        self._reactor.spawnProcess(proto, exe, argv, env=os.environ.copy())
        self._with_timeout(proto.done, proto._kill)

        def decode(data: bytes | None) -> str | None:
            if proto.too_large:
                self._log.warn(
                    "Clipboard text larger than {limit} bytes ignored", limit=self.max_bytes
                )
            if not data:
                return None
            return data.decode("utf-8", "replace")

        return proto.done.addCallback(decode)

    def set_text(self, text: str) -> defer.Deferred[None]:
        """Make C{text} the clipboard's content.

        Fires once xclip owns the selection (a paste from then on gets
        C{text}); fails with L{ClipboardError} if it did not within the
        timeout, and with C{ValueError} if C{text} is too large.
        """
        try:
            data = encode_clipboard(text, self.max_bytes)
            exe, argv = self._argv("-quiet", "-i")
        except (ValueError, ClipboardUnavailable) as e:
            return defer.fail(e)
        owner = _OwnerProtocol(data)
        self._owners.add(owner)
        owner.ended.addBoth(lambda _: self._owners.discard(owner))
        self._reactor.spawnProcess(owner, exe, argv, env=os.environ.copy())
        self._with_timeout(owner.ready, owner.kill)
        return defer.Deferred.fromCoroutine(self._confirm(owner, text))

    async def _confirm(self, owner: _OwnerProtocol, text: str) -> None:
        await owner.ready
        # xclip announces itself right after *queueing* SetSelectionOwner,
        # before its output buffer is flushed to the server; killed in that
        # gap it never owned anything.  So read back until the server agrees
        # (normally at once), or until another copy or the timeout intervenes.
        deadline = self._reactor.seconds() + self._timeout
        while not owner.ended.called and self._reactor.seconds() < deadline:
            if await self.get_text() == text:
                return
            await task.deferLater(self._reactor, 0.02, lambda: None)

    def stop(self) -> defer.Deferred[None]:
        """End the xclip processes this object started; fires when they exited."""
        owners = list(self._owners)
        for owner in owners:
            owner.kill()
        return defer.DeferredList([o.ended for o in owners], consumeErrors=True).addCallback(
            lambda _: None
        )


class ClipboardWatcher:
    """Deliver the host's new clipboard text to C{on_change}, and set text
    that came from the peer without echoing it back.

    @param on_change: called on the reactor thread with each new text
        (never empty, never larger than the clipboard's C{max_bytes}).
    @param deliver_initial: also deliver the text already on the clipboard
        at L{start}; by default it only becomes the baseline.
    @param use_xfixes: watch XFixes ownership events (default); C{False}
        forces polling every C{poll_interval} seconds.
    """

    _log = Logger()
    #: How often the watcher thread checks whether it should stop.
    _TICK: Final = 0.2

    def __init__(
        self,
        clipboard: XClipboard,
        on_change: Callable[[str], object],
        *,
        display: str | None = None,
        reactor: Any = None,
        poll_interval: float = 1.0,
        use_xfixes: bool = True,
        deliver_initial: bool = False,
    ) -> None:
        self.clipboard = clipboard
        self._on_change = on_change
        self._display = display
        self._reactor = reactor if reactor is not None else _default_reactor()
        self._poll_interval = poll_interval
        self._use_xfixes = use_xfixes
        self._deliver_initial = deliver_initial
        self._last: str | None = None
        self._baseline_set = False
        self._fetching = False
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped: defer.Deferred[None] | None = None
        self.using_xfixes = False

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Open a private X connection and start watching.

        @raise ClipboardUnavailable: when the display cannot be opened.
        """
        if self._thread is not None:
            return
        name = self._display or os.environ.get("DISPLAY")
        if not name:
            raise ClipboardUnavailable("no X display: set DISPLAY or pass a display name")
        try:
            # Through importlib: python-xlib has no type stubs here.
            xdisplay = importlib.import_module("Xlib.display").Display(name)
        except Exception as e:
            raise ClipboardUnavailable(f"cannot open X display {name}: {e}") from e
        self.using_xfixes = self._use_xfixes and xdisplay.has_extension("XFIXES")
        if self.using_xfixes:
            xfixes = importlib.import_module("Xlib.ext.xfixes")
            xdisplay.xfixes_query_version()
            xdisplay.xfixes_select_selection_input(
                xdisplay.screen().root,
                xdisplay.intern_atom(self.clipboard._selection.upper()),
                xfixes.XFixesSetSelectionOwnerNotifyMask,
            )
            xdisplay.flush()
        self._stop.clear()
        self._stopped = defer.Deferred()
        self._thread = threading.Thread(
            target=self._run, args=(xdisplay,), name="litedesk-clipboard", daemon=True
        )
        self._thread.start()
        self._log.info(
            "Watching the clipboard of {display} ({how})",
            display=name,
            how="XFixes events" if self.using_xfixes else f"polling every {self._poll_interval}s",
        )
        # The first fetch sets the baseline (or delivers it, if asked to).
        self._changed()

    def stop(self) -> defer.Deferred[None]:
        """Stop watching; fires when the thread has exited.  Does not touch
        the clipboard's xclip owners (see L{XClipboard.stop})."""
        if self._thread is None or self._stopped is None:
            return defer.succeed(None)
        self._stop.set()
        self._thread = None
        return self._stopped

    # -- the watcher thread ---------------------------------------------------------

    def _run(self, xdisplay: Any) -> None:
        try:
            last_poll = time.monotonic()
            fd = xdisplay.fileno()
            while not self._stop.is_set():
                if self.using_xfixes:
                    select.select([fd], [], [], self._TICK)
                    changed = False
                    while xdisplay.pending_events():
                        ev = xdisplay.next_event()
                        # By class name: python-xlib loads extension modules
                        # itself, so its event classes are not the ones an
                        # import of Xlib.ext.xfixes gives.  Only this kind of
                        # event was selected on this connection anyway.
                        if type(ev).__name__ == "SetSelectionOwnerNotify" and ev.owner:
                            changed = True
                    if changed:
                        self._reactor.callFromThread(self._changed)
                else:
                    self._stop.wait(self._TICK)
                    now = time.monotonic()
                    if now - last_poll >= self._poll_interval:
                        last_poll = now
                        self._reactor.callFromThread(self._changed)
        except Exception:
            self._reactor.callFromThread(
                self._log.failure, "The clipboard watcher stopped on an error"
            )
        finally:
            with contextlib.suppress(Exception):
                xdisplay.close()
            stopped = self._stopped
            if stopped is not None:
                self._reactor.callFromThread(stopped.callback, None)

    # -- on the reactor ---------------------------------------------------------------

    def _changed(self) -> None:
        # One read at a time; notifications during a read cause one more.
        if self._fetching:
            self._dirty = True
            return
        self._fetching = True
        self._dirty = False
        d = self.clipboard.get_text()
        d.addCallbacks(self._fetched, self._fetch_failed)
        d.addBoth(self._fetch_done)

    def _fetched(self, text: str | None) -> None:
        initial = not self._baseline_set
        self._baseline_set = True
        if not text or text == self._last:
            return
        self._last = text
        if (initial and not self._deliver_initial) or self._thread is None:
            return  # a baseline, or a read that finished after stop()
        try:
            self._on_change(text)
        except Exception:
            self._log.failure("Clipboard change handler failed")

    def _fetch_failed(self, f: Failure) -> None:
        self._log.warn("Reading the clipboard failed: {error}", error=f.getErrorMessage())

    def _fetch_done(self, _: object) -> None:
        self._fetching = False
        if self._dirty and self._thread is not None:
            self._changed()

    def set_from_peer(self, text: str) -> defer.Deferred[bool]:
        """Put the peer's C{text} on the host clipboard without echoing it.

        Fires with C{True} once set, C{False} if refused (too large) or
        failed; never fails.
        """
        if text == self._last:
            return defer.succeed(True)
        try:
            encode_clipboard(text, self.clipboard.max_bytes)
        except ValueError as e:
            self._log.warn("Peer clipboard refused: {reason}", reason=str(e))
            return defer.succeed(False)
        # Recorded first: the ownership notification may arrive before
        # set_text's Deferred fires, and its read must find this text.
        self._last = text
        d = self.clipboard.set_text(text)

        def failed(f: Failure) -> bool:
            self._log.warn("Setting the clipboard failed: {error}", error=f.getErrorMessage())
            return False

        return d.addCallbacks(lambda _: True, failed)
