"""A real litedesk-relay on loopback for the API tests: users, a registered host, a client.

L{ApiServerCase} starts the whole server in-process (rendezvous, relay,
HTTP listener on ephemeral loopback ports, L{tests.rendezvous_harness}),
with users written to its ops database beforehand the way
C{litedesk-admin user add} writes them, and hands out
L{tests.support.rustdesk_api_client.ApiClient}s whose blocking calls run
in a thread (L{ApiServerCase.call}).  L{ApiServerCase.register_host}
registers a host id and uuid with a real UDP C{RegisterPk}.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from litedesk.ops import users
from litedesk.ops.opsdb import OPS_DB_FILE, connect, ensure_schema
from litedesk.proto import rendezvous_pb2 as rz
from tests.rendezvous_harness import TIMEOUT, start_server, udp_client, with_timeout
from tests.support.rustdesk_api_client import ApiClient

__all__ = ["PASSWORD", "ApiServerCase"]

PASSWORD = "correct horse battery"


class ApiServerCase(TestCase):
    """Trial case with helpers to run a server and talk to its API."""

    timeout = 120

    def start(self, *extra: str, admins: tuple[str, ...] = ("root",), **accounts: bool) -> Any:
        """A running server; C{accounts}: user name -> disabled, plus C{admins}.

        Returns the server; its accounts are loaded once C{self.ready} fires.
        """
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        with contextlib.closing(connect(data_dir / OPS_DB_FILE)) as conn:
            ensure_schema(conn, users.SCHEMA)
            for name in admins:
                users.add_user(conn, name, PASSWORD, admin=True)
            for name, disabled in accounts.items():
                users.add_user(conn, name, PASSWORD)
                if disabled:
                    users.set_disabled(conn, name, True)
            conn.commit()
        self.data_dir = data_dir
        svc = start_server(data_dir, "--key", "", *extra)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        self.svc = svc
        self.ready: Deferred[None] = svc.accounts.loaded
        return svc

    def read_db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """C{fn(connection, *args)} on a connection of our own to the ops database file."""
        with contextlib.closing(connect(self.data_dir / OPS_DB_FILE)) as conn:
            return fn(conn, *args)

    def devices(self) -> Any:
        """The API's heartbeat state (L{litedesk.api.devices.Devices}) of the running server."""
        return self.svc.api.factory.resource.children[b"api"].devices

    def client(self) -> ApiClient:
        return ApiClient(self.svc.api.listening.getHost().port)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        """C{fn(*args)} (a blocking client call) in a thread, with a deadline."""
        return with_timeout(deferToThread(fn, *args, **kwargs), 6 * TIMEOUT)

    @inlineCallbacks
    def register_host(self, peer_id: str, raw_uuid: bytes) -> Any:
        """Register C{peer_id} with C{raw_uuid} by UDP RegisterPk, as a host does."""
        client = udp_client()
        assert client.transport is not None
        self.addCleanup(client.transport.stopListening)
        msg = rz.RendezvousMessage(
            register_pk=rz.RegisterPk(id=peer_id, uuid=raw_uuid, pk=bytes([7]) * 32)
        )
        client.send(msg.SerializeToString(), self.svc.rendezvous_udp.listening.getHost().port)
        data, _ = yield client.recv()
        reply = rz.RendezvousMessage()
        reply.ParseFromString(data)
        assert reply.register_pk_response.result == rz.RegisterPkResponse.OK, reply
