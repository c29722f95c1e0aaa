"""Sans-IO tests of the host's registration state machine and identity files."""

from __future__ import annotations

import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from litedesk.host.identity import IdentityError, load_or_create_identity
from litedesk.host.registration import Registration, RegState
from litedesk.proto import rendezvous_pb2 as rz

PK = b"\x07" * 32


def rpr(request_pk: bool) -> rz.RendezvousMessage:
    return rz.RendezvousMessage(
        register_peer_response=rz.RegisterPeerResponse(request_pk=request_pk)
    )


def pkr(result: int) -> rz.RendezvousMessage:
    return rz.RendezvousMessage(register_pk_response=rz.RegisterPkResponse(result=result))  # type: ignore[arg-type]


class RegistrationTests(SynchronousTestCase):
    def test_first_contact_sends_key(self) -> None:
        """A new host sends RegisterPk first, then heartbeats every 15 s once confirmed."""
        reg = Registration("123456789", b"uuid", PK)
        out = reg.tick(0)
        self.assertEqual([m.WhichOneof("union") for m in out.send], ["register_pk"])
        out = reg.received(pkr(rz.RegisterPkResponse.OK), 0.1)
        self.assertEqual([e.kind for e in out.events], ["registered"])
        # A heartbeat right away, so the server learns this socket's address.
        self.assertEqual([m.WhichOneof("union") for m in out.send], ["register_peer"])
        reg.received(rpr(False), 0.2)
        self.assertEqual(reg.tick(10).send, [])
        hb = reg.tick(15.3).send
        self.assertEqual([m.WhichOneof("union") for m in hb], ["register_peer"])
        self.assertEqual(hb[0].register_peer.serial, 3)

    def test_request_pk_answered_at_once(self) -> None:
        """When the server asks for the key (e.g. after its restart) RegisterPk goes out now."""
        reg = Registration("123456789", b"uuid", PK)
        reg.tick(0)
        reg.received(pkr(rz.RegisterPkResponse.OK), 0)
        reg.tick(15)
        out = reg.received(rpr(True), 15.01)
        self.assertEqual([m.WhichOneof("union") for m in out.send], ["register_pk"])
        self.assertFalse(reg.key_confirmed)

    def test_retransmit_and_unreachable(self) -> None:
        """Unanswered requests are resent every 3 s and reported once as unreachable."""
        reg = Registration("123456789", b"uuid", PK)
        reg.tick(0)
        self.assertEqual(reg.tick(2).send, [])
        self.assertEqual(len(reg.tick(3).send), 1)
        out = reg.tick(6)
        self.assertEqual(len(out.send), 1)
        self.assertEqual([e.kind for e in out.events], ["unreachable"])
        self.assertEqual(reg.state, RegState.UNREACHABLE)
        self.assertEqual(reg.tick(9).events, [])
        out = reg.received(pkr(rz.RegisterPkResponse.OK), 9.5)
        self.assertEqual([e.kind for e in out.events], ["reachable", "registered"])

    def test_uuid_mismatch_stops_and_explains(self) -> None:
        """UUID_MISMATCH is reported with what to do, and the host stops hammering the server."""
        reg = Registration("123456789", b"uuid", PK)
        reg.tick(0)
        out = reg.received(pkr(rz.RegisterPkResponse.UUID_MISMATCH), 0.1)
        self.assertEqual(out.events[0].kind, "refused")
        self.assertIn("another machine", out.events[0].detail)
        self.assertIn("--id", out.events[0].detail)
        self.assertEqual(reg.tick(100).send, [])

    def test_too_frequent_backs_off(self) -> None:
        """TOO_FREQUENT pauses registration for 30 s, then retries."""
        reg = Registration("123456789", b"uuid", PK)
        reg.tick(0)
        out = reg.received(pkr(rz.RegisterPkResponse.TOO_FREQUENT), 0.1)
        self.assertIn("TOO_FREQUENT", out.events[0].detail)
        self.assertEqual(reg.tick(20).send, [])
        self.assertEqual(len(reg.tick(31).send), 1)

    def test_config_update(self) -> None:
        """A newer ConfigUpdate raises the stored serial and is reported."""
        reg = Registration("123456789", b"uuid", PK)
        cu = rz.RendezvousMessage(
            configure_update=rz.ConfigUpdate(serial=9, rendezvous_servers=["a", "b"])
        )
        out = reg.received(cu, 0)
        self.assertEqual((out.events[0].kind, out.events[0].detail), ("config_update", "a,b"))
        self.assertEqual(reg.serial, 9)
        self.assertEqual(reg.received(cu, 1).events, [])


class IdentityTests(SynchronousTestCase):
    def test_created_once_with_private_modes(self) -> None:
        """First start creates id, uuid and key (0600 in a 0700 dir); later starts reuse them."""
        d = Path(self.mktemp())
        first = load_or_create_identity(d)
        self.assertRegex(first.peer_id, r"^[1-9]\d{8}$")
        self.assertEqual(stat.S_IMODE(d.stat().st_mode), 0o700)
        for name in ("id", "uuid", "id_ed25519", "id_ed25519.pub"):
            self.assertEqual(stat.S_IMODE((d / name).stat().st_mode), 0o600, name)
        again = load_or_create_identity(d)
        self.assertEqual(
            (again.peer_id, again.uuid, again.public_key),
            (first.peer_id, first.uuid, first.public_key),
        )

    def test_requested_id(self) -> None:
        """--id replaces the stored id; an invalid one is refused with a reason."""
        d = Path(self.mktemp())
        self.assertEqual(load_or_create_identity(d, "office-pc1").peer_id, "office-pc1")
        self.assertEqual(load_or_create_identity(d).peer_id, "office-pc1")
        with self.assertRaises(IdentityError):
            load_or_create_identity(d, "ab")
