"""The host key a punch answer carries is signed once per host key and reused.

Signing costs more than the rest of a punch answer, and an Ed25519
signature of the same C{IdPk} is always the same, so the server keeps the
signed C{IdPk} of each (id, key); a host that registers a new key must get
its new key signed, never the old one, and the kept signatures are bounded.
"""

from __future__ import annotations

from nacl.signing import SigningKey
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous import punch_requests
from litedesk.rendezvous.registry import Registry
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.server import RendezvousServer
from litedesk.wire.keys import ServerKey, public_b64, verify_id_pk

KEY = SigningKey(bytes(range(32)))
UUID = b"signed-ids-test-uuid"


def _register(server: RendezvousServer, peer_id: str, pk: bytes) -> None:
    msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=peer_id, uuid=UUID, pk=pk))
    server.handle_datagram(msg.SerializeToString(), ("198.51.100.7", 40000))


class SignedIdTests(SynchronousTestCase):
    def setUp(self) -> None:
        clock = Clock()
        clock.advance(1000)
        self.server = RendezvousServer(
            clock=clock,
            registry=Registry(),
            key=ServerKey(public_b64(KEY), KEY),
            relays=RelayList([]),
        )

    def test_new_key_gets_its_own_signature(self) -> None:
        """The same answer twice while the key stands; the new key once the host changes it."""
        _register(self.server, "123456789", b"a" * 32)
        first = self.server._signed_pk("1.4.9", "123456789")
        self.assertEqual(verify_id_pk(bytes(KEY.verify_key), first), ("123456789", b"a" * 32))
        self.assertEqual(self.server._signed_pk("1.4.9", "123456789"), first)
        _register(self.server, "123456789", b"b" * 32)
        second = self.server._signed_pk("1.4.9", "123456789")
        self.assertEqual(verify_id_pk(bytes(KEY.verify_key), second), ("123456789", b"b" * 32))

    def test_bounded(self) -> None:
        """Asked for more hosts than the cache holds, it is cleared, and answers stay right."""
        self.patch(punch_requests, "SIGNED_IDS_MAX", 3)
        for i in range(5):
            _register(self.server, f"10000000{i}", bytes([i]) * 32)
            signed = self.server._signed_pk("1.4.9", f"10000000{i}")
            self.assertEqual(
                verify_id_pk(bytes(KEY.verify_key), signed), (f"10000000{i}", bytes([i]) * 32)
            )
            self.assertLessEqual(len(self.server._signed_ids), 3)
