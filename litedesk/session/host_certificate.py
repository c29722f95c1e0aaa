"""The host's self-signed TLS certificate and its TLS server options.

The certificate carries the host's Ed25519 identity key and nothing a viewer
trusts besides that key (see L{litedesk.session.pinning}); it is separate
from the pinning because only the host builds certificates and only the
viewer pins them.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from nacl.signing import SigningKey
from OpenSSL import crypto
from twisted.internet.ssl import CertificateOptions, TLSVersion

from litedesk.session.host_key import raw_public_key

__all__ = ["HostCertificate", "host_certificate", "host_context_factory"]

# RFC 5280 4.1.2.5: 99991231235959Z means "no well-defined expiration date".
# The viewer ignores dates anyway (it pins the key), and a certificate that
# never expires cannot make a session fail because a clock is wrong.
_NO_EXPIRY = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class HostCertificate:
    """A host's self-signed certificate and the key it certifies."""

    certificate: x509.Certificate
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key (the host's identity key)."""
        return raw_public_key(self.private_key.public_key())

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def openssl_certificate(self) -> crypto.X509:
        """For APIs that still want pyOpenSSL's type (C{SSL.Context} takes
        the cryptography object directly and deprecates this one)."""
        return crypto.X509.from_cryptography(self.certificate)

    def openssl_private_key(self) -> crypto.PKey:
        """For APIs that still want pyOpenSSL's type."""
        return crypto.PKey.from_cryptography_key(self.private_key)


def host_certificate(
    signing_key: SigningKey, host_id: str, now: datetime.datetime | None = None
) -> HostCertificate:
    """Self-sign a certificate for the host's Ed25519 identity key.

    @param signing_key: the host's identity key; its 32-byte seed is the
        Ed25519 private key, so the certificate's public key is exactly
        C{signing_key.verify_key}.
    @param host_id: the host's id, used as the certificate's common name (for
        people reading it; the viewer checks only the key).
    @param now: start of validity (an hour earlier, for clock skew); defaults
        to the current time.
    """
    private_key = Ed25519PrivateKey.from_private_bytes(bytes(signing_key))
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    # A common name is at most 64 characters (RFC 5280 ub-common-name).
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (host_id or "litedesk-host")[:64])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(_NO_EXPIRY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    )
    # Ed25519 signs the message itself: the hash algorithm must be None.
    certificate = builder.sign(private_key, None)
    return HostCertificate(certificate, private_key)


def host_context_factory(signing_key: SigningKey, host_id: str) -> CertificateOptions:
    """The host's TLS server options: its self-signed certificate, TLS 1.3 only.

    No client certificate is asked for: the viewer proves itself with the
    login password, inside the encrypted session.
    """
    cert = host_certificate(signing_key, host_id)
    # CertificateOptions only hands these to Context.use_privatekey and
    # use_certificate, which take cryptography objects and deprecate
    # pyOpenSSL's PKey/X509 (Twisted's annotations predate that).
    return CertificateOptions(
        privateKey=cert.private_key,  # type: ignore[arg-type]
        certificate=cert.certificate,  # type: ignore[arg-type]
        raiseMinimumTo=TLSVersion.TLSv1_3,
    )
