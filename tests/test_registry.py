"""Sans-IO tests of the rendezvous registry and IP blocker (hbbs 1.1.17 rules)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.ipblocker import IpBlocker
from litedesk.rendezvous.registry import PunchTarget, Registry
from litedesk.rendezvous.store import PeerRecord

OK = rz.RegisterPkResponse.OK
UUID_MISMATCH = rz.RegisterPkResponse.UUID_MISMATCH
TOO_FREQUENT = rz.RegisterPkResponse.TOO_FREQUENT
UUID = b"0123456789abcdef0123456789abcdef"
PK = bytes([7]) * 32
A = ("198.51.100.7", 40000)
B = ("203.0.113.9", 50000)


class RegisterPeerTests(SynchronousTestCase):
    def test_new_id_asks_for_key(self) -> None:
        """A heartbeat from an unknown id is answered with request_pk (vector 3)."""
        reg = Registry()
        out = reg.register_peer("123456789", 3, A, 0.0)
        assert out is not None
        self.assertTrue(out.request_pk)
        self.assertFalse(out.send_config_update)

    def test_empty_id_ignored(self) -> None:
        """A heartbeat without an id gets no reply at all."""
        self.assertIsNone(Registry().register_peer("", 3, A, 0.0))

    def test_known_peer_heartbeat_keeps_it_online(self) -> None:
        """After RegisterPk, heartbeats from the same IP need no key and keep the peer online."""
        reg = Registry()
        self.assertEqual(reg.register_pk("123456789", UUID, PK, A, 0.0).result, OK)
        out = reg.register_peer("123456789", 3, A, 20.0)
        assert out is not None
        self.assertFalse(out.request_pk)
        self.assertEqual(reg.punch_target("123456789", 49.0)[0], PunchTarget.ONLINE)
        self.assertEqual(reg.punch_target("123456789", 50.0)[0], PunchTarget.OFFLINE)

    def test_ip_change_asks_for_key_again(self) -> None:
        """A heartbeat from a new public IP is answered with request_pk and not accepted."""
        reg = Registry()
        reg.register_pk("123456789", UUID, PK, A, 0.0)
        out = reg.register_peer("123456789", 3, B, 10.0)
        assert out is not None
        self.assertTrue(out.request_pk)
        peer = reg.get("123456789")
        assert peer is not None
        self.assertEqual(peer.addr, A)

    def test_loopback_ip_change_is_not_a_change(self) -> None:
        """hbbs ignores IP changes to loopback sources."""
        reg = Registry()
        reg.register_pk("123456789", UUID, PK, A, 0.0)
        out = reg.register_peer("123456789", 3, ("127.0.0.1", 5), 10.0)
        assert out is not None
        self.assertFalse(out.request_pk)

    def test_config_update_when_server_serial_newer(self) -> None:
        """A client with an older serial is sent a ConfigUpdate (vector 9)."""
        reg = Registry(server_serial=5)
        out = reg.register_peer("123456789", 3, A, 0.0)
        assert out is not None
        self.assertTrue(out.send_config_update)
        out = reg.register_peer("123456789", 5, A, 0.0)
        assert out is not None
        self.assertFalse(out.send_config_update)

    def test_peer_loaded_from_disk_is_asked_once(self) -> None:
        """After a restart a stored peer is offline and its first heartbeat asks for the key."""
        reg = Registry()
        reg.load([PeerRecord(b"g" * 16, "123456789", UUID, PK, "::ffff:198.51.100.7")])
        self.assertEqual(reg.punch_target("123456789", 0.0)[0], PunchTarget.OFFLINE)
        out = reg.register_peer("123456789", 3, A, 0.0)
        assert out is not None
        self.assertTrue(out.request_pk)
        # Same uuid and key from the stored (normalised) IP: accepted without a DB write.
        res = reg.register_pk("123456789", UUID, PK, A, 1.0)
        self.assertEqual(res.result, OK)
        self.assertIsNone(res.persist)
        # From then on it is online and its heartbeats are accepted as usual.
        self.assertEqual(reg.punch_target("123456789", 2.0)[0], PunchTarget.ONLINE)
        out = reg.register_peer("123456789", 3, A, 2.0)
        assert out is not None
        self.assertFalse(out.request_pk)


class RegisterPkTests(SynchronousTestCase):
    def test_accept_and_persist(self) -> None:
        """A first RegisterPk is accepted, the peer goes online and must be stored (vector 4)."""
        reg = Registry()
        res = reg.register_pk("123456789", UUID, PK, A, 0.0)
        self.assertEqual(res.result, OK)
        assert res.persist is not None
        self.assertEqual(
            (res.persist.id, res.persist.uuid, res.persist.pk), ("123456789", UUID, PK)
        )
        self.assertEqual(res.persist.ip, A[0])
        self.assertEqual(reg.punch_target("123456789", 1.0)[0], PunchTarget.ONLINE)

    def test_empty_uuid_or_pk_no_reply(self) -> None:
        """RegisterPk without uuid or key gets no reply (vector 5)."""
        reg = Registry()
        self.assertIsNone(reg.register_pk("123456789", b"", PK, A, 0).result)
        self.assertIsNone(reg.register_pk("123456789", UUID, b"", A, 0).result)
        self.assertIsNone(reg.get("123456789"))

    def test_short_id_is_uuid_mismatch(self) -> None:
        """An id of 5 characters is refused with UUID_MISMATCH, as hbbs does (vector 5)."""
        self.assertEqual(Registry().register_pk("12345", UUID, PK, A, 0).result, UUID_MISMATCH)

    def test_other_uuid_refused(self) -> None:
        """An id bound to one uuid cannot be taken by another device (vector 6)."""
        reg = Registry()
        reg.register_pk("123456789", UUID, PK, A, 0)
        res = reg.register_pk("123456789", b"x" * 32, PK, A, 10)
        self.assertEqual(res.result, UUID_MISMATCH)
        peer = reg.get("123456789")
        assert peer is not None
        self.assertEqual(peer.uuid, UUID)

    def test_new_key_from_other_ip_refused(self) -> None:
        """Same uuid with a new key from another IP is UUID_MISMATCH (vector 6)."""
        reg = Registry()
        reg.register_pk("123456789", UUID, PK, A, 0)
        res = reg.register_pk("123456789", UUID, b"\x08" * 32, B, 10)
        self.assertEqual(res.result, UUID_MISMATCH)

    def test_new_key_from_same_ip_accepted(self) -> None:
        """Same uuid with a new key from the same IP replaces the key (vector 6)."""
        reg = Registry()
        reg.register_pk("123456789", UUID, PK, A, 0)
        res = reg.register_pk("123456789", UUID, b"\x08" * 32, A, 10)
        self.assertEqual(res.result, OK)
        assert res.persist is not None
        peer = reg.get("123456789")
        assert peer is not None
        self.assertEqual(peer.pk, b"\x08" * 32)

    def test_same_key_new_ip_accepted(self) -> None:
        """A host that moved keeps its id when uuid and key are the same."""
        reg = Registry()
        reg.register_pk("123456789", UUID, PK, A, 0)
        res = reg.register_pk("123456789", UUID, PK, B, 10)
        self.assertEqual((res.result, res.reason), (OK, "ip changed"))
        peer = reg.get("123456789")
        assert peer is not None
        self.assertEqual(peer.addr, B)

    def test_per_id_rate_limit(self) -> None:
        """The 4th RegisterPk for one id within 6 s is TOO_FREQUENT; 6 s later it works (7)."""
        reg = Registry()
        results = [reg.register_pk("123456789", UUID, PK, A, t).result for t in (0, 1, 2, 3)]
        self.assertEqual(results, [OK, OK, OK, TOO_FREQUENT])
        self.assertEqual(reg.register_pk("123456789", UUID, PK, A, 3 + 6.01).result, OK)

    def test_per_ip_rate_limit(self) -> None:
        """The 33rd RegisterPk from one IP within 60 s is TOO_FREQUENT; 60 s later OK (8)."""
        reg = Registry()
        results = [
            reg.register_pk(f"id{i:07d}", UUID + bytes([i]), PK, A, i * 0.5).result
            for i in range(33)
        ]
        self.assertEqual(results[:32], [OK] * 32)
        self.assertEqual(results[32], TOO_FREQUENT)
        # Still refused while inside the window of the last allowed request...
        self.assertEqual(
            reg.register_pk("idlate01", UUID, PK, A, 31 * 0.5 + 59).result, TOO_FREQUENT
        )
        # ...and allowed once 60 s have passed since it.
        self.assertEqual(reg.register_pk("idlate02", UUID, PK, A, 31 * 0.5 + 60.5).result, OK)

    def test_online_states_bitmap(self) -> None:
        """OnlineResponse is a bitmap, most significant bit first (vector 19)."""
        reg = Registry()
        reg.register_pk("123456789", UUID, PK, A, 0)
        reg.register_pk("555555555", UUID, PK, B, 0)
        states = reg.online_states(["123456789", "987654321", "555555555"], 1.0)
        self.assertEqual(states, b"\xa0")
        nine = ["123456789"] + [f"x{i}" for i in range(7)] + ["555555555"]
        self.assertEqual(reg.online_states(nine, 1.0), b"\x80\x80")
        self.assertEqual(reg.online_states(nine, 31.0), b"\x00\x00")

    def test_relay_target_needs_memory(self) -> None:
        """RequestRelay is forwarded only to ids seen since start (not DB-only ones)."""
        reg = Registry()
        reg.load([PeerRecord(b"g" * 16, "111111111", UUID, PK, "1.2.3.4")])
        self.assertIsNone(reg.relay_target("111111111"))
        self.assertIsNone(reg.relay_target("nobody"))
        reg.register_pk("123456789", UUID, PK, A, 0)
        self.assertIsNotNone(reg.relay_target("123456789"))


class IpBlockerTests(SynchronousTestCase):
    def test_distinct_ids_per_day(self) -> None:
        """One IP can bind about 300 distinct ids a day; known ids keep working."""
        blocker = IpBlocker()
        t = 0.0
        allowed = 0
        for i in range(400):
            t += 61  # stay clear of the per-minute limit
            if blocker.allow("1.2.3.4", f"id{i}", t):
                allowed += 1
        self.assertEqual(allowed, 302)
        self.assertTrue(blocker.allow("1.2.3.4", "id5", t + 61))
        self.assertTrue(blocker.allow("1.2.3.4", "brand-new", t + 61 + 86401))

    def test_prune_forgets_idle_ips(self) -> None:
        """Entries idle for a day are dropped so memory stays bounded."""
        blocker = IpBlocker()
        blocker.allow("1.2.3.4", "x", 0)
        self.assertEqual(blocker.prune(100), 0)
        self.assertEqual(blocker.prune(86401 + 61), 1)
        self.assertEqual(len(blocker), 0)


class RegistryPropertyTests(SynchronousTestCase):
    @settings(max_examples=200)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["register_peer", "register_pk", "punch"]),
                st.sampled_from(["123456789", "12345", "", "abcdefgh", "x" * 120]),
                st.sampled_from([b"", UUID, b"u" * 16]),
                st.sampled_from([b"", PK, b"\x01" * 32]),
                st.sampled_from([A, B, ("127.0.0.1", 1), ("::1", 2)]),
                st.floats(min_value=0, max_value=10),
            ),
            max_size=60,
        )
    )
    def test_invariants(self, ops: list[Any]) -> None:
        """Any sequence of requests keeps ids bound to one uuid and online peers addressable."""
        reg = Registry()
        now = 0.0
        bound: dict[str, bytes] = {}
        for op, pid, uuid, pk, src, dt in ops:
            now += dt
            if op == "register_peer":
                reg.register_peer(pid, 3, src, now)
            elif op == "register_pk":
                res = reg.register_pk(pid, uuid, pk, src, now)
                if res.result == OK and res.persist is not None:
                    self.assertEqual(bound.setdefault(pid, uuid), uuid)
            else:
                state, peer = reg.punch_target(pid, now)
                if state is PunchTarget.ONLINE:
                    assert peer is not None
                    self.assertIsNotNone(peer.addr)
                    self.assertTrue(peer.pk)
        for peer in reg:
            self.assertTrue(peer.uuid)
            self.assertEqual(bound[peer.id], peer.uuid)
