"""The host's X clipboard: xclip get/set, the change watcher, size limits."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from litedesk.input.clipboard import (
    MAX_CLIPBOARD_BYTES,
    ClipboardUnavailable,
    ClipboardWatcher,
    XClipboard,
    decode_clipboard,
    encode_clipboard,
)
from tests.support.recorder import start_xvfb
from tests.support.skips import requires


class CodecTests(unittest.SynchronousTestCase):
    def test_text_round_trips_as_utf8(self) -> None:
        """Clipboard text is sent as plain UTF-8 (compress=false) and read
        back unchanged, including non-ASCII text."""
        text = "naïve café — 東京 €"
        self.assertEqual(encode_clipboard(text), text.encode())
        self.assertEqual(decode_clipboard(encode_clipboard(text)), text)

    def test_limits_and_unsupported_content_are_refused(self) -> None:
        """Text over 1 MiB is neither sent nor accepted; compressed (zstd)
        and non-text clipboards from a peer are refused with a reason."""
        big = "x" * (MAX_CLIPBOARD_BYTES + 1)
        self.assertRaises(ValueError, encode_clipboard, big)
        self.assertRaises(ValueError, decode_clipboard, big.encode())
        self.assertEqual(len(encode_clipboard(big[:-1])), MAX_CLIPBOARD_BYTES)
        e = self.assertRaises(ValueError, decode_clipboard, b"x", compress=True)
        self.assertIn("compressed", str(e))
        self.assertRaises(ValueError, decode_clipboard, b"\x89PNG", fmt=22)

    def test_broken_utf8_from_a_peer_is_replaced_not_fatal(self) -> None:
        """Invalid UTF-8 from a peer becomes replacement characters."""
        self.assertEqual(decode_clipboard(b"ok \xff"), "ok \ufffd")

    def test_no_display_is_reported(self) -> None:
        """Without DISPLAY or a display name (or without xclip), reading the
        clipboard fails with a clear ClipboardUnavailable instead of running
        xclip blind."""
        self.patch(os, "environ", {"PATH": os.environ.get("PATH", "")})
        f = self.failureResultOf(XClipboard(None).get_text(), ClipboardUnavailable)
        self.assertTrue("DISPLAY" in str(f.value) or "xclip" in str(f.value))


def _later(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


class _ClipboardFixture:
    """Per-test Xvfb and XClipboard, and a way to copy as another client."""

    addCleanup: Any
    fail: Any

    def setUp(self) -> None:
        self.xvfb = start_xvfb()
        self.addCleanup(self.xvfb.stop)
        self.clip = XClipboard(self.xvfb.display)
        self.addCleanup(self.clip.stop)
        self.others: list[subprocess.Popen[bytes]] = []
        self.addCleanup(self._stop_others)

    def _stop_others(self) -> None:
        for p in self.others:
            if p.poll() is None:
                p.kill()
            p.wait()

    def xclip_out(self) -> str:
        """The clipboard as another X client (xclip -o) sees it."""
        return subprocess.run(
            ["xclip", "-o", "-selection", "clipboard"],
            env=self.xvfb.env,
            capture_output=True,
            timeout=10,
        ).stdout.decode()

    def other_client_copies(self, text: str) -> None:
        """Another X client takes the clipboard (like a user's Ctrl+C)."""
        p = subprocess.Popen(
            ["xclip", "-quiet", "-i", "-selection", "clipboard"],
            env=self.xvfb.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.others.append(p)
        assert p.stdin is not None
        p.stdin.write(text.encode())
        p.stdin.close()
        deadline = time.monotonic() + 10
        while self.xclip_out() != text:
            if time.monotonic() > deadline:
                raise AssertionError("the other client did not take the clipboard")
            time.sleep(0.05)


@requires("Xvfb", "xclip")
class XClipboardTests(_ClipboardFixture, unittest.TestCase):
    @defer.inlineCallbacks
    def test_set_text_is_pasteable_by_other_clients(self):
        """Text set on the host clipboard (from the peer) is what another
        application pastes, unicode included, and stays available while the
        owner process lives."""
        text = "from the viewer: é€ 東京\nline 2"
        yield self.clip.set_text(text)
        self.assertEqual(self.xclip_out(), text)
        yield _later(0.3)
        self.assertEqual(self.xclip_out(), text)

    @defer.inlineCallbacks
    def test_get_text_reads_what_another_client_copied(self):
        """get_text returns the text another application copied, and None
        when nobody owns the clipboard."""
        self.assertIsNone((yield self.clip.get_text()))
        self.other_client_copies("copied on the host ✓")
        self.assertEqual((yield self.clip.get_text()), "copied on the host ✓")

    @defer.inlineCallbacks
    def test_oversized_clipboard_is_not_read(self):
        """A clipboard larger than the limit reads as None (it is not sent)
        and setting one is refused."""
        small = XClipboard(self.xvfb.display, max_bytes=1000)
        self.other_client_copies("y" * 1001)
        self.assertIsNone((yield small.get_text()))
        self.flushLoggedErrors()
        yield self.assertFailure(small.set_text("z" * 1001), ValueError)

    @defer.inlineCallbacks
    def test_a_new_copy_replaces_our_owner_and_stop_ends_it(self):
        """When another client copies, our xclip gives up the clipboard and
        exits by itself; stop() ends the ones still running."""
        yield self.clip.set_text("first")
        self.assertEqual(len(self.clip._owners), 1)
        self.other_client_copies("second")
        for _ in range(100):
            if not self.clip._owners:
                break
            yield _later(0.05)
        self.assertEqual(self.clip._owners, set())
        yield self.clip.set_text("third")
        yield self.clip.stop()
        self.assertEqual(self.clip._owners, set())
        self.assertEqual(self.xclip_out(), "")


@requires("Xvfb", "xclip")
class WatcherTests(_ClipboardFixture, unittest.TestCase):
    def watch(self, **kw: Any) -> tuple[ClipboardWatcher, list[str]]:
        seen: list[str] = []
        w = ClipboardWatcher(self.clip, seen.append, display=self.xvfb.display, **kw)
        w.start()
        self.addCleanup(w.stop)
        return w, seen

    @defer.inlineCallbacks
    def wait_until(self, cond: Any, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                self.fail("condition not met in time")
            yield _later(0.05)

    @defer.inlineCallbacks
    def test_copy_by_another_client_is_delivered(self):
        """When a host application copies text, the watcher delivers it (to
        be sent to the viewer) promptly, via XFixes ownership events."""
        w, seen = self.watch()
        self.assertTrue(w.using_xfixes)
        yield _later(0.3)
        self.other_client_copies("copied on the host")
        yield self.wait_until(lambda: seen == ["copied on the host"], timeout=5)
        self.other_client_copies("copied again")
        yield self.wait_until(lambda: seen[-1:] == ["copied again"], timeout=5)

    @defer.inlineCallbacks
    def test_text_from_the_peer_is_not_echoed_back(self):
        """Text that came from the viewer is set on the host but not
        delivered back to the viewer (no clipboard ping-pong); a later local
        copy still is."""
        w, seen = self.watch()
        yield _later(0.3)
        ok = yield w.set_from_peer("from the peer")
        self.assertTrue(ok)
        self.assertEqual(self.xclip_out(), "from the peer")
        yield _later(1.0)
        self.assertEqual(seen, [])
        self.other_client_copies("local copy")
        yield self.wait_until(lambda: seen == ["local copy"])

    @defer.inlineCallbacks
    def test_existing_clipboard_is_a_baseline_unless_asked(self):
        """Text already on the clipboard when a session starts is not sent
        by default, and is with deliver_initial=True."""
        self.other_client_copies("before the session")
        _, seen = self.watch()
        _, seen_initial = self.watch(deliver_initial=True)
        yield self.wait_until(lambda: seen_initial == ["before the session"])
        yield _later(0.5)
        self.assertEqual(seen, [])

    @defer.inlineCallbacks
    def test_polling_fallback_detects_changes(self):
        """Without XFixes the watcher polls (here every 0.2 s) and still
        delivers a new copy once."""
        w, seen = self.watch(use_xfixes=False, poll_interval=0.2)
        self.assertFalse(w.using_xfixes)
        yield _later(0.3)
        self.other_client_copies("polled")
        yield self.wait_until(lambda: seen == ["polled"])
        yield _later(0.6)
        self.assertEqual(seen, ["polled"])

    @defer.inlineCallbacks
    def test_oversized_peer_text_is_refused(self):
        """A peer's clipboard over the limit is refused (False), leaving the
        host clipboard as it was."""
        self.clip.max_bytes = 100
        w, _ = self.watch()
        self.other_client_copies("keep me")
        ok = yield w.set_from_peer("p" * 101)
        self.assertFalse(ok)
        self.assertEqual(self.xclip_out(), "keep me")
