"""Checks that the committed protobuf modules match protos/ and RustDesk's numbering.

The generated files in litedesk/proto are committed so that installing
LiteDesk needs no protoc; these tests catch a .proto edited without
regenerating, and a field number drifting from docs/protocol.rst §4.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2
from litedesk.proto import rendezvous_pb2 as rz

from .support.skips import cannot_run

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "protos"
GENERATED_DIR = REPO_ROOT / "litedesk" / "proto"
GRPC_TOOLS_VERSION = "1.85.1"
REGENERATE = (
    "python -m grpc_tools.protoc -Iprotos --python_out=litedesk/proto "
    "--pyi_out=litedesk/proto protos/rendezvous.proto protos/message.proto "
    f"(grpcio-tools {GRPC_TOOLS_VERSION}, from the repository root)"
)

# §4.1: RendezvousMessage oneof "union".
RENDEZVOUS_UNION = {
    "register_peer": (6, "RegisterPeer"),
    "register_peer_response": (7, "RegisterPeerResponse"),
    "punch_hole_request": (8, "PunchHoleRequest"),
    "punch_hole": (9, "PunchHole"),
    "punch_hole_sent": (10, "PunchHoleSent"),
    "punch_hole_response": (11, "PunchHoleResponse"),
    "fetch_local_addr": (12, "FetchLocalAddr"),
    "local_addr": (13, "LocalAddr"),
    "configure_update": (14, "ConfigUpdate"),
    "register_pk": (15, "RegisterPk"),
    "register_pk_response": (16, "RegisterPkResponse"),
    "software_update": (17, "SoftwareUpdate"),
    "request_relay": (18, "RequestRelay"),
    "relay_response": (19, "RelayResponse"),
    "test_nat_request": (20, "TestNatRequest"),
    "test_nat_response": (21, "TestNatResponse"),
    "peer_discovery": (22, "PeerDiscovery"),
    "online_request": (23, "OnlineRequest"),
    "online_response": (24, "OnlineResponse"),
    "key_exchange": (25, "KeyExchange"),
    "hc": (26, "HealthCheck"),
    "http_proxy_request": (27, "HttpProxyRequest"),
    "http_proxy_response": (28, "HttpProxyResponse"),
}

# §4.3: (message, {field name: number}) for the messages hbbs handles.
MESSAGE_FIELDS: dict[str, dict[str, int]] = {
    "RegisterPeer": {"id": 1, "serial": 2},
    "RegisterPeerResponse": {"request_pk": 2},
    "PunchHoleRequest": {
        "id": 1,
        "nat_type": 2,
        "licence_key": 3,
        "conn_type": 4,
        "token": 5,
        "version": 6,
        "udp_port": 7,
        "force_relay": 8,
        "upnp_port": 9,
        "socket_addr_v6": 10,
        "switch_code": 11,
    },
    "PunchHole": {
        "socket_addr": 1,
        "relay_server": 2,
        "nat_type": 3,
        "udp_port": 4,
        "force_relay": 5,
        "upnp_port": 6,
        "socket_addr_v6": 7,
        "control_permissions": 8,
        "controlled_context": 9,
    },
    "PunchHoleSent": {
        "socket_addr": 1,
        "id": 2,
        "relay_server": 3,
        "nat_type": 4,
        "version": 5,
        "upnp_port": 6,
        "socket_addr_v6": 7,
    },
    "RegisterPk": {"id": 1, "uuid": 2, "pk": 3, "old_id": 4, "no_register_device": 5},
    "RegisterPkResponse": {"result": 1, "keep_alive": 2},
    "PunchHoleResponse": {
        "socket_addr": 1,
        "pk": 2,
        "failure": 3,
        "relay_server": 4,
        "nat_type": 5,
        "is_local": 6,
        "other_failure": 7,
        "feedback": 8,
        "is_udp": 9,
        "upnp_port": 10,
        "socket_addr_v6": 11,
    },
    "ConfigUpdate": {"serial": 1, "rendezvous_servers": 2},
    "RequestRelay": {
        "id": 1,
        "uuid": 2,
        "socket_addr": 3,
        "relay_server": 4,
        "secure": 5,
        "licence_key": 6,
        "conn_type": 7,
        "token": 8,
        "control_permissions": 9,
        "controlled_context": 10,
        "switch_code": 11,
    },
    "RelayResponse": {
        "socket_addr": 1,
        "uuid": 2,
        "relay_server": 3,
        "id": 4,
        "pk": 5,
        "refuse_reason": 6,
        "version": 7,
        "feedback": 9,
        "socket_addr_v6": 10,
        "upnp_port": 11,
    },
    "FetchLocalAddr": {
        "socket_addr": 1,
        "relay_server": 2,
        "socket_addr_v6": 3,
        "control_permissions": 4,
        "controlled_context": 5,
    },
    "LocalAddr": {
        "socket_addr": 1,
        "local_addr": 2,
        "relay_server": 3,
        "id": 4,
        "version": 5,
        "socket_addr_v6": 6,
    },
    "TestNatRequest": {"serial": 1},
    "TestNatResponse": {"port": 1, "cu": 2},
    "OnlineRequest": {"id": 1, "peers": 2},
    "OnlineResponse": {"states": 1},
    "KeyExchange": {"keys": 1},
}


def _generate(out_dir: Path) -> None:
    protos = sorted(p.relative_to(REPO_ROOT).as_posix() for p in PROTO_DIR.glob("*.proto"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iprotos",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            *protos,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise AssertionError(f"protoc failed ({result.returncode}):\n{result.stderr}")


class GeneratedCodeTests(SynchronousTestCase):
    def test_generated_files_current(self) -> None:
        """
        Regenerating every protos/*.proto with the pinned grpcio-tools gives
        byte-identical .py and .pyi files to the committed ones in
        litedesk/proto; otherwise the failure names the stale file and the
        command that regenerates it.
        """
        try:
            installed = importlib.metadata.version("grpcio-tools")
        except importlib.metadata.PackageNotFoundError:
            cannot_run("grpcio-tools is not installed (pip install -e .[test])")
        if installed != GRPC_TOOLS_VERSION:
            cannot_run(
                f"grpcio-tools {installed} installed; the committed code is from "
                f"{GRPC_TOOLS_VERSION}, whose output differs"
            )
        with tempfile.TemporaryDirectory() as tmp:
            out_dir = Path(tmp)
            _generate(out_dir)
            generated = sorted(p.name for p in out_dir.iterdir())
            expected = sorted(
                f"{p.stem}_pb2{suffix}"
                for p in PROTO_DIR.glob("*.proto")
                for suffix in (".py", ".pyi")
            )
            self.assertEqual(generated, expected)
            for name in generated:
                committed = GENERATED_DIR / name
                with self.subTest(file=name):
                    if not committed.exists():
                        self.fail(
                            f"litedesk/proto/{name} is missing; regenerate with: {REGENERATE}"
                        )
                    if (out_dir / name).read_bytes() != committed.read_bytes():
                        self.fail(f"litedesk/proto/{name} is stale; regenerate with: {REGENERATE}")


def _fields(descriptor: Any) -> dict[str, int]:
    return {field.name: field.number for field in descriptor.fields}


def _type_name(field: Any) -> str | None:
    return field.message_type.name if field.message_type is not None else None


class FieldNumberTests(SynchronousTestCase):
    def test_rendezvous_union(self) -> None:
        """
        Every RendezvousMessage member has RustDesk's field number (6..28)
        and type, all are in the "union" oneof, and there are no others, so
        clients and our server read each other's messages.
        """
        descriptor = rz.RendezvousMessage.DESCRIPTOR
        union = descriptor.oneofs_by_name["union"]
        self.assertEqual(
            {f.name: (f.number, _type_name(f)) for f in union.fields}, RENDEZVOUS_UNION
        )
        self.assertEqual(len(descriptor.fields), len(RENDEZVOUS_UNION))
        self.assertEqual(descriptor.full_name, "hbb.RendezvousMessage")

    def test_message_fields(self) -> None:
        """
        The messages hbbs exchanges have RustDesk's field numbers (§4.3);
        the generated code may have more fields than listed but not
        different numbers.
        """
        for name, expected in MESSAGE_FIELDS.items():
            with self.subTest(message=name):
                actual = _fields(rz.DESCRIPTOR.message_types_by_name[name])
                self.assertEqual({k: actual.get(k) for k in expected}, expected)

    def test_oneofs(self) -> None:
        """
        PunchHoleResponse's nat_type/is_local and RelayResponse's id/pk are
        oneof members (so nat_type 0 is still sent, §4.3).
        """
        for message, members in [
            ("PunchHoleResponse", {"nat_type", "is_local"}),
            ("RelayResponse", {"id", "pk"}),
        ]:
            with self.subTest(message=message):
                descriptor = rz.DESCRIPTOR.message_types_by_name[message]
                union = descriptor.oneofs_by_name["union"]
                self.assertEqual({f.name for f in union.fields}, members)

    def test_enums(self) -> None:
        """
        Enum values match §4.2, including the gaps (no value 1 in
        RegisterPkResponse.Result or PunchHoleResponse.Failure).
        """
        self.assertEqual(
            dict(rz.NatType.items()), {"UNKNOWN_NAT": 0, "ASYMMETRIC": 1, "SYMMETRIC": 2}
        )
        self.assertEqual(
            dict(rz.ConnType.items()),
            {
                "DEFAULT_CONN": 0,
                "FILE_TRANSFER": 1,
                "PORT_FORWARD": 2,
                "RDP": 3,
                "VIEW_CAMERA": 4,
                "TERMINAL": 5,
            },
        )
        self.assertEqual(
            dict(rz.RegisterPkResponse.Result.items()),
            {
                "OK": 0,
                "UUID_MISMATCH": 2,
                "ID_EXISTS": 3,
                "TOO_FREQUENT": 4,
                "INVALID_ID_FORMAT": 5,
                "NOT_SUPPORT": 6,
                "SERVER_ERROR": 7,
                "NOT_DEPLOYED": 8,
            },
        )
        self.assertEqual(
            dict(rz.PunchHoleResponse.Failure.items()),
            {"ID_NOT_EXIST": 0, "OFFLINE": 2, "LICENSE_MISMATCH": 3, "LICENSE_OVERUSE": 4},
        )

    def test_idpk(self) -> None:
        """
        IdPk, the message the server signs for viewers, is hbb.IdPk with id
        = 1 and pk = 2.
        """
        descriptor = message_pb2.IdPk.DESCRIPTOR
        self.assertEqual(descriptor.full_name, "hbb.IdPk")
        fields = _fields(descriptor)
        self.assertEqual((fields["id"], fields["pk"]), (1, 2))
