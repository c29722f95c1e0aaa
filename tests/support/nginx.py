"""A real nginx in front of the server's WebSocket listeners, as docs/websocket.rst §6
recommends: TLS on a loopback port with a self-signed certificate made here, and
the paths /ws/id and /ws/relay proxied with the client's address in X-Real-IP and
X-Forwarded-For.

L{Nginx} runs Debian's C{nginx} as one foreground process (no master, no daemon)
with every file under a temporary prefix, and stops it by its pid.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .ports import free_port

__all__ = ["NGINX", "Nginx", "self_signed"]

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate     {cert};
        ssl_certificate_key {key};

        location /ws/id {{
            proxy_pass http://127.0.0.1:{ws_port};
{proxy}
        }}

        location /ws/relay {{
            proxy_pass http://127.0.0.1:{ws_relay_port};
{proxy}
            proxy_buffering off;
        }}
    }}
}}
"""

_PROXY = """            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;"""


def self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    """A key and a one-day certificate for C{localhost} / 127.0.0.1.

    @return: (certificate file, key file, certificate PEM).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path, pem


class Nginx:
    """nginx on 127.0.0.1:C{port} (TLS) proxying /ws/id and /ws/relay."""

    def __init__(self, prefix: Path, ws_port: int, ws_relay_port: int) -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed")
        prefix = prefix.resolve()
        self.prefix = prefix
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        cert, key, self.cert_pem = self_signed(prefix)
        self.port = free_port()
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(
            _CONF.format(
                prefix=prefix,
                port=self.port,
                cert=cert,
                key=key,
                ws_port=ws_port,
                ws_relay_port=ws_relay_port,
                proxy=_PROXY,
            )
        )
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(self.conf), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        err = (
            self.proc.stderr.read().decode()
            if self.proc.poll() is not None and self.proc.stderr
            else ""
        )
        self.stop()
        log = self.prefix / "error.log"
        raise RuntimeError(f"nginx did not start: {err} {log.read_text() if log.exists() else ''}")

    def error_log(self) -> str:
        log = self.prefix / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
