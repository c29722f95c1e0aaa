"""RustDesk's secretbox stream sealing: one key, a counter per direction.

Used by RustDesk's peer session (docs/protocol.rst §11.3, via
L{litedesk.rustdesk.secure}) and by the rendezvous server's secure TCP
(§5.10, L{litedesk.rendezvous.secure_tcp}): both seal BytesCodec frame
payloads the same way (hbb_common tcp.rs C{Encrypt}).  Pure functions and
state on bytes, no I/O.
"""

from __future__ import annotations

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

__all__ = ["KEY_LENGTH", "NONCE_LENGTH", "ZERO_NONCE", "DecryptError", "SecretChannel", "nonce"]

KEY_LENGTH = 32
# RustDesk's box and secretbox nonces are 24 bytes: the counter as a
# little-endian u64, then zeros; the key exchange itself uses all zeros.
NONCE_LENGTH = 24
ZERO_NONCE = bytes(NONCE_LENGTH)
_MAX_SEQ = 2**64 - 1


class DecryptError(Exception):
    """A frame failed authentication: wrong key, tampered, replayed or reordered."""


def nonce(seq: int) -> bytes:
    """The secretbox nonce of counter C{seq}: u64 little-endian, then 16 zeros."""
    return seq.to_bytes(8, "little") + bytes(NONCE_LENGTH - 8)


class SecretChannel:
    """Both directions of one encrypted session: one key, two counters.

    Each side counts the frames it has sealed and the frames it has opened;
    the counter is never sent, so a replayed, dropped or reordered frame is
    opened with the wrong nonce and fails its MAC like a tampered one.
    Payloads of at most one byte are not encrypted frames: RustDesk passes
    them up unopened without counting them (hbb_common tcp.rs C{Encrypt::dec});
    an empty C{Message} is the only such payload a peer sends.
    """

    __slots__ = ("_box", "recv_seq", "send_seq")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_LENGTH:
            raise ValueError("a session key is 32 bytes")
        self._box = SecretBox(key)
        self.send_seq = 0
        self.recv_seq = 0

    def seal(self, payload: bytes) -> bytes:
        """Encrypt one outgoing payload: MAC (16 bytes) || ciphertext."""
        if self.send_seq >= _MAX_SEQ:
            # 2**64 frames: unreachable, but a wrapped counter would reuse nonces.
            raise OverflowError("send counter exhausted")
        self.send_seq += 1
        return bytes(self._box.encrypt(payload, nonce(self.send_seq)).ciphertext)

    def open(self, payload: bytes) -> bytes:
        """Decrypt one incoming payload.

        @raise DecryptError: the MAC does not verify under the next counter.
        """
        if len(payload) <= 1:
            return payload
        if self.recv_seq >= _MAX_SEQ:
            raise DecryptError("receive counter exhausted")
        self.recv_seq += 1
        try:
            return bytes(self._box.decrypt(payload, nonce(self.recv_seq)))
        except CryptoError as e:
            raise DecryptError(f"decryption failed at counter {self.recv_seq}") from e
