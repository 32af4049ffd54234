"""Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzip'd).

An IDX file is a 4-byte magic number ``0 0 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the data in C order. MNIST uses dtype code 0x08 (uint8).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetFileError(ValueError):
    """A dataset file is missing pieces, corrupt, truncated or not in the expected format."""


def read_bytes(path) -> bytes:
    """The file's content, decompressed when it is gzip'd (by magic number, not by name)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DatasetFileError(f"{path}: corrupt or truncated gzip file ({err})") from None
    return raw


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_idx(data: bytes, name="IDX data") -> np.ndarray:
    """Parse IDX bytes into an array (native byte order); raises DatasetFileError if malformed."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetFileError(f"{name}: not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        raise DatasetFileError(f"{name}: unsupported IDX type code 0x{code:02x} / rank {ndim}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DatasetFileError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header_len + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise DatasetFileError(
            f"{name}: IDX header declares shape {shape} ({expected} bytes) but the file has "
            f"{len(data)} bytes ({'truncated' if len(data) < expected else 'trailing data'})"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path, expected_sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzip'd or not); verify the decompressed SHA-256 when given."""
    path = Path(path)
    data = read_bytes(path)
    if expected_sha256 is not None:
        actual = sha256(data)
        if actual != expected_sha256:
            raise DatasetFileError(
                f"{path}: checksum mismatch: SHA-256 of the decompressed content is {actual}, "
                f"expected {expected_sha256}; the file is corrupt or not the official one"
            )
    return parse_idx(data, str(path))
