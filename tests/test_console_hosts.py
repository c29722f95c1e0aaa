"""The console's hosts page: paging, id-prefix search, online filter, escaping.

Covers L{litedesk.console.hosts_view} against a real rendezvous
L{litedesk.rendezvous.registry.Registry} (peers loaded as from the peer
database, some registered over the registry's own RegisterPk path): pages
of 50 in the registry's order with a working "next" position, the bounded
scan of a filtered page and the note that says where it stopped, the exact
id shown first, host names reported by hosts escaped in the HTML, and the
URL query parser on arbitrary input (hypothesis).  The page served by a
real server to a signed-in administrator is in tests/test_console_browser.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.template import flattenString

from litedesk.console.hosts_view import (
    MAX_PREFIX,
    PAGE_SIZE,
    HostQuery,
    host_page,
    parse_host_query,
    render_hosts,
    scan_note,
)
from litedesk.rendezvous.registry import Registry
from litedesk.rendezvous.store import PeerRecord

NOW = 10_000.0


def registry_with(offline: int, online_ids: Sequence[str] = ()) -> Registry:
    """C{offline} peers loaded from "the database" (ids 100000000...), then
    C{online_ids} registered over RegisterPk just now, each from its own address."""
    registry = Registry()
    registry.load(
        PeerRecord(None, str(100_000_000 + n), b"u" * 16, bytes(32), "192.0.2.1")
        for n in range(offline)
    )
    for n, peer_id in enumerate(online_ids):
        ip = f"198.51.{n // 250}.{n % 250 + 1}"
        outcome = registry.register_pk(peer_id, b"v" * 16, bytes(32), (ip, 21116), NOW)
        assert outcome.result == 0, outcome
    return registry


def html(tags: Any) -> str:
    """The flattened markup (plain tags flatten synchronously)."""
    out: list[bytes] = []
    flattenString(None, tags).addCallback(out.append)
    return out[0].decode("utf-8")


class PagingTests(SynchronousTestCase):
    def test_pages_of_fifty_in_registry_order(self) -> None:
        """120 hosts: pages start at 0, 50, 100; the last has 20 and no next."""
        registry = registry_with(120)
        first = host_page(registry, NOW, HostQuery())
        self.assertEqual(len(first.rows), PAGE_SIZE)
        self.assertEqual(first.rows[0].id, "100000000")
        self.assertEqual(first.next_start, 50)
        second = host_page(registry, NOW, HostQuery(start=50))
        self.assertEqual(second.rows[0].id, "100000050")
        last = host_page(registry, NOW, HostQuery(start=100))
        self.assertEqual([r.id for r in last.rows][-1], "100000119")
        self.assertEqual(len(last.rows), 20)
        self.assertIsNone(last.next_start)
        self.assertEqual(scan_note(last), "Hosts 101\u2013120 of 120.")

    def test_start_past_the_end_is_an_empty_last_page(self) -> None:
        """A stale or forged start beyond the registry shows nothing, no error."""
        page = host_page(registry_with(3), NOW, HostQuery(start=10_000))
        self.assertEqual(page.rows, [])
        self.assertIsNone(page.next_start)
        self.assertIn("No hosts to show.", html(render_hosts(page, NOW, None)))

    def test_online_state_and_last_seen(self) -> None:
        """Loaded peers are offline, not seen since start; a registered one is online."""
        registry = registry_with(2, ["555666777"])
        page = host_page(registry, NOW + 5, HostQuery(), online=registry.online_count(NOW + 5))
        by_id = {r.id: r for r in page.rows}
        self.assertFalse(by_id["100000000"].online)
        self.assertIsNone(by_id["100000000"].last_seen)
        self.assertTrue(by_id["555666777"].online)
        text = html(render_hosts(page, NOW + 5, None))
        self.assertIn("1 online, 3 registered.", text)
        self.assertIn("5 s ago", text)
        self.assertIn("not since start", text)
        self.assertIn("198.51.0.1", text)


class FilterTests(SynchronousTestCase):
    def test_online_only(self) -> None:
        """The online filter keeps exactly the registered hosts."""
        registry = registry_with(300, ["700000001", "700000002"])
        page = host_page(registry, NOW, HostQuery(online=True))
        self.assertEqual([r.id for r in page.rows], ["700000001", "700000002"])
        self.assertIsNone(page.next_start)
        self.assertIn("Showing 2 matches", scan_note(page))

    def test_online_filter_after_timeout(self) -> None:
        """30 s after its registration a UDP host is offline and leaves the filter."""
        registry = registry_with(0, ["700000001"])
        self.assertEqual(host_page(registry, NOW + 31, HostQuery(online=True)).rows, [])

    def test_prefix_with_exact_id_first(self) -> None:
        """An exact id is shown first, then the other ids with that prefix."""
        registry = registry_with(0, ["1234567890", "123456789", "987654321"])
        page = host_page(registry, NOW, HostQuery(prefix="123456789"))
        assert page.exact is not None
        self.assertEqual(page.exact.id, "123456789")
        self.assertEqual([r.id for r in page.rows], ["1234567890"])
        text = html(render_hosts(page, NOW, None))
        self.assertLess(text.index(">123456789<"), text.index(">1234567890<"))
        self.assertNotIn("987654321", text)

    def test_scan_is_bounded_and_says_so(self) -> None:
        """A filtered page looks at most scan_limit peers, says how far it
        looked, and its next page continues from there to find the rest."""
        registry = registry_with(1000, ["700000001"])
        query = HostQuery(prefix="7")
        page = host_page(registry, NOW, query, scan_limit=400)
        self.assertEqual(page.rows, [])
        self.assertTrue(page.cut_short)
        self.assertEqual(page.next_start, 400)
        note = scan_note(page)
        self.assertIn("among hosts 1\u2013400 of 1001", note)
        self.assertIn("stopped at its limit", note)
        text = html(render_hosts(page, NOW, None))
        self.assertIn('href="/hosts?q=7&amp;start=400"', text)
        seen = []
        start: int | None = 0
        while start is not None:
            page = host_page(registry, NOW, HostQuery("7", False, start), scan_limit=400)
            seen += [r.id for r in page.rows]
            start = page.next_start
        self.assertEqual(seen, ["700000001"])

    def test_full_filtered_page_has_next(self) -> None:
        """60 matches: the first page has 50 and continues after the 50th."""
        ids = [str(800_000_000 + n) for n in range(60)]
        registry = registry_with(10, ids)
        page = host_page(registry, NOW, HostQuery(online=True))
        self.assertEqual(len(page.rows), PAGE_SIZE)
        self.assertFalse(page.cut_short)
        rest = host_page(registry, NOW, HostQuery(online=True, start=page.next_start or 0))
        self.assertEqual([r.id for r in page.rows + rest.rows], ids)


class RenderingTests(SynchronousTestCase):
    def test_sysinfo_columns_escaped(self) -> None:
        """Host-reported text is shown escaped: markup stays text."""
        registry = registry_with(0, ["123456789"])
        page = host_page(registry, NOW, HostQuery())
        info = {
            "123456789": {
                "os": "Linux",
                "hostname": "<script>alert(1)</script>",
                "version": "1.4.9",
                "username": 'a"b',
            }
        }
        text = html(render_hosts(page, NOW, info))
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", text)
        self.assertNotIn("<script>", text)
        self.assertIn("1.4.9", text)
        self.assertIn("Linux", text)

    def test_search_form_keeps_the_query(self) -> None:
        """The search box shows the (escaped) prefix; the online box stays ticked."""
        page = host_page(registry_with(1), NOW, HostQuery('"><b>', True))
        text = html(render_hosts(page, NOW, None))
        self.assertIn('value="&quot;&gt;&lt;b&gt;"', text)
        self.assertIn('checked="checked"', text)


class QueryTests(SynchronousTestCase):
    def test_parse(self) -> None:
        q = parse_host_query({b"q": [b" 1234 "], b"online": [b"1"], b"start": [b"150"]})
        self.assertEqual(q, HostQuery("1234", True, 150))
        self.assertEqual(q.url(200), "/hosts?q=1234&online=1&start=200")
        self.assertEqual(parse_host_query({b"start": [b"-5"]}), HostQuery())
        self.assertEqual(parse_host_query({b"start": [b"\xd9\xa3"]}), HostQuery())

    @given(
        st.dictionaries(
            st.sampled_from([b"q", b"online", b"start", b"other"]),
            st.lists(st.binary(max_size=300), max_size=3),
        )
    )
    def test_any_query_parses(self, args: dict[bytes, list[bytes]]) -> None:
        """Any URL arguments give a query within bounds, never an exception."""
        q = parse_host_query(args)
        self.assertLessEqual(len(q.prefix), MAX_PREFIX)
        self.assertGreaterEqual(q.start, 0)
        self.assertLess(q.start, 10**9)
        page = host_page(registry_with(3), NOW, q)
        self.assertLessEqual(len(page.rows), PAGE_SIZE)
