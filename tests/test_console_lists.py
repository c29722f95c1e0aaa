"""The relay's address lists as the console checks, reads and saves them.

Covers L{litedesk.console.lists}: every line the relay would read into an
address no peer can have is named with its line number and reason (IPv4
typos, networks, non-canonical text) while the relay's own comments and
blank lines pass; on arbitrary text (hypothesis) the check agrees with the
relay's parser (L{litedesk.relay.service.read_address_list}): a text with
no wrong line yields exactly addresses that are canonical IPs.  Saving is
atomic and private (0600, no temporary file left, the old file intact when
the write fails) and the relay's real list poller
(L{litedesk.relay.service.RelayService.reload_lists}) picks the saved file
up.  The page on a real server in a real browser is in
tests/test_console_browser.py.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from litedesk.console.lists import (
    MAX_LIST_BYTES,
    LineError,
    check_list,
    digest,
    read_list,
    save_list,
    submitted_text,
)
from litedesk.relay.service import BLOCKLIST_FILE, make_relay_service, read_address_list
from litedesk.relay.settings import RelaySettings


def canonical(address: str) -> bool:
    """Whether C{address} is an IP written as the kernel reports peers."""
    try:
        return str(ipaddress.ip_address(address)) == address
    except ValueError:
        return False


class CheckTests(SynchronousTestCase):
    def test_good_lists(self) -> None:
        """Addresses with comments, blank lines and # lines are all fine."""
        text = (
            "# blocked after the incident\n"
            "\n"
            "203.0.113.7 scanner\n"
            "   2001:db8::1\tcomment\n"
            "::ffff:198.51.100.1\n"
            "2001:DB8::2\n"
            "fe80::1%eth0\n"
        )
        self.assertEqual(check_list(text), [])

    def test_wrong_lines_named(self) -> None:
        """Each wrong line: its number as an editor counts, its text, why."""
        text = "203.0.113.7\n10.0.0.0/8\n192.168.1.300\nexample.com\n010.1.1.1\n"
        errors = check_list(text)
        self.assertEqual([e.number for e in errors], [2, 3, 4, 5])
        self.assertEqual(errors[0], LineError(2, "10.0.0.0/8", errors[0].reason))
        self.assertIn("network", errors[0].reason)
        self.assertEqual(errors[1].reason, "not an IP address")
        self.assertEqual(errors[2].reason, "not an IP address")
        self.assertIn("not an IP address", errors[3].reason)

    def test_line_numbers_follow_the_relays_split(self) -> None:
        """CR LF and other line breaks count as the relay counts them."""
        errors = check_list("1.2.3.4\r\nbad\r\n5.6.7.8\x0bbad2")
        self.assertEqual([(e.number, e.text) for e in errors], [(2, "bad"), (4, "bad2")])

    @given(st.text(alphabet=st.sampled_from("0123456789abcdef.:/ #\n\t%x"), max_size=80))
    def test_agrees_with_the_relay(self, text: str) -> None:
        """A line is refused exactly when the relay reads it into something
        that is not an address as the kernel writes a peer's: the lines that
        pass give canonical IPs only."""
        refused = {e.number for e in check_list(text)}
        for number, line in enumerate(text.splitlines(), 1):
            read = read_address_list(line)
            if number in refused:
                self.assertEqual(len(read), 1)
                self.assertFalse(canonical(next(iter(read))), line)
            else:
                self.assertTrue(all(canonical(a) for a in read), line)

    @given(st.from_type(ipaddress.IPv4Address) | st.from_type(ipaddress.IPv6Address))
    def test_every_address_accepted(
        self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> None:
        """Any address, written the standard way, is a good line."""
        self.assertEqual(check_list(f"{ip} note\n"), [])


class SubmissionTests(SynchronousTestCase):
    def test_text_decoded_and_line_ends_unified(self) -> None:
        self.assertEqual(submitted_text(b"1.2.3.4\r\n5.6.7.8\r\n"), "1.2.3.4\n5.6.7.8\n")

    def test_too_large_refused(self) -> None:
        with self.assertRaises(ValueError):
            submitted_text(b"1" * (MAX_LIST_BYTES + 1))

    def test_not_utf8_refused(self) -> None:
        with self.assertRaises(ValueError):
            submitted_text(b"1.2.3.4 \xff\n")


class SaveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.path = self.dir / BLOCKLIST_FILE

    def test_missing_file_reads_empty(self) -> None:
        current = read_list(self.path)
        self.assertEqual((current.text, current.digest, current.too_big), ("", digest(b""), False))

    def test_save_is_private_and_leaves_no_temporary(self) -> None:
        """The new file is 0600 with the text; only it is in the directory."""
        save_list(self.path, "203.0.113.7\n")
        self.assertEqual(self.path.read_text(), "203.0.113.7\n")
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)
        self.assertEqual(os.listdir(self.dir), [BLOCKLIST_FILE])
        self.assertEqual(read_list(self.path).digest, digest(b"203.0.113.7\n"))

    def test_save_replaces_by_rename(self) -> None:
        """A new inode each save: what the relay's poll watches besides mtime."""
        save_list(self.path, "203.0.113.7\n")
        before = self.path.stat().st_ino
        save_list(self.path, "203.0.113.8\n")
        self.assertNotEqual(self.path.stat().st_ino, before)

    def test_failed_save_leaves_no_temporary(self) -> None:
        """A save that cannot complete raises, changes nothing, leaves no
        temporary file (here the target is a directory, as root can hit too)."""
        target = self.dir / "occupied"
        target.mkdir()
        (target / "keep").write_text("x")
        with self.assertRaises(OSError):
            save_list(target, "203.0.113.8\n")
        with self.assertRaises(OSError):
            save_list(self.dir / "missing-dir" / BLOCKLIST_FILE, "x\n")
        self.assertEqual(os.listdir(self.dir), ["occupied"])
        self.assertEqual(os.listdir(target), ["keep"])

    def test_too_big_file_shown_in_part(self) -> None:
        self.path.write_bytes(b"1.2.3.4\n" * (MAX_LIST_BYTES // 8 + 1))
        current = read_list(self.path)
        self.assertTrue(current.too_big)
        self.assertEqual(len(current.text), MAX_LIST_BYTES)

    def test_relay_picks_up_the_saved_list(self) -> None:
        """The relay's own poller reads what the console saved."""
        clock = Clock()
        service = make_relay_service(clock, "tcp:0", RelaySettings(), "", self.dir)
        service.reload_lists()
        self.assertEqual(service.relay.table.blocklist, frozenset())
        save_list(self.path, "203.0.113.7 scanner\n::ffff:198.51.100.1\n")
        service.reload_lists()
        self.assertEqual(service.relay.table.blocklist, {"203.0.113.7", "198.51.100.1"})
