"""A file-transfer block's payload: plain or one zstd frame (docs/protocol.rst §12.3).

RustDesk reads a file 128 KiB at a time and sends each piece as a
C{FileTransferBlock}; when a zstd frame of the piece is shorter, the frame
goes instead with C{compressed=true}, except for files whose extension says
they are compressed already (hbb_common C{src/fs.rs} C{TransferJob::read},
C{is_compressed_file}).  Both LiteDesk sides use this module:

  - L{encode_block}C{(data, name) -> (payload, compressed)} for a block to send;
  - L{decode_block}C{(payload, compressed, limit) -> bytes} for a block
    received, which raises L{BlockError} for a payload that is too large,
    not zstd, or that would decompress to more than C{limit} bytes (a zstd
    bomb never allocates more than C{limit});
  - L{BLOCK_SIZE}: how much of a file one block carries (128 KiB).

Compressing costs more than sending on a fast link, so the encoder first
compresses the block's first 4 KiB (about a tenth of the block's cost);
when that saves little the block goes as it is (media, archives and
encrypted data without an extension that says so).  Level 1: measured on
128 KiB blocks, it compressed source text at about 1.4 GB/s (ratio 0.055)
against 0.9 GB/s at level 3 (0.052), and shared libraries at 250 MB/s
(0.52) against 160 MB/s (0.48); a receiver accepts any level.
"""

from __future__ import annotations

import zstandard

__all__ = [
    "BLOCK_SIZE",
    "COMPRESSED_EXTENSIONS",
    "MAX_BLOCK_PAYLOAD",
    "BlockError",
    "decode_block",
    "encode_block",
    "is_compressed_name",
]

# RustDesk's read buffer (fs.rs TransferJob::read BUF_SIZE).
BLOCK_SIZE = 128 * 1024
# What a receiver accepts in one block, compressed or not: RustDesk's blocks
# are at most BLOCK_SIZE; four times that leaves room for other senders
# while keeping what one message can make us allocate small.
MAX_BLOCK_PAYLOAD = 4 * BLOCK_SIZE
# Extensions RustDesk never compresses (fs.rs is_compressed_file).
COMPRESSED_EXTENSIONS = frozenset({"xz", "gz", "zip", "7z", "rar", "bz2", "tgz", "png", "jpg"})

ZSTD_LEVEL = 1
# The probe: a prefix this long is compressed first; unless it shrinks to
# PROBE_RATIO of its size, the block is sent as it is.
_PROBE = 4096
_PROBE_RATIO = 0.9

# One compressor and decompressor for the process: both sides use them on
# the reactor thread only (zstandard's objects are not thread-safe).
_compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
_decompressor = zstandard.ZstdDecompressor()
_UNKNOWN_SIZE = zstandard.CONTENTSIZE_UNKNOWN


class BlockError(ValueError):
    """A block received is not acceptable; C{str()} is the reason."""


def is_compressed_name(name: str) -> bool:
    """Whether a file's name says it is compressed already (RustDesk's list).

    @param name: the file's name or relative path; only the text after the
        last dot counts, as in RustDesk (C{"a.tar.gz"} -> C{"gz"}).
    """
    dot = name.rfind(".")
    return dot >= 0 and name[dot + 1 :] in COMPRESSED_EXTENSIONS


def encode_block(data: bytes, name: str) -> tuple[bytes, bool]:
    """A block's payload for C{data} read from the file C{name}.

    @param data: at most L{BLOCK_SIZE} bytes of the file (not empty: the
        empty block that ends a file goes as it is).
    @param name: the file's name, for RustDesk's extension rule.
    @return: C{(payload, compressed)}: a zstd frame of C{data} and C{True}
        when that is shorter, else C{data} itself and C{False}.
    """
    if not data or is_compressed_name(name):
        return data, False
    if len(data) > 2 * _PROBE:
        probe = _compressor.compress(data[:_PROBE])
        if len(probe) > _PROBE * _PROBE_RATIO:
            return data, False
    frame = _compressor.compress(data)
    if len(frame) < len(data):
        return frame, True
    return data, False


def decode_block(payload: bytes, compressed: bool, limit: int = MAX_BLOCK_PAYLOAD) -> bytes:
    """The file bytes a received block carries.

    @param payload: C{FileTransferBlock.data}.
    @param compressed: C{FileTransferBlock.compressed}.
    @param limit: the most bytes the block may carry once decompressed
        (callers pass what the file may still hold, at most
        L{MAX_BLOCK_PAYLOAD}); nothing larger is ever allocated.
    @raise BlockError: the payload is larger than L{MAX_BLOCK_PAYLOAD}, or
        is not one zstd frame, or decompresses to more than C{limit}.
    """
    if len(payload) > MAX_BLOCK_PAYLOAD:
        raise BlockError(f"block of {len(payload)} bytes (at most {MAX_BLOCK_PAYLOAD})")
    if not compressed:
        if len(payload) > limit:
            raise BlockError(f"block of {len(payload)} bytes, more than the {limit} expected")
        return payload
    limit = min(limit, MAX_BLOCK_PAYLOAD)
    try:
        size = zstandard.get_frame_parameters(payload).content_size
        if size != _UNKNOWN_SIZE:
            # With the size in the frame's header zstandard allocates it
            # whatever max_output_size says: check it first.
            if size > limit:
                raise BlockError(f"block decompresses to {size} bytes, more than {limit}")
            return _decompressor.decompress(payload)
        if limit == 0:
            # max_output_size=0 would mean "no limit" to zstandard.
            out = _decompressor.decompress(payload, max_output_size=1)
        else:
            out = _decompressor.decompress(payload, max_output_size=limit)
    except zstandard.ZstdError as e:
        raise BlockError(f"bad compressed block: {e}") from None
    if len(out) > limit:
        raise BlockError(f"block decompresses to more than {limit} bytes")
    return out
