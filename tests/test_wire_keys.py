"""Tests for L{litedesk.wire.keys}: hbbs-compatible key files and signed IdPk.

Vectors for docs/protocol.rst §5.1 and §9 item 17, computed from RustDesk's code.
"""

from __future__ import annotations

import base64
import io
import os
import stat
import sys
from pathlib import Path

from nacl.signing import SigningKey
from twisted.trial.unittest import SynchronousTestCase

from litedesk.wire import keys
from litedesk.wire.keys import (
    PUBLIC_FILE,
    RS_PUB_KEY,
    SECRET_FILE,
    KeyFileError,
    load_or_create,
    public_b64,
    resolve_key_option,
    secret_b64,
    sign_id_pk,
    signing_key_from_secret,
    verify_id_pk,
)

SEED = bytes(range(32))
SEED_PK_B64 = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
SEED_SECRET_B64 = (
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA=="
)

HOST_PK = base64.b64decode("6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=")
IDPK_HEX = (
    "0a093132333435363738391220ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
)
SIGNATURE_HEX = (
    "8f6f294e7d47ebf6dfc912d53960da5b628c76ae7e3bbcd93a4f5ddad64144f2"
    "981d5c736960b47af0dfebc02579e8194ee16c3f674d799fd820e159696b780e"
)
SIGNED_IDPK = bytes.fromhex(SIGNATURE_HEX + IDPK_HEX)


def seed_key() -> SigningKey:
    return SigningKey(SEED)


class KeyFormatTests(SynchronousTestCase):
    def test_seed_vector(self) -> None:
        """
        Seed 00..1f gives the §5.1 public key and C{id_ed25519} text, so key
        files are interchangeable with hbbs'.
        """
        key = seed_key()
        self.assertEqual(public_b64(key), SEED_PK_B64)
        self.assertEqual(secret_b64(key), SEED_SECRET_B64)

    def test_secret_round_trip(self) -> None:
        """
        A 64-byte libsodium secret key rebuilds the same signing key.
        """
        key = signing_key_from_secret(base64.b64decode(SEED_SECRET_B64))
        self.assertEqual(bytes(key), SEED)

    def test_secret_bad(self) -> None:
        """
        A secret key of the wrong length, or whose public half does not match
        its seed, is refused with L{KeyFileError}.
        """
        raw = base64.b64decode(SEED_SECRET_B64)
        self.assertRaises(KeyFileError, signing_key_from_secret, raw[:32])
        self.assertRaises(KeyFileError, signing_key_from_secret, raw + b"\x00")
        self.assertRaises(KeyFileError, signing_key_from_secret, raw[:63] + b"\x00")


class LoadOrCreateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir(parents=True)

    def write_secret(self, content: bytes) -> Path:
        path = self.dir / SECRET_FILE
        path.write_bytes(content)
        return path

    def test_existing_hbbs_key(self) -> None:
        """
        An operator who copies hbbs' C{id_ed25519} (no trailing newline) into
        the data directory gets that key back, and the file is not rewritten.
        """
        content = SEED_SECRET_B64.encode("ascii")
        path = self.write_secret(content)
        key, created = load_or_create(self.dir)
        self.assertFalse(created)
        self.assertEqual(bytes(key), SEED)
        self.assertEqual(public_b64(key), SEED_PK_B64)
        self.assertEqual(path.read_bytes(), content)

    def test_existing_key_trailing_newline(self) -> None:
        """
        A hand-edited key file ending in a newline (or CRLF) is accepted,
        since hbbs trims it, and is left untouched.
        """
        for suffix in (b"\n", b"\r\n", b"  \n\n"):
            with self.subTest(suffix=suffix):
                content = SEED_SECRET_B64.encode("ascii") + suffix
                path = self.write_secret(content)
                key, created = load_or_create(self.dir)
                self.assertFalse(created)
                self.assertEqual(public_b64(key), SEED_PK_B64)
                self.assertEqual(path.read_bytes(), content)

    def test_existing_key_ignores_pub_file(self) -> None:
        """
        Only C{id_ed25519} matters: a stale C{id_ed25519.pub} is neither read
        nor rewritten.
        """
        self.write_secret(SEED_SECRET_B64.encode("ascii"))
        pub = self.dir / PUBLIC_FILE
        pub.write_bytes(b"stale")
        key, created = load_or_create(self.dir)
        self.assertEqual((public_b64(key), created), (SEED_PK_B64, False))
        self.assertEqual(pub.read_bytes(), b"stale")

    def test_create(self) -> None:
        """
        With no key file, a pair is generated: C{id_ed25519} is mode 0600 and
        holds exactly base64 of the 64-byte secret (seed then public key),
        with no newline; C{id_ed25519.pub} holds the base64 public key, which
        contains no C{/}; no temporary files are left behind.
        """
        key, created = load_or_create(self.dir)
        self.assertTrue(created)
        secret_path = self.dir / SECRET_FILE
        pub_path = self.dir / PUBLIC_FILE
        self.assertEqual(stat.S_IMODE(secret_path.stat().st_mode), 0o600)
        self.assertFalse(pub_path.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH))
        content = secret_path.read_bytes()
        self.assertFalse(content.endswith(b"\n"))
        raw = base64.b64decode(content, validate=True)
        self.assertEqual(len(raw), 64)
        self.assertEqual(raw, bytes(key) + bytes(key.verify_key))
        self.assertEqual(base64.b64encode(raw), content)
        self.assertEqual(pub_path.read_text(), public_b64(key))
        self.assertNotIn("/", public_b64(key))
        self.assertEqual(sorted(os.listdir(self.dir)), sorted([SECRET_FILE, PUBLIC_FILE]))

    def test_create_then_load(self) -> None:
        """
        A created key is loaded again, unchanged, on the next start.
        """
        key, _ = load_or_create(self.dir)
        again, created = load_or_create(self.dir)
        self.assertFalse(created)
        self.assertEqual(bytes(again), bytes(key))

    def test_create_missing_directory(self) -> None:
        """
        A data directory that does not exist yet is created.
        """
        data_dir = self.dir / "a" / "b"
        _, created = load_or_create(data_dir)
        self.assertTrue(created)
        self.assertTrue((data_dir / SECRET_FILE).exists())

    def test_create_avoids_slash(self) -> None:
        """
        Like hbbs, generation retries until the base64 public key has no
        C{/} (it ends up in URLs and config strings): a first candidate
        whose key contains one is discarded.
        """
        candidates = [seed_key(), SigningKey(bytes([1]) * 32)]
        self.assertIn("/", public_b64(candidates[0]))
        self.assertNotIn("/", public_b64(candidates[1]))
        self.assertNotIn(":", public_b64(candidates[1]))

        class FakeSigningKey(SigningKey):
            @classmethod
            def generate(cls) -> SigningKey:
                return candidates.pop(0)

        self.patch(keys, "SigningKey", FakeSigningKey)
        key, created = load_or_create(self.dir)
        self.assertTrue(created)
        self.assertEqual(bytes(key), bytes([1]) * 32)
        self.assertEqual(candidates, [])

    def test_corrupt(self) -> None:
        """
        A C{id_ed25519} that is not base64, not 64 bytes, or whose halves do
        not belong together is fatal (L{KeyFileError}), and is not replaced
        by a new key.
        """
        raw = base64.b64decode(SEED_SECRET_B64)
        for content in [
            b"not base64 at all!",
            b"",
            base64.b64encode(raw[:32]),
            base64.b64encode(raw[:63] + b"\x01"),
            b"\xff\xfe\x00",
        ]:
            with self.subTest(content=content):
                path = self.write_secret(content)
                self.assertRaises(KeyFileError, load_or_create, self.dir)
                self.assertEqual(path.read_bytes(), content)
                self.assertFalse((self.dir / PUBLIC_FILE).exists())


class ResolveKeyOptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir(parents=True)

    def test_dash(self) -> None:
        """
        C{-k -} (the default) and C{-k _} sign with C{id_ed25519} and require
        clients to send its base64 public key.
        """
        (self.dir / SECRET_FILE).write_text(SEED_SECRET_B64)
        for option in ("-", "_"):
            with self.subTest(option=option):
                server_key = resolve_key_option(option, self.dir)
                self.assertEqual(server_key.licence, SEED_PK_B64)
                self.assertIsNotNone(server_key.signing_key)
                assert server_key.signing_key is not None
                self.assertEqual(bytes(server_key.signing_key), SEED)
                self.assertEqual(server_key.public_key, SEED_PK_B64)
                self.assertFalse(server_key.created)

    def test_dash_creates(self) -> None:
        """
        C{-k -} on a fresh data directory creates the pair and says so.
        """
        server_key = resolve_key_option("-", self.dir)
        self.assertTrue(server_key.created)
        self.assertIsNotNone(server_key.signing_key)
        self.assertEqual(server_key.licence, server_key.public_key)
        self.assertTrue((self.dir / SECRET_FILE).exists())

    def test_empty(self) -> None:
        """
        C{-k ""} still signs with C{id_ed25519} but requires no licence key.
        """
        (self.dir / SECRET_FILE).write_text(SEED_SECRET_B64)
        server_key = resolve_key_option("", self.dir)
        self.assertEqual(server_key.licence, "")
        self.assertIsNotNone(server_key.signing_key)
        self.assertEqual(server_key.public_key, SEED_PK_B64)

    def test_secret_key(self) -> None:
        """
        A base64 64-byte secret key given on the command line is the signing
        key, clients must send its public key, and no file is touched.
        """
        server_key = resolve_key_option(SEED_SECRET_B64, self.dir)
        self.assertEqual(server_key.licence, SEED_PK_B64)
        assert server_key.signing_key is not None
        self.assertEqual(bytes(server_key.signing_key), SEED)
        self.assertEqual(os.listdir(self.dir), [])

    def test_literal(self) -> None:
        """
        Any other string is a literal licence key with no signing key (so
        every C{pk} field is sent empty); this includes a base64 public key
        such as RustDesk's public-server key, which is 32 bytes, not 64.
        """
        for option in ("my-secret-licence", RS_PUB_KEY, SEED_PK_B64):
            with self.subTest(option=option):
                server_key = resolve_key_option(option, self.dir)
                self.assertEqual(server_key.licence, option)
                self.assertIsNone(server_key.signing_key)
                self.assertEqual(server_key.public_key, "")
        self.assertEqual(os.listdir(self.dir), [])


