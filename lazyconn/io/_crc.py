"""crc32c over numpy buffers without holding the GIL."""

from __future__ import annotations

import google_crc32c
import numpy as np


def crc32c(data: np.ndarray, crc: int = 0) -> int:
    """The crc32c of the contiguous bytes ``data`` (a numpy array), continuing ``crc``.

    google-crc32c's own functions hold the GIL except for ``bytes`` of 1 MiB or more, and a
    chunk is checked over a mapping or a numpy buffer, not ``bytes``: a 4-24 MB chunk's check
    (0.4-2 ms) then stopped every other reading thread. Its C library's ``crc32c_extend``
    called through ctypes (which releases the GIL) gives the same value; google-crc32c's
    Python call is the fallback where that library is not found.
    """
    extend = _crc32c_extend()
    if extend is None or not data.flags.c_contiguous:
        if data.flags.writeable:
            data = data.view()
            data.flags.writeable = False  # google_crc32c takes read-only buffers
        return google_crc32c.extend(crc, data)
    return extend(crc, data.__array_interface__["data"][0], data.nbytes)


def _crc32c_extend():
    """``uint32_t crc32c_extend(uint32_t crc, const uint8_t *data, size_t count)`` of the
    crc32c library google-crc32c's extension is linked to, or None (its pure-Python build,
    or a library without the symbol)."""
    if not _CRC32C_EXTEND:
        import ctypes

        try:
            from google_crc32c import _crc32c

            func = ctypes.CDLL(_crc32c.__file__).crc32c_extend  # found in its dependency
        except (ImportError, OSError, AttributeError):
            func = None
        else:
            func.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
            func.restype = ctypes.c_uint32
        _CRC32C_EXTEND.append(func)
    return _CRC32C_EXTEND[0]


_CRC32C_EXTEND: list = []
