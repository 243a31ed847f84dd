"""Reading IDX files (the MNIST format), with the header checked before the payload is trusted."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from mmhelpers.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array; a wrong header or size raises DataError."""
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, f"corrupt or truncated gzip file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(path, f"not an IDX file: magic bytes {raw[:4].hex() or '(empty)'}, expected 0000 <type> <ndim>")
    ndim = raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(path, f"IDX header says {ndim} dimensions, expected {expect_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(path, f"IDX header truncated: {len(raw)} bytes, need {header}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(path, f"IDX payload is {len(raw) - header} bytes, header shape {shape} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