class SignedIdPkTests(SynchronousTestCase):
    def test_vector(self) -> None:
        """
        The §9 item 17 vector: server seed 00..1f signing IdPk{id
        "123456789", the host's pk} gives exactly the 109 bytes clients
        verify (64-byte signature then the serialized IdPk).
        """
        signed = sign_id_pk(seed_key(), "123456789", HOST_PK)
        self.assertEqual(len(signed), 109)
        self.assertEqual(signed.hex(), SIGNED_IDPK.hex())

    def test_verify(self) -> None:
        """
        The vector verifies with the server's public key and yields the id
        and host pk.
        """
        server_pk = base64.b64decode(SEED_PK_B64)
        self.assertEqual(verify_id_pk(server_pk, SIGNED_IDPK), ("123456789", HOST_PK))

    def test_flipped_byte(self) -> None:
        """
        Changing any single byte, in the signature or in the IdPk, makes
        verification fail.
        """
        server_pk = base64.b64decode(SEED_PK_B64)
        for index in range(len(SIGNED_IDPK)):
            tampered = bytearray(SIGNED_IDPK)
            tampered[index] ^= 0x01
            with self.subTest(index=index):
                self.assertIsNone(verify_id_pk(server_pk, bytes(tampered)))

    def test_wrong_server_key(self) -> None:
        """
        A signature by one server is rejected with another server's key.
        """
        other = bytes(SigningKey(bytes([2]) * 32).verify_key)
        self.assertIsNone(verify_id_pk(other, SIGNED_IDPK))

    def test_malformed(self) -> None:
        """
        Truncated input, an empty string, or a server key of the wrong
        length give None rather than an exception.
        """
        server_pk = base64.b64decode(SEED_PK_B64)
        self.assertIsNone(verify_id_pk(server_pk, SIGNED_IDPK[:63]))
        self.assertIsNone(verify_id_pk(server_pk, b""))
        self.assertIsNone(verify_id_pk(server_pk[:31], SIGNED_IDPK))

    def test_signed_garbage_payload(self) -> None:
        """
        A genuine signature over bytes that are not an IdPk gives None.
        """
        key = seed_key()
        signed = bytes(key.sign(b"\xff\xff\xff"))
        self.assertIsNone(verify_id_pk(bytes(key.verify_key), signed))


class MainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir(parents=True)
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def test_prints_existing_public_key(self) -> None:
        """
        C{litedesk-keygen DIR} on an existing hbbs key prints its public key
        (what clients put in their Key setting) and exits 0.
        """
        (self.dir / SECRET_FILE).write_text(SEED_SECRET_B64)
        self.assertEqual(keys.main([str(self.dir)]), 0)
        output = self.stdout.getvalue()
        self.assertIn(SEED_PK_B64, output)
        self.assertIn("existing", output)

    def test_creates(self) -> None:
        """
        On an empty directory it creates the pair and prints the new key.
        """
        self.assertEqual(keys.main([str(self.dir)]), 0)
        key, created = load_or_create(self.dir)
        self.assertFalse(created)
        self.assertIn(public_b64(key), self.stdout.getvalue())
        self.assertIn("created", self.stdout.getvalue())

    def test_corrupt(self) -> None:
        """
        A corrupt key file is reported on stderr with exit status 1.
        """
        (self.dir / SECRET_FILE).write_text("garbage")
        self.assertEqual(keys.main([str(self.dir)]), 1)
        self.assertIn(SECRET_FILE, self.stderr.getvalue())
        self.assertEqual(self.stdout.getvalue(), "")
