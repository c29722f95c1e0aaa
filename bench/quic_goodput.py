"""Bulk goodput of aioquic's QUIC against Linux TCP through the NAT lab's lossy link.

Run as root from the repository root, one benchmark at a time::

    flock /tmp/bench.lock .venv/bin/python bench/quic_goodput.py [--size BYTES]
        [--delay S] [--loss P] [--rate BIT/S]

Why: on issue 14's lossy link (40 ms RTT, 2 % loss, 20 Mbit/s) QUIC sessions
of bench/connect.py --lossy fell far behind TCP, while delay alone or loss
alone did not hurt them.  This isolates the transport: one stream of
C{--size} bytes from the lab's public namespace to v2 (behind r2, where
tests/support/lossy_link.py puts the link), over aioquic's
C{QuicConnection} (the one LiteDesk's litedesk/quic drives) with aioquic's
congestion controllers (C{reno}, C{cubic}) and the sessions' own
(C{litedesk-bbr}, litedesk/quic/bbr.py), and over a plain TCP socket
(Linux's CUBIC, SACK, RACK), in the same lab and run.  QUIC's goodput is
printed as a ratio to TCP's.  The server and client are aioquic's asyncio
API in a few lines (below), not LiteDesk's session code: the figure is what
the transport allows, the ceiling any session on it can reach.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.lossy_link import lossy_link  # noqa: E402
from tests.support.natlab import PUB_V4, PYTHON, NatLab  # noqa: E402
from tests.support.skips import missing  # noqa: E402

PORT = 4433
TCP_PORT = 4434
ALPN = "bench-goodput"

# -- the two ends, run in the lab's namespaces as this program ----------------------


def _certificate(directory: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=36500))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(key_path).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def _quic_server(cc: str, size: int, directory: str) -> None:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.asyncio.server import serve
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import QuicEvent, StreamDataReceived

    import litedesk.quic.bbr  # noqa: F401  (registers litedesk-bbr, the sessions' controller)

    class Sender(QuicConnectionProtocol):
        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, StreamDataReceived) and event.end_stream:
                self._quic.send_stream_data(event.stream_id, os.urandom(size), end_stream=True)
                self.transmit()

    cfg = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], congestion_control_algorithm=cc)
    cfg.load_cert_chain(*_certificate(directory))
    await serve(PUB_V4, PORT, configuration=cfg, create_protocol=Sender)
    print("ready", flush=True)
    await asyncio.sleep(600)


async def _quic_client(cc: str) -> None:
    from aioquic.asyncio.client import connect
    from aioquic.quic.configuration import QuicConfiguration

    import litedesk.quic.bbr  # noqa: F401

    cfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        verify_mode=ssl.CERT_NONE,
        congestion_control_algorithm=cc,
    )
    async with connect(PUB_V4, PORT, configuration=cfg) as proto:
        reader, writer = await proto.create_stream()
        t0 = time.monotonic()
        writer.write(b"go")
        writer.write_eof()
        n = 0
        while chunk := await reader.read(65536):
            n += len(chunk)
        print(f"{n} {time.monotonic() - t0}", flush=True)


def _tcp_server(size: int) -> None:
    import socket

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((PUB_V4, TCP_PORT))
    s.listen(1)
    print("ready", flush=True)
    conn, _ = s.accept()
    conn.sendall(os.urandom(size))
    conn.close()


def _tcp_client() -> None:
    import socket

    t0 = time.monotonic()
    conn = socket.create_connection((PUB_V4, TCP_PORT), timeout=120)
    n = 0
    while chunk := conn.recv(65536):
        n += len(chunk)
    print(f"{n} {time.monotonic() - t0}", flush=True)


def _end(argv: list[str]) -> None:
    """C{end quic-server CC SIZE DIR | quic-client CC | tcp-server SIZE | tcp-client}."""
    role = argv[0]
    if role == "quic-server":
        asyncio.run(_quic_server(argv[1], int(argv[2]), argv[3]))
    elif role == "quic-client":
        asyncio.run(_quic_client(argv[1]))
    elif role == "tcp-server":
        _tcp_server(int(argv[1]))
    else:
        _tcp_client()


# -- the benchmark ---------------------------------------------------------------------


def transfer(lab: NatLab, server: list[str], client: list[str]) -> float:
    """Start C{server} in pub, run C{client} in v2; return the goodput in Mbit/s."""
    me = [PYTHON, str(Path(__file__).resolve()), "end"]
    srv = lab.popen("pub", [*me, *server], stdout=subprocess.PIPE)
    try:
        assert srv.stdout is not None
        if srv.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"{server[0]} did not start")
        out = lab.x("v2", *me, *client).stdout.split()
    finally:
        srv.kill()
        srv.wait()
    n, seconds = int(out[0]), float(out[1])
    return n * 8 / seconds / 1e6


def main() -> None:
    if sys.argv[1:2] == ["end"]:
        _end(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=2 << 20)
    p.add_argument("--delay", type=float, default=0.020, help="one way, s")
    p.add_argument("--loss", type=float, default=0.02, help="each way")
    p.add_argument("--rate", type=float, default=20e6, help="bit/s each way, 0: none")
    args = p.parse_args()
    why = missing("netns")
    if why:
        raise SystemExit(f"bench/quic_goodput.py: {why}")
    lab = NatLab().up()
    figures: dict[str, Any] = {}
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            lossy_link(lab, "r2", args.delay, args.loss, args.rate or None) as link,
        ):
            figures["tcp"] = transfer(lab, ["tcp-server", str(args.size)], ["tcp-client"])
            for cc in ("reno", "cubic", "litedesk-bbr"):
                figures[f"quic {cc}"] = transfer(
                    lab, ["quic-server", cc, str(args.size), tmp], ["quic-client", cc]
                )
    finally:
        lab.down()
    print(
        f"link r2<->pub: {args.delay * 1000:.0f} ms each way, {args.loss:.1%} loss, "
        f"{(args.rate or 0) / 1e6:.0f} Mbit/s; {args.size} bytes pub -> v2"
    )
    for name, mbps in figures.items():
        print(f"{name:11} {mbps:6.2f} Mbit/s  {mbps / figures['tcp']:.2f} x TCP")
    print(f"link counters: {link.counters}")


if __name__ == "__main__":
    main()
